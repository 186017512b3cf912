"""The one run-spec builder: entry point, named parameters and compute; the idempotency token."""

from __future__ import annotations

import dataclasses

import pytest

from order_tracking_load.run_spec import build_run_spec, command_line, idempotency_token
from order_tracking_load.settings import load_settings

WHEEL = "/Volumes/main/order_tracking/artifacts/order_tracking_spark_jobs-0.1.0-py3-none-any.whl"
NEW_CLUSTER = {"spark_version": "15.4.x-scala2.12", "num_workers": 1, "data_security_mode": "SINGLE_USER"}


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.delenv("ORDER_TRACKING_SPARK_BACKEND", raising=False)
    return load_settings()


def test_serverless_spec_runs_the_wheel_entry_point_with_named_parameters(settings):
    spec = build_run_spec("stage_orders", {"batch-id": "b1", "manifest": "gs://x/m.json"}, settings)
    assert spec == {
        "run_name": "order_tracking.stage_orders",
        "timeout_seconds": 7200,
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
        "environments": [
            {"environment_key": "order_tracking_jobs", "spec": {"environment_version": "2", "dependencies": [WHEEL]}}
        ],
    }
    assert command_line(spec) == ("stage-orders", ["--batch-id=b1", "--manifest=gs://x/m.json"])


def test_cluster_computes_attach_the_wheel_as_a_library(settings):
    existing = build_run_spec(
        "merge_orders", {}, dataclasses.replace(settings, compute="existing_cluster", cluster_id="c-1")
    )
    new = build_run_spec(
        "merge_orders", {}, dataclasses.replace(settings, compute="new_cluster", new_cluster=NEW_CLUSTER)
    )
    assert existing["tasks"][0]["existing_cluster_id"] == "c-1"
    assert new["tasks"][0]["new_cluster"] == NEW_CLUSTER
    assert existing["tasks"][0]["libraries"] == new["tasks"][0]["libraries"] == [{"whl": WHEEL}]
    assert "environments" not in existing
    assert "environments" not in new


def test_the_local_backend_runs_the_same_task_with_no_databricks_compute(settings):
    """Its rendered template showed a serverless environment and a wheel: what Databricks would run, not it."""
    parameters = {"batch-id": "b1", "manifest": "gs://x/m.json"}
    databricks = build_run_spec("stage_orders", parameters, settings)

    local = build_run_spec("stage_orders", parameters, dataclasses.replace(settings, backend="local"))

    assert local == {
        "run_name": "order_tracking.stage_orders",
        "tasks": [{key: value for key, value in databricks["tasks"][0].items() if key != "environment_key"}],
        "timeout_seconds": databricks["timeout_seconds"],
    }
    assert command_line(local) == command_line(databricks)


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


@pytest.mark.parametrize("compute", ["serverless", "existing_cluster", "new_cluster"])
def test_every_spec_is_what_the_jobs_api_takes(settings, compute):
    # The Databricks SDK's own types for runs/submit: no unknown, deprecated or mistyped field, none missing.
    from databricks.sdk.service.jobs import JobsAPI

    from tests.dags.databricks_api import refusals

    changed = dataclasses.replace(settings, compute=compute, cluster_id="c-1", new_cluster=NEW_CLUSTER)
    for job in ("stage_orders", "merge_orders", "batch_report"):
        assert refusals(JobsAPI.submit, build_run_spec(job, {"batch-id": "b1"}, changed)) == []
    # The check refuses what Databricks deprecated or never defined.
    old = {
        "tasks": [{"task_key": "t", "environment_key": "e"}],
        "environments": [{"environment_key": "e", "spec": {"client": "2"}}],
    }
    assert refusals(JobsAPI.submit, old) == [
        "submit.environments[0].spec.client: Environment documents it as deprecated or replaced"
    ]


def test_the_workspace_may_be_given_as_the_connections_url(monkeypatch):
    from order_tracking_load.tasks import target_table_asset

    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_WORKSPACE", "https://1234567890.1.gcp.databricks.com/")
    settings = load_settings()
    assert settings.databricks_workspace == "1234567890.1.gcp.databricks.com"
    assert target_table_asset(settings).uri == "databricks://1234567890.1.gcp.databricks.com/main/order_tracking/orders"
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_WORKSPACE", "https://")
    with pytest.raises(ValueError, match=r"must be a host or https://host"):
        load_settings()


def test_serverless_refuses_a_wheel_it_cannot_install(monkeypatch):
    monkeypatch.delenv("ORDER_TRACKING_WHEEL_URI")
    with pytest.raises(ValueError, match="ORDER_TRACKING_WHEEL_URI is required on the databricks backend: run make"):
        load_settings()  # it named a file make deploy never writes
    monkeypatch.setenv("ORDER_TRACKING_WHEEL_URI", "gs://artifacts/order_tracking_spark_jobs-0.1.0-py3-none-any.whl")
    with pytest.raises(ValueError, match="must be a /Volumes/ or /Workspace/ path"):
        load_settings()
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_COMPUTE", "existing_cluster")
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_CLUSTER_ID", "c-1")
    assert load_settings().wheel_uri.startswith("gs://")  # a cluster library may come from the bucket
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_COMPUTE", "serverless")
    monkeypatch.setenv("ORDER_TRACKING_SERVERLESS_ENVIRONMENT_VERSION", "1")
    monkeypatch.setenv("ORDER_TRACKING_WHEEL_URI", WHEEL)
    with pytest.raises(ValueError, match=r"environment 1 runs Python 3\.10"):
        load_settings()


