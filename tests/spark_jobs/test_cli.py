"""The command lines' contract: JSON out, exit codes, the report's refusals.

Both jobs and the report run end to end from their command lines, at once, in
``test_concurrency.test_two_stage_and_two_merge_jobs_of_different_batches_run_at_once``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spark_jobs.cli import run_job
from spark_jobs.contracts import Refusal
from tests.conftest import REPO


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


@pytest.mark.spark  # the job's process starts its own JVM
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
        "retryable": False,
        "version": 1,
    }
    assert "Traceback" not in log


@pytest.mark.parametrize("fraction", [10.0, -0.1, float("nan")])
def test_a_reject_limit_outside_0_to_1_is_refused_before_anything_is_read(spark, tables, fraction):
    from spark_jobs.stage_orders import stage_orders

    with pytest.raises(Refusal, match=r"max_reject_fraction is a fraction from 0 to 1 \(0.1 = 10% of the"):
        stage_orders(
            spark, [{"uri": "gs://b/input/absent.csv"}], "b1", tables.staging, tables.rejects, tables.audit, fraction
        )


def test_only_the_jobs_own_refusals_are_final_and_carry_the_result_line_in_the_exit(spark, capsys):
    """A ValueError was taken for a bad argument: a bug became "not retryable", without its traceback. Only
    a ``Refusal`` (or an ``OrderLoadError``) is; its exit's message is the result line, which Databricks
    reports as the run's error when the run's logs come back empty."""

    def bug(_):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match=r"^a bug$"):
        run_job("t", bug)
    assert capsys.readouterr().out == ""  # no result line: the caller retries, with the traceback in the log

    def refused(_):
        raise Refusal("bad id")

    with pytest.raises(SystemExit) as exit_:
        run_job("t", refused)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == {"result": "failed", "error": "bad id", "retryable": False, "version": 1}
    assert json.loads(str(exit_.value)) == line


def test_the_report_refuses_a_batch_whose_job_did_not_succeed(spark, tables, tmp_path):
    from spark_jobs.batch_report import batch_report
    from spark_jobs.cli import OrderLoadError
    from spark_jobs.contracts import BatchStatus, JobMetrics, Result
    from spark_jobs.load import AuditRecord, upsert_audit

    with pytest.raises(OrderLoadError, match="has no audit record"):
        batch_report(spark, "stage_orders", "b1", tables.audit)
    failed = JobMetrics(Result.FAILED, "b1", error="too many rejects", status=BatchStatus.STAGE_FAILED)
    upsert_audit(spark, AuditRecord(failed), tables.audit)
    with pytest.raises(OrderLoadError, match="says 'stage_failed', so stage_orders did not succeed: too many"):
        batch_report(spark, "stage_orders", "b1", tables.audit)
    staged = JobMetrics(Result.SUCCEEDED, "b1", status=BatchStatus.STAGED, rows_read=5, rows_staged=4)
    upsert_audit(spark, AuditRecord(staged), tables.audit)
    assert batch_report(spark, "stage_orders", "b1", tables.audit)["rows_read"] == 5
    with pytest.raises(OrderLoadError, match="says 'staged', so merge_orders did not succeed") as unfinished:
        batch_report(spark, "merge_orders", "b1", tables.audit)
    assert unfinished.value.retryable is True  # a merge that did not finish is retried; a stage's refusal is not


def test_after_a_failed_run_the_report_takes_only_a_record_that_run_wrote(spark, tables):
    """A run that left no result line: the record tells a refusal (final) from a run that wrote none (retried)."""
    from datetime import UTC, datetime, timedelta

    from spark_jobs.batch_report import batch_report
    from spark_jobs.cli import OrderLoadError
    from spark_jobs.contracts import BatchStatus, JobMetrics, Result
    from spark_jobs.load import AuditRecord, upsert_audit

    started = datetime(2026, 12, 7, 10, tzinfo=UTC)
    failed = JobMetrics(Result.FAILED, "b2", error="too many rejects", status=BatchStatus.STAGE_FAILED)
    upsert_audit(spark, AuditRecord(failed, stage_started_at=started), tables.audit)

    with pytest.raises(OrderLoadError, match="did not succeed: too many rejects") as refused:
        batch_report(spark, "stage_orders", "b2", tables.audit, since=started - timedelta(seconds=30))
    with pytest.raises(OrderLoadError, match="the audit record is not of a stage_orders run started at") as earlier:
        batch_report(spark, "stage_orders", "b2", tables.audit, since=started + timedelta(minutes=5))
    with pytest.raises(OrderLoadError, match="has no audit record") as absent:
        batch_report(spark, "stage_orders", "b3", tables.audit, since=started)

    assert (refused.value.retryable, earlier.value.retryable, absent.value.retryable) == (False, True, True)
