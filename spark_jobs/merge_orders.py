"""Merge job: upsert one staged batch into the target (latest wins), the history and the audit tables.

    python -m spark_jobs.merge_orders --batch-id ID --staging-table T --target-table T \
        --history-table T --audit-table T
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from pyspark.sql import SparkSession

from spark_jobs.cli import LOG, parse_job_args, run_job, utc_now
from spark_jobs.contracts import JobMetrics, check_batch_id
from spark_jobs.load import (
    MergeInput,
    ensure_current_state_tables,
    merge_batch,
    read_merge_input,
    record_merge,
)
from spark_jobs.progress import phase


def merge_orders(
    spark: SparkSession,
    batch_id: str,
    staging_table: str,
    target_table: str,
    history_table: str,
    audit_table: str,
) -> dict:
    """Merge a staged batch: read it and its audit record, MERGE it, record it; fail if its rows do not
    reconcile. Returns its metrics."""
    check_batch_id(batch_id)
    started_at = utc_now()
    with phase(f"reading staged batch {batch_id}"):
        read = read_merge_input(spark, batch_id, staging_table, target_table, history_table, audit_table)
    ensure_current_state_tables(spark, target_table, history_table)
    with phase(f"merging into {target_table} and {history_table}"):
        counts, version = merge_batch(spark, read, target_table, history_table)
    record = replace(
        read.stage_record,
        metrics=merge_metrics(read, counts, version),
        merge_started_at=started_at,
        merge_finished_at=utc_now(),
    )
    merged = record_merge(spark, record, counts["missing"], target_table, audit_table)
    LOG.info("merged batch %s into %s: %s", batch_id, target_table, merged.metrics.summary())
    return merged.metrics.to_dict()


def merge_metrics(read: MergeInput, counts: dict[str, int], version: int) -> JobMetrics:
    """The batch's figures: the stage's, from its audit record, and the merge's."""
    return replace(
        read.stage_record.metrics,
        rows_collapsed=read.profile.collapsed,
        rows_staged=read.profile.staged,
        rows_inserted=counts["inserted"],
        rows_updated=counts["updated"],
        rows_skipped_stale=counts["older"],
        rows_unchanged=counts["same"] - counts["inserted"] - counts["updated"],
        history_rows_inserted=counts["history_inserted"],
        target_version=version,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the merge job's command line."""
    parser = argparse.ArgumentParser(prog="merge_orders", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--staging-table", required=True)
    parser.add_argument("--target-table", required=True)
    parser.add_argument("--history-table", required=True)
    parser.add_argument("--audit-table", required=True)
    return parse_job_args(parser, sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    tables = (args.staging_table, args.target_table, args.history_table, args.audit_table)
    return run_job("merge_orders", lambda spark: merge_orders(spark, args.batch_id, *tables))


if __name__ == "__main__":
    sys.exit(main())