@pytest.mark.parametrize(
    ("cluster", "refused"),
    [
        ({"spark_version": "15.4.x-scala2.12", "num_workers": 1}, "data_security_mode must be one of"),
        ({**NEW_CLUSTER, "data_security_mode": "NONE"}, "data_security_mode must be one of"),
        ({**NEW_CLUSTER, "data_security_mode": "LEGACY_SINGLE_USER"}, "data_security_mode must be one of"),
        ({**NEW_CLUSTER, "spark_version": "14.3.x-scala2.12"}, "15.4 or later"),
        ({**NEW_CLUSTER, "spark_version": "latest"}, "15.4 or later"),
        (
            {**NEW_CLUSTER, "data_security_mode": "DATA_SECURITY_MODE_DEDICATED"},
            'data_security_mode DATA_SECURITY_MODE_DEDICATED needs "kind": "CLASSIC_PREVIEW" beside it .*: add it, or '
            "name the mode SINGLE_USER",
        ),
        ({**NEW_CLUSTER, "data_security_mode": "DATA_SECURITY_MODE_AUTO"}, r'needs "kind": "CLASSIC_PREVIEW"'),
    ],
)
def test_a_new_cluster_must_reach_unity_catalog_on_a_supported_runtime(monkeypatch, cluster, refused):
    import json

    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_COMPUTE", "new_cluster")
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_NEW_CLUSTER", json.dumps(cluster))
    with pytest.raises(ValueError, match=refused):
        load_settings()


def test_the_docs_new_cluster_example_is_one_the_settings_accept_and_the_api_takes(monkeypatch):
    """docs/OPERATIONS.md's example set DATA_SECURITY_MODE_DEDICATED without the kind the API needs for it."""
    import json
    import re

    from databricks.sdk.service.compute import ClusterSpec

    from tests.conftest import REPO
    from tests.dags.databricks_api import refusals_of

    operations = (REPO / "docs" / "OPERATIONS.md").read_text()
    (example,) = re.findall(r"```json\n(.*?)```", operations, flags=re.DOTALL)
    cluster = json.loads(example)
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_COMPUTE", "new_cluster")
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_NEW_CLUSTER", json.dumps(cluster))

    assert load_settings().new_cluster == cluster
    assert refusals_of(ClusterSpec, cluster) == []
    assert cluster["kind"] == "CLASSIC_PREVIEW"


def test_the_unity_catalog_access_modes_are_the_sdks_own():
    from databricks.sdk.service.compute import DataSecurityMode

    from order_tracking_load.settings import UNITY_CATALOG_ACCESS_MODES

    legacy = {mode.value for mode in DataSecurityMode if mode.value.startswith("LEGACY_") or mode.value == "NONE"}
    assert set(UNITY_CATALOG_ACCESS_MODES) == {mode.value for mode in DataSecurityMode} - legacy


def test_a_repaired_run_reports_its_latest_attempt_and_only_a_missing_run_is_gone():
    from airflow.providers.common.compat.sdk import AirflowException
    from airflow.providers.databricks.exceptions import DatabricksApiError

    from order_tracking_load.spark_backends import run_is_gone, task_run

    run = {
        "run_id": 7,
        "tasks": [
            {"run_id": 70, "task_key": "stage_orders", "attempt_number": 0},
            {"run_id": 72, "task_key": "stage_orders", "attempt_number": 2},
            {"run_id": 71, "task_key": "stage_orders", "attempt_number": 1},
        ],
    }
    assert task_run(run, "stage_orders")["run_id"] == 72
    assert task_run({"run_id": 8}, "stage_orders") == {"run_id": 8}
    assert run_is_gone(DatabricksApiError("Run 7 not found", http_status_code=404))
    assert run_is_gone(DatabricksApiError('{"message": "Run 7 does not exist."}', http_status_code=400))
    assert not run_is_gone(DatabricksApiError("bad request", http_status_code=400))
    assert not run_is_gone(DatabricksApiError("unavailable", http_status_code=503))
    assert not run_is_gone(AirflowException("API requests to Databricks failed 3 times"))


