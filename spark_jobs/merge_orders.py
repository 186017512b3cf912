"""Merge job: upsert one staged batch into the target (latest wins), the history and the audit tables.

    python -m spark_jobs.merge_orders --batch-id ID --staging-table T --target-table T \
        --history-table T --audit-table T
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.cli import LOG, OrderLoadError, run_job, utc_now
from spark_jobs.load import (
    KeyRange,
    compare_with_target,
    ensure_current_state_tables,
    insert_new_history,
    merge_latest,
    read_audit,
    table_version,
    upsert_audit,
)
from spark_jobs.schema import BATCH_ID, KEY, ROWS_COLLAPSED, SUPERSEDED_EVENTS, TARGET_COLUMNS
from spark_jobs.tables import check_batch_id, read_table


def history_events(batch: DataFrame) -> DataFrame:
    """Every distinct event of the batch: each staged row plus the events it superseded."""
    latest = F.struct(*TARGET_COLUMNS)
    return batch.select(F.explode(F.concat(F.array(latest), F.col(SUPERSEDED_EVENTS))).alias("e")).select("e.*")


def merge_orders(
    spark: SparkSession,
    batch_id: str,
    staging_table: str,
    target_table: str,
    history_table: str,
    audit_table: str,
) -> dict:
    """Merge a staged batch; fail if its rows do not reconcile. Returns metrics."""
    check_batch_id(batch_id)
    started_at = utc_now()
    stage_record = read_audit(spark, audit_table, batch_id) or {}
    if stage_record.get("status") == "stage_failed":
        raise OrderLoadError(f"batch {batch_id} failed staging and is not merged: {stage_record['error']}")
    batch = read_table(spark, staging_table).where(F.col(BATCH_ID) == batch_id)
    totals = batch.agg(
        F.count("*").alias("staged"),
        F.coalesce(F.sum(ROWS_COLLAPSED), F.lit(0)).alias("collapsed"),
        F.min(KEY).alias("low"),
        F.max(KEY).alias("high"),
    ).collect()[0]
    staged = int(totals["staged"])
    ensure_current_state_tables(spark, target_table, history_table)

    counts = {"inserted": 0, "updated": 0, "older": 0, "same": 0, "missing": 0, "history_inserted": 0}
    if staged:
        key_range = KeyRange(totals["low"], totals["high"])
        # Tags this attempt's commits, so it finds the target version its own MERGE wrote.
        note = json.dumps({"batch_id": batch_id, "job": "merge_orders", "attempt": uuid.uuid4().hex})
        counts["history_inserted"] = insert_new_history(history_events(batch), history_table, key_range, note)
        merged = merge_latest(batch, target_table, key_range, note)
        version = merged.pop("version")
        counts.update(merged)
        # Against that version, not the latest: a concurrent batch may have moved keys on since.
        counts.update(compare_with_target(spark, batch, target_table, version, key_range))
    else:
        version = table_version(spark, target_table)

    unchanged = counts["same"] - counts["inserted"] - counts["updated"]
    metrics = {
        "batch_id": batch_id,
        "files": stage_record.get("files"),
        "rows_read": stage_record.get("rows_read"),
        "rows_rejected": stage_record.get("rows_rejected"),
        "files_rejected": stage_record.get("files_rejected"),
        "files_redelivered": stage_record.get("files_redelivered"),
        "rows_collapsed": int(totals["collapsed"]),
        "rows_staged": staged,
        "rows_inserted": counts["inserted"],
        "rows_updated": counts["updated"],
        "rows_skipped_stale": counts["older"],
        "rows_unchanged": unchanged,
        "history_rows_inserted": counts["history_inserted"],
        "target_version": version,
    }
    accounted = counts["inserted"] + counts["updated"] + counts["older"] + unchanged
    if counts["missing"] or unchanged < 0 or staged != accounted:
        raise OrderLoadError(
            f"batch {batch_id} does not reconcile: staged {staged} != inserted {counts['inserted']} + updated "
            f"{counts['updated']} + skipped_stale {counts['older']} + unchanged {unchanged}; "
            f"{counts['missing']} staged keys are missing from or older in {target_table} version {version}"
        )
    upsert_audit(
        spark,
        {
            **stage_record,
            **metrics,
            "status": "merged",
            "error": None,
            "merge_started_at": started_at,
            "merge_finished_at": utc_now(),
        },
        audit_table,
    )
    LOG.info(
        "merged batch %s into %s version %d: %d inserted, %d updated, %d skipped as stale, %d unchanged",
        batch_id,
        target_table,
        version,
        counts["inserted"],
        counts["updated"],
        counts["older"],
        unchanged,
    )
    return metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the merge job's command line."""
    parser = argparse.ArgumentParser(prog="merge_orders", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--staging-table", required=True)
    parser.add_argument("--target-table", required=True)
    parser.add_argument("--history-table", required=True)
    parser.add_argument("--audit-table", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def job() -> dict:
        from spark_jobs.session import get_spark

        spark = get_spark("merge_orders")
        return merge_orders(
            spark, args.batch_id, args.staging_table, args.target_table, args.history_table, args.audit_table
        )

    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
