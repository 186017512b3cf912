"""Both CLIs end to end, as Databricks or the local backend run them: a fresh process, path tables, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SEED_FILES


def run_cli(module: str, *args: str) -> tuple[int, dict, str]:
    completed = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    last_line = completed.stdout.strip().splitlines()[-1]
    return completed.returncode, json.loads(last_line), completed.stderr


# What the Databricks provider adds to a task's named parameters with OpenLineage's parent-job injection on.
OPENLINEAGE_CONTEXT = json.dumps(
    {"parent": {"run": {"runId": "01a2"}, "job": {"namespace": "airflow", "name": "dag.merge_orders"}}}
)


def test_stage_then_merge_from_the_command_line(tables, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"batch_id": "cli", "files": [{"uri": str(p), "size": p.stat().st_size} for p in SEED_FILES]})
    )

    code, staged, stage_log = run_cli(
        "spark_jobs.stage_orders",
        *("--manifest", str(manifest), "--batch-id", "cli"),
        *("--staging-table", tables.staging, "--rejects-table", tables.rejects, "--audit-table", tables.audit),
    )
    assert code == 0, stage_log
    assert (
        staged["result"],
        staged["status"],
        staged["rows_read"],
        staged["rows_rejected"],
        staged["rows_collapsed"],
        staged["rows_staged"],
    ) == (
        "succeeded",
        "staged",
        94,
        0,
        71,
        23,
    )
    assert [f["size"] for f in staged["files"]] == [p.stat().st_size for p in SEED_FILES]

    code, merged, merge_log = run_cli(
        "spark_jobs.merge_orders",
        *("--batch-id", "cli", "--staging-table", tables.staging, "--target-table", tables.target),
        *("--history-table", tables.history, "--audit-table", tables.audit),
        f"--OPENLINEAGE_CONTEXT={OPENLINEAGE_CONTEXT}",
    )
    assert code == 0, merge_log
    assert "OPENLINEAGE_CONTEXT from the submitting task: airflow/dag.merge_orders run 01a2" in merge_log
    assert (
        merged["rows_inserted"],
        merged["rows_updated"],
        merged["rows_skipped_stale"],
        merged["target_version"],
    ) == (
        23,
        0,
        0,
        1,
    )
    assert "merged batch cli" in merge_log

    # What Airflow runs when a run's output lost its metrics line: the same figures, from the audit record.
    code, reported, report_log = run_cli(
        "spark_jobs.batch_report", "--job=merge_orders", "--batch-id=cli", f"--audit-table={tables.audit}"
    )
    assert code == 0, report_log
    assert {key: value for key, value in reported.items() if key != "top_reject_reasons"} == {
        key: value for key, value in merged.items() if key != "top_reject_reasons"
    }


def test_a_failing_job_exits_1_with_a_readable_message(tables):
    code, result, log = run_cli(
        "spark_jobs.merge_orders",
        *("--batch-id", "bad'id", "--staging-table", tables.staging, "--target-table", tables.target),
        *("--history-table", tables.history, "--audit-table", tables.audit),
    )
    assert code == 1
    assert result == {
        "result": "failed",
        "error": 'batch id "bad\'id" must be 1-250 characters of letters, digits, space and _.:+@=~-',
    }
    assert "Traceback" not in log


def test_the_report_refuses_a_batch_whose_job_did_not_succeed(spark, tables, tmp_path):
    from spark_jobs.batch_report import batch_report
    from spark_jobs.cli import OrderLoadError
    from spark_jobs.load import upsert_audit

    with pytest.raises(OrderLoadError, match="has no audit record"):
        batch_report(spark, "stage_orders", "b1", tables.audit)
    upsert_audit(spark, {"batch_id": "b1", "status": "stage_failed", "error": "too many rejects"}, tables.audit)
    with pytest.raises(OrderLoadError, match="says 'stage_failed', so stage_orders did not succeed: too many"):
        batch_report(spark, "stage_orders", "b1", tables.audit)
    upsert_audit(spark, {"batch_id": "b1", "status": "staged", "rows_read": 5, "rows_staged": 4}, tables.audit)
    assert batch_report(spark, "stage_orders", "b1", tables.audit)["rows_read"] == 5
    with pytest.raises(OrderLoadError, match="says 'staged', so merge_orders did not succeed"):
        batch_report(spark, "merge_orders", "b1", tables.audit)
