"""The order tables' reads and writes: the staging and rejects partitions, the target MERGE (latest wins),
the insert-if-absent history, and the audit record; what a retried merge finds of its earlier tries.

Generic Delta work (creating, replacing a partition, retrying a conflict, finding a commit) is in
``spark_jobs.tables``; the MERGE conditions' key range and time bands in ``spark_jobs.merge_plan``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.cli import LOG, OrderLoadError, RetryableLoadError
from spark_jobs.contracts import ROW_COUNTS, BatchStatus, FileResult, FileStatus, JobMetrics, Result
from spark_jobs.merge_plan import BatchProfile, KeyRange, TimeBands, profile_batch
from spark_jobs.schema import (
    BATCH_ID,
    EVENT_CONTENT,
    EVENT_ORDER,
    EVENT_TIME,
    KEY,
    ROWS_COLLAPSED,
    SUPERSEDED_EVENTS,
    TARGET_COLUMNS,
    TARGET_SCHEMA,
    struct_of,
)
from spark_jobs.tables import (
    add_missing_columns,
    create_table_if_absent,
    merge_into,
    merges_marked,
    read_table,
    replace_batch,
    retry_on_conflict,
    sql_string,
    table_exists,
    table_version,
    version_of_merge,
)
from spark_jobs.transform import event_rank

# Properties of the target and history tables: deletion vectors let a MERGE mark replaced rows
# instead of rewriting whole files; clustering by key keeps each key range in few files.
TABLE_PROPERTIES = {"delta.enableDeletionVectors": "true"}
# The staging table is read one batch partition at a time and never filtered on its columns, so its
# files carry no min/max statistics: Delta then skips gathering them over every nested event it writes.
STAGING_PROPERTIES = {"delta.dataSkippingNumIndexedCols": "0"}
MERGE_ATTEMPT = "_merge_attempt"  # a MERGE source's column holding the attempt's id, by which its commit is found

AUDIT_TIMES = ("stage_started_at", "stage_finished_at", "merge_started_at", "merge_finished_at")
# A file's entry in the audit record: ``FileResult``'s fields, in order.
AUDIT_FILE = struct_of(FileResult)
AUDIT_SCHEMA = T.StructType(
    [
        T.StructField("batch_id", T.StringType()),
        T.StructField("status", T.StringType()),  # a BatchStatus
        T.StructField("error", T.StringType()),
        T.StructField("files", T.ArrayType(AUDIT_FILE)),
        *[T.StructField(name, T.LongType()) for name in ROW_COUNTS],
        *[T.StructField(name, T.TimestampType()) for name in AUDIT_TIMES],
    ]
)


@dataclass(frozen=True)
class AuditRecord:
    """A batch's row in the audit table: its status, files and figures (the last job's ``JobMetrics``), and
    when its stage and merge ran. A time read back is naive, in the process's zone (PySpark's ``collect``)."""

    metrics: JobMetrics
    stage_started_at: datetime | None = None
    stage_finished_at: datetime | None = None
    merge_started_at: datetime | None = None
    merge_finished_at: datetime | None = None

    @property
    def status(self) -> BatchStatus | None:
        """The batch's status."""
        return self.metrics.status

    def row(self) -> dict:
        """The record as the audit table's row: plain data, each column present."""
        data = {**self.metrics.to_dict(), **{name: getattr(self, name) for name in AUDIT_TIMES}}
        return {name: data.get(name) for name in AUDIT_SCHEMA.fieldNames()}

    @classmethod
    def from_row(cls, row: dict) -> AuditRecord:
        """A row read back; the metrics' result says whether the job that wrote it succeeded."""
        values = {name: value for name, value in row.items() if name not in AUDIT_TIMES}
        failed = values.get("status") in (BatchStatus.STAGE_FAILED, BatchStatus.MERGE_UNRECONCILED)
        metrics = JobMetrics.from_dict({**values, "result": Result.FAILED if failed else Result.SUCCEEDED})
        return cls(metrics, **{name: row.get(name) for name in AUDIT_TIMES})


