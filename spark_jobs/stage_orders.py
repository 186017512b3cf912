"""Stage job: read a batch of CSV files, validate and clean them, write rejects and the staging table.

    python -m spark_jobs.stage_orders --manifest URI --batch-id ID --staging-table T --rejects-table T \
        --audit-table T [--max-reject-fraction 0.1]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace

from pyspark.sql import SparkSession

from spark_jobs.cli import LOG, OrderLoadError, parse_job_args, run_job, utc_now
from spark_jobs.contracts import BatchStatus, JobMetrics, Refusal, Result, check_batch_id
from spark_jobs.extract import read_manifest
from spark_jobs.load import (
    AuditRecord,
    ensure_audit_table,
    find_redeliveries,
    upsert_audit,
    write_rejects,
    write_staging,
)
from spark_jobs.outcomes import (
    file_outcomes,
    loaded_fingerprints,
    quarantine,
    reject_limit_error,
    rejected_file_records,
    row_sources,
    stage_metrics,
    unreconciled,
)
from spark_jobs.progress import phase
from spark_jobs.reading import read_batch
from spark_jobs.transform import collapse_to_latest, rejected_rows, valid_rows, with_line_numbers

DEFAULT_MAX_REJECT_FRACTION = 0.1


def stage_orders(
    spark: SparkSession,
    inputs: list[dict],
    batch_id: str,
    staging_table: str,
    rejects_table: str,
    audit_table: str,
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
) -> dict:
    """Stage one batch: read every file, validate each row, quarantine each file rejected whole or with more
    than ``max_reject_fraction`` of its rows rejected, collapse each key to its latest event, then write the
    rejects, the staging rows (unless no file of the batch loads: it is bad as a whole) and the batch's
    audit record (``staged`` or ``stage_failed``, which the merge job completes). Returns its metrics."""
    check_batch_id(batch_id)
    if not 0 <= max_reject_fraction <= 1:
        raise Refusal(
            f"max_reject_fraction is a fraction from 0 to 1 (0.1 = 10% of the batch's rows), not {max_reject_fraction}"
        )
    if not inputs:
        raise OrderLoadError("no input files: the manifest lists none")
    started_at = utc_now()
    with read_batch(spark, inputs) as batch:
        outcomes = file_outcomes(batch.files, batch.counts)
        error = reject_limit_error(batch_id, outcomes, max_reject_fraction, rejects_table)
        outcomes = outcomes if error else quarantine(outcomes, max_reject_fraction)
        # Kept rows keep the record ids the count saw; otherwise each write takes its files' first ids itself.
        rows = with_line_numbers(batch.parsed, row_sources(outcomes, batch.kept), with_first_ids=batch.kept)
        rejects = rejected_rows(rows, rejected_file_records(outcomes), batch_id, started_at)
        staged = collapse_to_latest(valid_rows(rows, batch_id, started_at))

        ensure_audit_table(spark, audit_table)
        redeliveries = find_redeliveries(spark, audit_table, batch_id, loaded_fingerprints(outcomes))
        any_rejected = any(o.rows_rejected or not o.loaded for o in outcomes)
        with phase(f"writing the rejects to {rejects_table}"):
            write_rejects(rejects, rejects_table, batch_id, any_rejected)
        counts = None
        if not error:  # a batch of which no file loads stages nothing
            with phase(f"writing the staged rows to {staging_table}"):
                counts = write_staging(staged, staging_table, batch_id)
    metrics = stage_metrics(batch_id, outcomes, redeliveries, counts)
    error = error or unreconciled(metrics)
    if error:
        metrics = replace(metrics, result=Result.FAILED, status=BatchStatus.STAGE_FAILED, error=error)
    upsert_audit(spark, AuditRecord(metrics, stage_started_at=started_at, stage_finished_at=utc_now()), audit_table)
    if error:
        raise OrderLoadError(error)
    log_summary(metrics)
    return metrics.to_dict()


def log_summary(metrics: JobMetrics) -> None:
    """Log the files rejected whole and the batch's figures."""
    for item in metrics.files:
        if item.reason:
            LOG.warning("file %s rejected whole: %s", item.uri, item.reason)
    LOG.info("staged batch %s (%d files): %s", metrics.batch_id, len(metrics.files), metrics.summary())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the stage job's command line."""
    parser = argparse.ArgumentParser(prog="stage_orders", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="URI of the JSON manifest listing the batch's files")
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--staging-table", required=True)
    parser.add_argument("--rejects-table", required=True)
    parser.add_argument("--audit-table", required=True, help="the batch's audit record (the merge completes it)")
    parser.add_argument("--max-reject-fraction", type=float, default=DEFAULT_MAX_REJECT_FRACTION)
    return parse_job_args(parser, sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)

    def job(spark: SparkSession) -> dict:
        inputs = [asdict(item) for item in read_manifest(spark, args.manifest).files]
        return stage_orders(
            spark,
            inputs,
            args.batch_id,
            args.staging_table,
            args.rejects_table,
            args.audit_table,
            args.max_reject_fraction,
        )

    return run_job("stage_orders", job)


if __name__ == "__main__":
    sys.exit(main())
