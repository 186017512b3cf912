"""The one run-spec builder: entry point, named parameters and compute; the idempotency token."""

from __future__ import annotations

import dataclasses

import pytest

from order_tracking_load.run_spec import build_run_spec, command_line, idempotency_token
from order_tracking_load.settings import load_settings

WHEEL = "/Volumes/main/order_tracking/artifacts/order_tracking_spark_jobs-0.1.0-py3-none-any.whl"


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.delenv("ORDER_TRACKING_SPARK_BACKEND", raising=False)
    return load_settings()


def test_serverless_spec_runs_the_wheel_entry_point_with_named_parameters(settings):
    spec = build_run_spec("stage_orders", {"batch-id": "b1", "manifest": "gs://x/m.json"}, settings)
    assert spec == {
        "run_name": "order_tracking.stage_orders",
        "tasks": [
            {
                "task_key": "stage_orders",
                "python_wheel_task": {
                    "package_name": "order_tracking_spark_jobs",
                    "entry_point": "stage-orders",
                    "named_parameters": {"batch-id": "b1", "manifest": "gs://x/m.json"},
                },
                "environment_key": "order_tracking_jobs",
            }
        ],
        "environments": [{"environment_key": "order_tracking_jobs", "spec": {"client": "2", "dependencies": [WHEEL]}}],
    }
    assert command_line(spec) == ("stage-orders", ["--batch-id=b1", "--manifest=gs://x/m.json"])


def test_cluster_computes_attach_the_wheel_as_a_library(settings):
    existing = build_run_spec(
        "merge_orders", {}, dataclasses.replace(settings, compute="existing_cluster", cluster_id="c-1")
    )
    new = build_run_spec(
        "merge_orders", {}, dataclasses.replace(settings, compute="new_cluster", new_cluster={"num_workers": 1})
    )
    assert existing["tasks"][0]["existing_cluster_id"] == "c-1"
    assert new["tasks"][0]["new_cluster"] == {"num_workers": 1}
    assert existing["tasks"][0]["libraries"] == new["tasks"][0]["libraries"] == [{"whl": WHEEL}]
    assert "environments" not in existing
    assert "environments" not in new


def test_unknown_job_is_refused(settings):
    with pytest.raises(ValueError, match="unknown job 'cleanup'"):
        build_run_spec("cleanup", {}, settings)


def test_idempotency_token_is_stable_per_attempt_and_differs_by_deployment_and_attempt():
    run = "manual__2026-11-26T10:00:00+00:00"
    token = idempotency_token("prod", "dag", run, "stage_orders")
    assert len(token) == 64
    assert token == idempotency_token("prod", "dag", run, "stage_orders", 0, 0)
    others = {
        idempotency_token("staging", "dag", run, "stage_orders"),
        idempotency_token("prod", "dag", run, "merge_orders"),
        idempotency_token("prod", "dag", run, "stage_orders", clear_number=1),
        idempotency_token("prod", "dag", run, "stage_orders", attempt=1),
    }
    assert len(others) == 4
    assert token not in others


def test_bad_settings_fail_early(monkeypatch):
    monkeypatch.setenv("ORDER_TRACKING_SPARK_BACKEND", "emr")
    with pytest.raises(ValueError, match="ORDER_TRACKING_SPARK_BACKEND must be one of"):
        load_settings()
    monkeypatch.setenv("ORDER_TRACKING_SPARK_BACKEND", "databricks")
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_COMPUTE", "existing_cluster")
    with pytest.raises(ValueError, match="CLUSTER_ID is required"):
        load_settings()


def test_the_load_summary_names_each_figure_the_job_produced():
    from order_tracking_load.spark_backends import summary_line
    from spark_jobs.contracts import FileResult, JobMetrics

    loaded = FileResult("gs://b/input/a.csv", 10, "1", 3, 0, "loaded", None, "3:abc", None)
    metrics = JobMetrics(
        result="succeeded", batch_id="run_1", files=(loaded,), rows_inserted=2, rows_updated=1,
        rows_skipped_stale=0, target_version=7,
    )  # fmt: skip
    assert summary_line("merge_orders", metrics, 12.34) == (
        "merge_orders loaded batch run_1 (1 file) in 12.3 s: inserted 2, updated 1, stale 0, target version 7"
    )
    assert summary_line("stage_orders", JobMetrics(result="succeeded", batch_id="b", rows_read=5)) == (
        "stage_orders loaded batch b (0 files): read 5"
    )
