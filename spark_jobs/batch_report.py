"""Report job: a batch's figures, read back from the audit record its stage or merge job wrote.

    python -m spark_jobs.batch_report --job stage_orders|merge_orders --batch-id ID --audit-table T

Airflow runs it when a Databricks run succeeded but its output lost the metrics line (``runs/get-output``
can return empty or cut logs): the task then takes the figures the job committed, and never fails a load
that succeeded. It prints the same metrics line the job would have, and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

from spark_jobs.cli import OrderLoadError, parse_job_args, run_job
from spark_jobs.contracts import ROW_COUNTS, BatchStatus, check_batch_id
from spark_jobs.load import read_audit

# The audit statuses that say a job of the batch succeeded, the one it leaves first: a merged batch was staged.
SUCCEEDED_STATUSES = {
    "stage_orders": (BatchStatus.STAGED, BatchStatus.MERGE_UNRECONCILED, BatchStatus.MERGED),
    "merge_orders": (BatchStatus.MERGED,),
}
# The figures each job reports: the stage's end at rows_staged; the merge reports them all, as the merge job does.
_STAGED = ROW_COUNTS.index("rows_staged") + 1
_FIGURES = {"stage_orders": ("files", *ROW_COUNTS[:_STAGED]), "merge_orders": ("files", *ROW_COUNTS)}


def batch_report(spark, job: str, batch_id: str, audit_table: str) -> dict:
    """The figures ``job`` committed for the batch; OrderLoadError when the audit says it did not succeed."""
    check_batch_id(batch_id)
    record = read_audit(spark, audit_table, batch_id)
    if record is None:
        raise OrderLoadError(f"batch {batch_id} has no audit record in {audit_table}")
    if record.status not in SUCCEEDED_STATUSES[job]:
        raise OrderLoadError(
            f"batch {batch_id}: the audit record says {record.row()['status']!r}, so {job} did not succeed: "
            f"{record.metrics.error or 'no error recorded'}"
        )
    data = record.metrics.to_dict()
    figures = {name: data[name] for name in _FIGURES[job] if name in data}
    # The status the job itself printed when it succeeded (the record may have moved on since).
    return {"batch_id": batch_id, "status": SUCCEEDED_STATUSES[job][0].value, **figures}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the report job's command line."""
    parser = argparse.ArgumentParser(prog="batch_report", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, choices=sorted(SUCCEEDED_STATUSES))
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--audit-table", required=True)
    return parse_job_args(parser, sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    return run_job("batch_report", lambda spark: batch_report(spark, args.job, args.batch_id, args.audit_table))


if __name__ == "__main__":
    sys.exit(main())
