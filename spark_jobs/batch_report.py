"""Report job: a batch's figures, read back from the audit record its stage or merge job wrote.

    python -m spark_jobs.batch_report --job stage_orders|merge_orders --batch-id ID --audit-table T

Airflow runs it when a Databricks run's output lost the metrics line (``runs/get-output`` can return empty
or cut logs). After a run that succeeded, the task takes the figures the job committed, and never fails a
load that succeeded; after one that failed, it learns from the record whether the job refused the batch
(final: not retried) or left no record of this run (retried). It prints the same metrics line the job
would have, and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from spark_jobs.cli import OrderLoadError, RetryableLoadError, parse_job_args, run_job
from spark_jobs.contracts import ROW_COUNTS, BatchStatus, check_batch_id
from spark_jobs.load import AuditRecord, read_audit

# The audit statuses that say a job of the batch succeeded, the one it leaves first: a merged batch was staged.
SUCCEEDED_STATUSES = {
    "stage_orders": (BatchStatus.STAGED, BatchStatus.MERGE_UNRECONCILED, BatchStatus.MERGED),
    "merge_orders": (BatchStatus.MERGED,),
}
# The figures each job reports: the stage's end at rows_staged; the merge reports them all, as the merge job does.
_STAGED = ROW_COUNTS.index("rows_staged") + 1
_FIGURES = {"stage_orders": ("files", *ROW_COUNTS[:_STAGED]), "merge_orders": ("files", *ROW_COUNTS)}


# How far a job's recorded start may precede its run's start on the Jobs API's clock (the two clocks differ).
CLOCK_SLACK = timedelta(seconds=10)


def batch_report(spark, job: str, batch_id: str, audit_table: str, since: datetime | None = None) -> dict:
    """The figures ``job`` committed for the batch.

    Raises ``OrderLoadError`` (final) when the record says the stage refused the batch; ``RetryableLoadError``
    when there is no record, or none written by a job started at ``since`` or later (a run that left none,
    the record being an earlier one's), or the record says the merge did not finish.
    """
    check_batch_id(batch_id)
    return report_of(read_audit(spark, audit_table, batch_id), job, batch_id, audit_table, since)


def report_of(record: AuditRecord | None, job: str, batch_id: str, audit_table: str, since: datetime | None) -> dict:
    """The figures ``job`` committed for the batch, as its audit record (None: there is none) holds them; the
    errors of ``batch_report``."""
    if record is None:
        raise RetryableLoadError(f"batch {batch_id} has no audit record in {audit_table}")
    started = record.stage_started_at if job == "stage_orders" else record.merge_started_at
    if since is not None and (started is None or _utc(started) < since - CLOCK_SLACK):
        raise RetryableLoadError(
            f"batch {batch_id}: the audit record is not of a {job} run started at {since.isoformat()} or later "
            f"(its {job} started at {started}): that run left no record"
        )
    if record.status not in SUCCEEDED_STATUSES[job]:
        refusal = OrderLoadError if record.status == BatchStatus.STAGE_FAILED else RetryableLoadError
        raise refusal(
            f"batch {batch_id}: the audit record says {record.row()['status']!r}, so {job} did not succeed: "
            f"{record.metrics.error or 'no error recorded'}"
        )
    data = record.metrics.to_dict()
    figures = {name: data[name] for name in _FIGURES[job] if name in data}
    # The status the job itself printed when it succeeded (the record may have moved on since).
    return {"batch_id": batch_id, "status": SUCCEEDED_STATUSES[job][0].value, **figures}


def _utc(instant: datetime) -> datetime:
    """A time read back (naive, in the process's zone) as an aware UTC instant."""
    return instant.astimezone(UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the report job's command line."""
    parser = argparse.ArgumentParser(prog="batch_report", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, choices=sorted(SUCCEEDED_STATUSES))
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--audit-table", required=True)
    parser.add_argument(
        "--since", type=datetime.fromisoformat, help="only a record of a job started then or later (ISO 8601, UTC)"
    )
    return parse_job_args(parser, sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    return run_job(
        "batch_report", lambda spark: batch_report(spark, args.job, args.batch_id, args.audit_table, args.since)
    )


if __name__ == "__main__":
    sys.exit(main())
