"""Merge job: upsert one staged batch into the target (latest wins), the history and the audit tables.

    python -m spark_jobs.merge_orders --batch-id ID --staging-table T --target-table T \
        --history-table T --audit-table T
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.cli import LOG, OrderLoadError, RetryableLoadError, parse_job_args, run_job, utc_now
from spark_jobs.contracts import BatchStatus
from spark_jobs.load import (
    KeyRange,
    TimeBands,
    compare_with_target,
    earlier_merge_counts,
    ensure_audit_table,
    ensure_current_state_tables,
    insert_new_history,
    merge_latest,
    merge_marker,
    read_audit,
    table_version,
    upsert_audit,
)
from spark_jobs.schema import BATCH_ID, EVENT_TIME, KEY, ROWS_COLLAPSED, SUPERSEDED_EVENTS, TARGET_COLUMNS
from spark_jobs.tables import check_batch_id, read_table


def history_events(batch: DataFrame) -> DataFrame:
    """Every distinct event of the batch: each staged row plus the events it superseded."""
    latest = F.struct(*TARGET_COLUMNS)
    return batch.select(F.explode(F.concat(F.array(latest), F.col(SUPERSEDED_EVENTS))).alias("e")).select("e.*")


@dataclass(frozen=True)
class BatchProfile:
    """What the merge needs to know of a staged batch before writing: its size, key range and event times."""

    staged: int
    collapsed: int
    key_range: KeyRange | None
    bands: TimeBands


def profile_batch(batch: DataFrame) -> BatchProfile:
    """One pass over the staged batch: rows, collapsed rows, key range, and the hours its events fall in."""
    times = F.concat(F.array(F.col(EVENT_TIME)), F.col(f"{SUPERSEDED_EVENTS}.{EVENT_TIME}"))
    staged_row = F.col("pos") == 0  # position 0 is the staged row's own event; the rest it superseded
    micros = F.unix_micros(F.col("time"))
    buckets = (
        batch.select(KEY, ROWS_COLLAPSED, F.posexplode(times).alias("pos", "time"))
        .groupBy(F.date_trunc("hour", F.col("time")))
        .agg(
            F.count_if(staged_row).alias("staged"),
            F.sum(F.when(staged_row, F.col(ROWS_COLLAPSED))).alias("collapsed"),
            F.min(KEY).alias("low"),
            F.max(KEY).alias("high"),
            F.min(micros).alias("first"),
            F.max(micros).alias("last"),
        )
        .collect()
    )
    lows = [row["low"] for row in buckets if row["low"] is not None]
    highs = [row["high"] for row in buckets if row["high"] is not None]
    return BatchProfile(
        staged=sum(int(row["staged"]) for row in buckets),
        collapsed=sum(int(row["collapsed"] or 0) for row in buckets),
        key_range=KeyRange(min(lows), max(highs)) if lows else None,
        bands=TimeBands.covering([(row["first"], row["last"]) for row in buckets if row["first"] is not None]),
    )


def read_staged(spark: SparkSession, staging_table: str, batch_id: str) -> tuple[DataFrame, BatchProfile]:
    """The batch's staged rows, and their profile (one pass)."""
    batch = read_table(spark, staging_table).where(F.col(BATCH_ID) == batch_id)
    return batch, profile_batch(batch)


@dataclass(frozen=True)
class MergeInput:
    """What the merge reads before it writes: the stage's audit record, the staged batch and its profile,
    the marker its MERGE carries, and what earlier tries of this staging's merge committed."""

    stage_record: dict
    batch: DataFrame
    profile: BatchProfile
    marker: str
    earlier: dict[str, int]


def read_merge_input(
    spark: SparkSession, batch_id: str, staging_table: str, target_table: str, history_table: str, audit_table: str
) -> MergeInput:
    """Read the batch and its audit record; refuse a batch that failed staging."""
    # Two reads of different tables, neither needing the other: Spark plans and runs them side by side.
    # The audit record is checked first, so a batch that failed staging is refused with that reason.
    with ThreadPoolExecutor(max_workers=1) as reader:
        staged_read = reader.submit(read_staged, spark, staging_table, batch_id)
        stage_record = read_audit(spark, audit_table, batch_id) or {}
        if stage_record.get("status") == BatchStatus.STAGE_FAILED:
            raise OrderLoadError(f"batch {batch_id} failed staging and is not merged: {stage_record['error']}")
        # While the staged rows are profiled: what earlier tries of this staging's merge committed. Counted
        # as this merge's, so a retry's figures (and the Asset event they decide) are the batch's.
        marker = merge_marker(batch_id, stage_record)
        unfinished = stage_record.get("status") in (BatchStatus.STAGED, BatchStatus.MERGE_UNRECONCILED)
        earlier = earlier_merge_counts(spark, target_table, history_table, marker) if unfinished else {}
        batch, profile = staged_read.result()
    return MergeInput(stage_record, batch, profile, marker, earlier)