def write_rejects(rejects: DataFrame, rejects_table: str, batch_id: str, any_rejected: bool) -> None:
    """Replace the batch's rejects (rejected rows, and a record per file rejected whole).

    Skipped when the batch has none and the table does not exist yet; otherwise written even when
    empty, so a re-run clears what an earlier attempt of the batch left.
    """
    if any_rejected or table_exists(rejects.sparkSession, rejects_table):
        replace_batch(rejects, rejects_table, "batch_id", batch_id, json.dumps({"batch_id": batch_id}))


def write_staging(staged: DataFrame, staging_table: str, batch_id: str) -> tuple[int, int]:
    """Replace the batch's staged rows; return the rows staged and collapsed, read back from the partition
    as committed, so the reconciliation checks what the table holds, not what the job meant to write."""
    replace_batch(staged, staging_table, BATCH_ID, batch_id, json.dumps({"batch_id": batch_id}), STAGING_PROPERTIES)
    totals = (
        read_table(staged.sparkSession, staging_table)
        .where(F.col(BATCH_ID) == batch_id)
        .agg(F.count(F.lit(1)).alias("staged"), F.coalesce(F.sum(ROWS_COLLAPSED), F.lit(0)).alias("collapsed"))
        .first()
    )
    return int(totals["staged"]), int(totals["collapsed"])


def find_redeliveries(spark: SparkSession, audit: str, batch_id: str, loaded: dict[str, str]) -> dict[str, str]:
    """For each loaded file (URI: fingerprint) that an earlier merged batch loaded with the same content or
    the same name: a note, by URI.

    Informational: a re-delivered file is loaded again, and the merge's latest-wins rule and the
    history's insert-if-absent keep that from duplicating anything.
    """
    if not loaded:
        return {}
    earlier = (
        read_table(spark, audit)
        .where((F.col("status") == BatchStatus.MERGED.value) & (F.col("batch_id") != batch_id))
        .select("batch_id", "merge_finished_at", F.explode("files").alias("f"))
        .where(F.col("f.status") == FileStatus.LOADED.value)
        .where(F.col("f.uri").isin(list(loaded)) | F.col("f.fingerprint").isin(list(loaded.values())))
        .select("batch_id", "merge_finished_at", "f.uri", "f.fingerprint")
        .orderBy("merge_finished_at", "batch_id")
        .collect()
    )
    notes = {}
    for uri, fingerprint in loaded.items():
        same_content = [r for r in earlier if r["fingerprint"] == fingerprint]
        same_name = [r for r in earlier if r["uri"] == uri]
        if same_content:
            notes[uri] = f"same content as {same_content[0]['uri']} in batch {same_content[0]['batch_id']}"
        elif same_name:
            notes[uri] = f"same name as loaded in batch {same_name[0]['batch_id']}, other content"
        else:
            continue
        LOG.warning("%s is a re-delivery (%s); loading it again changes no row", uri, notes[uri])
    return notes


def ensure_audit_table(spark: SparkSession, audit: str) -> None:
    """Create the audit table, or add the columns it lacks.

    It is partitioned by batch, like the staging and rejects tables: each batch's record is replaced in
    its own partition, so the records of batches running at once never conflict.
    """
    create_table_if_absent(spark, audit, AUDIT_SCHEMA, TABLE_PROPERTIES, partition_by="batch_id")
    add_missing_columns(spark, audit, AUDIT_SCHEMA)


def read_audit(spark: SparkSession, audit: str, batch_id: str) -> AuditRecord | None:
    """The batch's audit record, or None."""
    if not table_exists(spark, audit):
        return None
    rows = read_table(spark, audit).where(F.col("batch_id") == batch_id).collect()
    return AuditRecord.from_row(rows[0].asDict(recursive=True)) if rows else None