# A local task's JVM log as Spark 4 writes it: start-up lines, warnings, then a failed task with its cause.
JVM_LOG = """\
WARNING: Using incubator modules: jdk.incubator.vector
Using Spark's default log4j profile: org/apache/spark/log4j2-defaults.properties
26/12/05 02:57:14 WARN Utils: Your hostname, vm, resolves to a loopback address: 127.0.0.1
26/12/05 02:57:14 WARN NativeCodeLoader: Unable to load native-hadoop library for your platform
Setting default log level to "WARN".
26/12/05 02:57:40 ERROR Executor: Exception in task 0.0 in stage 3.0 (TID 3)
org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] Error while reading file gs://b/input/a.csv.
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.cannotReadFilesError(QueryExecutionErrors.scala:856)
\tat org.apache.spark.sql.execution.datasources.FileScanRDD$$anon$1.nextIterator(FileScanRDD.scala:270)
\tat org.apache.spark.sql.execution.datasources.FileScanRDD$$anon$1.hasNext(FileScanRDD.scala:131)
\tat org.apache.spark.scheduler.Task.run(Task.scala:147)
Caused by: java.io.IOException: Error reading gs://b/input/a.csv
  at position 1048576
\tat com.google.cloud.hadoop.gcsio.GoogleCloudStorageReadChannel.read(GoogleCloudStorageReadChannel.java:311)
\t... 21 more
26/12/05 02:57:40 WARN TaskSetManager: Lost task 0.0 in stage 3.0 (TID 3): a repeat of the above
26/12/05 02:57:41 ERROR TaskSetManager: Task 0 in stage 3.0 failed 1 times; aborting job
"""


def test_a_failed_local_task_logs_the_jvms_errors_and_their_causes_not_its_start_up(tmp_path):
    from order_tracking_load.spark_backends import jvm_errors

    log = tmp_path / "attempt=1.spark.log"
    log.write_text(JVM_LOG)

    assert jvm_errors(log).splitlines() == [
        "26/12/05 02:57:40 ERROR Executor: Exception in task 0.0 in stage 3.0 (TID 3)",
        "org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] Error while reading file gs://b/input/a.csv.",
        "\tat org.apache.spark.sql.errors.QueryExecutionErrors$.cannotReadFilesError(QueryExecutionErrors.scala:856)",
        "\tat org.apache.spark.sql.execution.datasources.FileScanRDD$$anon$1.nextIterator(FileScanRDD.scala:270)",
        "\tat org.apache.spark.sql.execution.datasources.FileScanRDD$$anon$1.hasNext(FileScanRDD.scala:131)",
        "Caused by: java.io.IOException: Error reading gs://b/input/a.csv",
        "  at position 1048576",
        "\tat com.google.cloud.hadoop.gcsio.GoogleCloudStorageReadChannel.read(GoogleCloudStorageReadChannel.java:311)",
        "26/12/05 02:57:41 ERROR TaskSetManager: Task 0 in stage 3.0 failed 1 times; aborting job",
    ]
    assert jvm_errors(tmp_path / "absent.spark.log") == ""


def test_a_job_failure_is_retried_unless_the_job_says_a_retry_cannot_change_it():
    from airflow.providers.common.compat.sdk import AirflowFailException

    from order_tracking_load.spark_backends import job_failure
    from spark_jobs.contracts import JobMetrics

    refused = job_failure("stage_orders", JobMetrics(result="failed", error="over", retryable=False), "over")
    unknown = job_failure("stage_orders", JobMetrics(result="failed", error="e"), "e")
    crashed = job_failure("stage_orders", None, "the job printed no result line")

    assert isinstance(refused, AirflowFailException)
    assert str(refused) == "stage_orders failed, and a retry would fail the same way (not retried): over"
    assert [type(error).__name__ for error in (unknown, crashed)] == ["AirflowException", "AirflowException"]


def test_the_stand_in_refuses_what_the_jobs_api_refuses_across_fields():
    """It took a new cluster's current access-mode name without kind, and serverless tasks with libraries."""
    from tests.dags.databricks_api import submit_cross_field_refusals

    cluster = {"spark_version": "15.4.x-scala2.12", "data_security_mode": "DATA_SECURITY_MODE_STANDARD"}
    body = {
        "tasks": [
            {"task_key": "a", "new_cluster": cluster},
            {"task_key": "b", "new_cluster": {**cluster, "kind": "CLASSIC_PREVIEW"}},
            {"task_key": "c", "environment_key": "e", "libraries": [{"whl": "/Volumes/x.whl"}]},
            {"task_key": "d", "existing_cluster_id": "c-1", "libraries": [{"whl": "/Volumes/x.whl"}]},
        ]
    }

    assert submit_cross_field_refusals(body) == [
        "submit.tasks[0].new_cluster: data_security_mode DATA_SECURITY_MODE_STANDARD needs kind",
        "submit.tasks[2].libraries: serverless compute takes libraries from its environment only",
    ]


def test_the_stand_in_runs_only_the_package_and_entry_point_the_wheel_has():
    """It ignored package_name: a spec naming another package ran all the same."""
    from tests.dags.databricks_stand_in import _check_package

    _check_package({"package_name": "order_tracking_spark_jobs", "entry_point": "stage-orders"})
    with pytest.raises(RuntimeError, match="package 'order_tracking_jobs' is not installed on the compute"):
        _check_package({"package_name": "order_tracking_jobs", "entry_point": "stage-orders"})
    with pytest.raises(RuntimeError, match="has no entry point 'stage'"):
        _check_package({"package_name": "order_tracking_spark_jobs", "entry_point": "stage"})