def merge_batch(spark: SparkSession, read: MergeInput, target_table: str, history_table: str) -> tuple[dict, int]:
    """The MERGE into the target, the history insert and the check against the target version the MERGE
    wrote; with the rows earlier tries committed. Returns the counts and that version."""
    counts = {"inserted": 0, "updated": 0, "older": 0, "same": 0, "missing": 0, "history_inserted": 0}
    key_range = read.profile.key_range
    if key_range is not None:
        merged = merge_latest(read.batch, target_table, key_range, read.marker)
        version = merged.pop("version")
        counts.update(merged)
        # The history insert and the check touch different tables and need nothing of each other.
        with ThreadPoolExecutor(max_workers=1) as side:
            events, bands = history_events(read.batch), read.profile.bands
            history = side.submit(insert_new_history, events, history_table, key_range, bands, read.marker)
            # Against that version, not the latest: a concurrent batch may have moved keys on since.
            counts.update(compare_with_target(spark, read.batch, read.profile.staged, target_table, version, key_range))
            counts["history_inserted"] = history.result()
    else:
        version = table_version(spark, target_table)
    for name, committed in read.earlier.items():
        if committed:
            LOG.info("an earlier try of this batch committed %d %s rows; counted as this merge's", committed, name)
        counts[name] += committed
    return counts, version


def merge_metrics(batch_id: str, read: MergeInput, counts: dict, version: int) -> dict:
    """The batch's figures: the stage's, from its audit record, and the merge's."""
    stage_record = read.stage_record
    return {
        "batch_id": batch_id,
        "files": stage_record.get("files"),
        "rows_read": stage_record.get("rows_read"),
        "rows_rejected": stage_record.get("rows_rejected"),
        "files_rejected": stage_record.get("files_rejected"),
        "files_redelivered": stage_record.get("files_redelivered"),
        "rows_collapsed": read.profile.collapsed,
        "rows_staged": read.profile.staged,
        "rows_inserted": counts["inserted"],
        "rows_updated": counts["updated"],
        "rows_skipped_stale": counts["older"],
        "rows_unchanged": counts["same"] - counts["inserted"] - counts["updated"],
        "history_rows_inserted": counts["history_inserted"],
        "target_version": version,
    }


def record_merge(spark: SparkSession, record: dict, missing: int, target_table: str, audit_table: str) -> None:
    """Write the batch's audit record: ``merged``, or ``merge_unreconciled`` and fail (a retry checks again).

    The MERGE has committed: the alarm goes into the audit record before the job fails, and a retry (which
    finds this staging's commits by its marker) checks again, keeping the alarm.
    """
    staged, inserted, updated = record["rows_staged"], record["rows_inserted"], record["rows_updated"]
    older, unchanged, version = record["rows_skipped_stale"], record["rows_unchanged"], record["target_version"]
    if missing or unchanged < 0 or staged != inserted + updated + older + unchanged:
        error = (
            f"batch {record['batch_id']} does not reconcile: staged {staged} != inserted {inserted} + updated "
            f"{updated} + skipped_stale {older} + unchanged {unchanged}; "
            f"{missing} staged keys are missing from or older in {target_table} version {version}"
        )
        upsert_audit(spark, {**record, "status": BatchStatus.MERGE_UNRECONCILED, "error": error}, audit_table)
        committed = f"The MERGE committed; the audit record says {BatchStatus.MERGE_UNRECONCILED}"
        raise RetryableLoadError(f"{error}. {committed}.")
    earlier_alarm = record.get("error") if record.get("status") == BatchStatus.MERGE_UNRECONCILED else None
    alarm = f"reconciled on a later try; an earlier try said: {earlier_alarm}" if earlier_alarm else None
    upsert_audit(spark, {**record, "status": BatchStatus.MERGED, "error": alarm}, audit_table)


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
    read = read_merge_input(spark, batch_id, staging_table, target_table, history_table, audit_table)
    if not read.stage_record:  # staged by code that wrote no audit record: make the table for the merge's record
        ensure_audit_table(spark, audit_table)
    ensure_current_state_tables(spark, target_table, history_table)
    counts, version = merge_batch(spark, read, target_table, history_table)
    metrics = merge_metrics(batch_id, read, counts, version)
    record = {**read.stage_record, **metrics, "merge_started_at": started_at, "merge_finished_at": utc_now()}
    record_merge(spark, record, counts["missing"], target_table, audit_table)
    LOG.info(
        "merged batch %s into %s version %d: %d inserted, %d updated, %d skipped as stale, %d unchanged",
        batch_id,
        target_table,
        version,
        metrics["rows_inserted"],
        metrics["rows_updated"],
        metrics["rows_skipped_stale"],
        metrics["rows_unchanged"],
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
    return parse_job_args(parser, sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)

    def job() -> dict:
        from spark_jobs.session import get_spark

        spark = get_spark("merge_orders")
        return merge_orders(
            spark, args.batch_id, args.staging_table, args.target_table, args.history_table, args.audit_table
        )

    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