def upsert_audit(spark: SparkSession, record: AuditRecord, audit: str) -> None:
    """Write the batch's audit record in one commit, replacing an earlier one of the batch.

    The table must exist with its current columns (``ensure_audit_table``).
    """
    row, batch_id = record.row(), record.metrics.batch_id
    note = json.dumps({"batch_id": batch_id, "status": row["status"]})
    replace_batch(spark.createDataFrame([row], AUDIT_SCHEMA), audit, "batch_id", batch_id, note)


@dataclass(frozen=True)
class MergeInput:
    """What the merge reads before it writes: the stage's audit record, the staged batch and its profile,
    the marker its MERGEs carry, and what earlier tries of this staging's merge committed."""

    stage_record: AuditRecord
    batch: DataFrame
    profile: BatchProfile
    marker: str
    earlier: dict[str, int]


def read_merge_input(
    spark: SparkSession, batch_id: str, staging: str, target: str, history: str, audit: str
) -> MergeInput:
    """Read the batch's audit record, refusing a batch that failed staging; then what earlier tries of this
    staging's merge committed (counted as this merge's, so a retry's figures are the batch's); then the
    staged rows and their profile (one pass)."""
    stage_record = read_audit(spark, audit, batch_id)
    if stage_record is None:  # staged by code that wrote no audit record: make the table for the merge's record
        ensure_audit_table(spark, audit)
        stage_record = AuditRecord(JobMetrics(Result.SUCCEEDED, batch_id))
    if stage_record.status == BatchStatus.STAGE_FAILED:
        raise OrderLoadError(f"batch {batch_id} failed staging and is not merged: {stage_record.metrics.error}")
    marker = merge_marker(batch_id, stage_record.stage_started_at)
    unfinished = stage_record.status in (BatchStatus.STAGED, BatchStatus.MERGE_UNRECONCILED)
    earlier = earlier_merge_counts(spark, target, history, marker) if unfinished else {}
    batch = read_table(spark, staging).where(F.col(BATCH_ID) == batch_id)
    return MergeInput(stage_record, batch, profile_batch(batch), marker, earlier)


def merge_marker(batch_id: str, staged_at: datetime | None) -> str:
    """What every MERGE of one staging of a batch carries in its condition: the batch and when it was staged.

    A merge that failed after a MERGE committed is retried against the same staging: the retry finds
    the commits its earlier tries made by this marker. A new staging of the batch gets a new marker.
    """
    if staged_at is None:
        return ""
    instant = staged_at if staged_at.tzinfo else staged_at.astimezone(UTC)  # a collected time is local and naive
    return f"{batch_id}@{instant.astimezone(UTC).isoformat()}/"


def earlier_merge_counts(spark: SparkSession, target: str, history: str, marker: str) -> dict[str, int]:
    """What the MERGEs that carry ``marker`` committed: target rows inserted and updated, history rows inserted."""
    if not marker or not table_exists(spark, target):
        return {"inserted": 0, "updated": 0, "history_inserted": 0}
    target_merges = merges_marked(spark, target, marker)
    history_merges = merges_marked(spark, history, marker) if table_exists(spark, history) else []
    return {
        "inserted": sum(int(m.get("numTargetRowsInserted", 0)) for m in target_merges),
        "updated": sum(int(m.get("numTargetRowsUpdated", 0)) for m in target_merges),
        "history_inserted": sum(int(m.get("numTargetRowsInserted", 0)) for m in history_merges),
    }


def ensure_current_state_tables(spark: SparkSession, target: str, history: str) -> None:
    """Create the target and history tables, clustered by key, unless they exist; add the columns an
    existing one lacks (a nullable column added to the contract)."""
    for identifier in (target, history):
        create_table_if_absent(spark, identifier, TARGET_SCHEMA, TABLE_PROPERTIES, cluster_by=KEY)
        add_missing_columns(spark, identifier, TARGET_SCHEMA)


def merge_batch(spark: SparkSession, read: MergeInput, target: str, history: str) -> tuple[dict[str, int], int]:
    """The MERGE into the target, the history insert and the check against the target version the MERGE
    wrote; with the rows earlier tries committed. Returns the counts and that version."""
    counts = {"inserted": 0, "updated": 0, "older": 0, "same": 0, "missing": 0, "history_inserted": 0}
    key_range = read.profile.key_range
    if key_range is None:
        version = table_version(spark, target)
    else:
        merged = merge_latest(read.batch, target, key_range, read.marker)
        version = merged.pop("version")
        counts.update(merged)
        counts["history_inserted"] = insert_new_history(read.batch, history, key_range, read.profile.bands, read.marker)
        # Against the MERGE's version, not the latest: a concurrent batch may have moved keys on since.
        counts.update(compare_with_target(spark, read.batch, read.profile.staged, target, version, key_range))
    for name, committed in read.earlier.items():
        if committed:
            LOG.info("an earlier try of this batch committed %d %s rows; counted as this merge's", committed, name)
        counts[name] += committed
    return counts, version


def _rank_sql(alias: str) -> str:
    """``event_rank`` in SQL: the struct of an event's time and content, for a MERGE condition."""
    return "struct(" + ", ".join(f"{alias}.{name}" for name in EVENT_ORDER) + ")"


def merge_latest(latest: DataFrame, target: str, key_range: KeyRange, marker: str = "") -> dict[str, int]:
    """One atomic MERGE: insert new keys, update a key only when the incoming event ranks strictly higher
    (a later time, or the same time and greater content: ``EVENT_CONTENT``).

    Retried when a concurrent writer commits first (it is idempotent: a key is only ever moved to a
    newer event). Returns the counts and the version the MERGE's commit wrote: the source carries this
    attempt's id in a column that the ON clause compares with the same literal (true for every source
    row), and Delta records that condition in the commit, where ``version_of_merge`` finds it.
    """
    spark = latest.sparkSession
    attempt = marker + uuid.uuid4().hex
    source = latest.select(*TARGET_COLUMNS, F.lit(attempt).alias(MERGE_ATTEMPT))
    # Columns named, not ``*``: a session with schema auto-merge on would add the attempt column to the target.
    clauses = (
        f"ON t.{KEY} = s.{KEY} AND s.{MERGE_ATTEMPT} = {sql_string(attempt)} AND {key_range.sql('t')} "
        f"WHEN MATCHED AND {_rank_sql('s')} > {_rank_sql('t')} THEN UPDATE SET "
        + ", ".join(f"t.{name} = s.{name}" for name in TARGET_COLUMNS)
        + f" WHEN NOT MATCHED THEN INSERT ({', '.join(TARGET_COLUMNS)}) "
        + f"VALUES ({', '.join('s.' + name for name in TARGET_COLUMNS)})"
    )
    result = retry_on_conflict(lambda: merge_into(target, source, clauses), f"MERGE into {target}")
    counts = {"inserted": int(result["num_inserted_rows"]), "updated": int(result["num_updated_rows"])}
    version, latest = version_of_merge(spark, target, attempt)
    if version is None:
        if counts["inserted"] or counts["updated"]:
            raise LookupError(f"the MERGE into {target} changed rows, but its commit (attempt {attempt}) is not found")
        # A MERGE that changes nothing commits nothing; any later version holds the same or newer events.
        version = latest
    return {**counts, "version": version}


def history_events(batch: DataFrame) -> DataFrame:
    """Every distinct event of a staged batch: each staged row plus the events it superseded."""
    latest = F.struct(*TARGET_COLUMNS)
    return batch.select(F.explode(F.concat(F.array(latest), F.col(SUPERSEDED_EVENTS))).alias("e")).select("e.*")


def insert_new_history(batch: DataFrame, history: str, key_range: KeyRange, bands: TimeBands, marker: str = "") -> int:
    """Append the staged batch's events (``history_events``) whose (key, event time, content) the history
    table lacks; return how many (retried on conflict).

    The key range and the time bands only repeat what the equality implies, so Delta can skip the
    history files that cannot hold a batch's event. ``marker`` starts the attempt id the condition
    carries, as in ``merge_latest``.
    """
    attempt = marker + uuid.uuid4().hex
    source = history_events(batch).select(*TARGET_COLUMNS, F.lit(attempt).alias(MERGE_ATTEMPT))
    same_content = " AND ".join(f"t.{name} <=> s.{name}" for name in EVENT_CONTENT)
    clauses = (
        f"ON t.{KEY} = s.{KEY} AND t.{EVENT_TIME} = s.{EVENT_TIME} AND {same_content} "
        f"AND s.{MERGE_ATTEMPT} = {sql_string(attempt)} AND {key_range.sql('t')} AND {bands.sql('t')} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(TARGET_COLUMNS)}) "
        f"VALUES ({', '.join('s.' + name for name in TARGET_COLUMNS)})"
    )
    result = retry_on_conflict(lambda: merge_into(history, source, clauses), f"history insert into {history}")
    return int(result["num_inserted_rows"])


def compare_with_target(
    spark: SparkSession, latest: DataFrame, rows: int, target: str, version: int, key_range: KeyRange
) -> dict[str, int]:
    """Count the batch's ``rows`` rows by how they stand against the target at ``version``.

    ``older``: the target holds a higher-ranked event (the row was skipped as stale); ``same``: the target
    holds this very event, time and content (inserted, updated or unchanged); ``missing``: the key is absent or
    older, which a correct MERGE never leaves. The batch (one row per key) is broadcast and the
    target's two columns stream past it in one inner join: nothing of the target is shuffled.
    """
    current = (
        read_table(spark, target, version)
        .alias("t")
        .where(key_range.condition("t"))
        .select(KEY, event_rank().alias("_target_rank"))
    )
    joined = current.join(F.broadcast(latest.select(KEY, event_rank().alias("_rank"))), KEY, "inner")
    row = joined.agg(
        F.count("*").alias("found"),
        F.count_if(F.col("_target_rank") > F.col("_rank")).alias("older"),
        F.count_if(F.col("_target_rank").eqNullSafe(F.col("_rank"))).alias("same"),
        F.count_if(F.col("_target_rank") < F.col("_rank")).alias("behind"),
    ).collect()[0]
    return {
        "older": int(row["older"]),
        "same": int(row["same"]),
        "missing": rows - int(row["found"]) + int(row["behind"]),
    }


def record_merge(spark: SparkSession, record: AuditRecord, missing: int, target: str, audit: str) -> AuditRecord:
    """Write the batch's audit record: ``merged``, or ``merge_unreconciled`` and fail (a retry checks again).

    The MERGE has committed: the alarm goes into the audit record before the job fails, and a retry (which
    finds this staging's commits by its marker) checks again, keeping the earlier alarm in its record.
    """
    m = record.metrics
    staged, inserted, updated = m.rows_staged, m.rows_inserted, m.rows_updated
    older, unchanged, version = m.rows_skipped_stale, m.rows_unchanged, m.target_version
    if missing or unchanged < 0 or staged != inserted + updated + older + unchanged:
        error = (
            f"batch {m.batch_id} does not reconcile: staged {staged} != inserted {inserted} + updated "
            f"{updated} + skipped_stale {older} + unchanged {unchanged}; "
            f"{missing} staged keys are missing from or older in {target} version {version}"
        )
        alarm = replace(m, result=Result.FAILED, status=BatchStatus.MERGE_UNRECONCILED, error=error)
        upsert_audit(spark, replace(record, metrics=alarm), audit)
        committed = f"The MERGE committed; the audit record says {BatchStatus.MERGE_UNRECONCILED}"
        raise RetryableLoadError(f"{error}. {committed}.")
    merged = replace(record, metrics=replace(m, status=BatchStatus.MERGED, error=_earlier_alarm(m)))
    upsert_audit(spark, merged, audit)
    return merged


def _earlier_alarm(stage: JobMetrics) -> str | None:
    """The note a reconciled merge keeps of an earlier try's alarm, if the record holds one."""
    if stage.status != BatchStatus.MERGE_UNRECONCILED or not stage.error:
        return None
    return f"reconciled on a later try; an earlier try said: {stage.error}"
