"""Delta writes: the target MERGE, the insert-if-absent history, the audit record, table creation."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.contracts import ROW_COUNTS, FileResult
from spark_jobs.schema import EVENT_CONTENT, EVENT_ORDER, EVENT_TIME, KEY, TARGET_COLUMNS, TARGET_SCHEMA, struct_of
from spark_jobs.tables import (
    TableNotCreated,
    add_missing_columns,
    column_definitions,
    is_path,
    last_commit,
    merge_into,
    merges_marked,
    read_table,
    replace_batch,
    retry_on_conflict,
    sql_string,
    table_exists,
    table_sql,
    version_of_merge,
)
from spark_jobs.transform import event_rank

# Properties of the target and history tables: deletion vectors let a MERGE mark replaced rows
# instead of rewriting whole files; clustering by key keeps each key range in few files.
TABLE_PROPERTIES = {"delta.enableDeletionVectors": "true"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MERGE_ATTEMPT = "_merge_attempt"  # a MERGE source's column holding the attempt's id, by which its commit is found

# A file's entry in the audit record: ``FileResult``'s fields, in order.
AUDIT_FILE = struct_of(FileResult)
AUDIT_SCHEMA = T.StructType(
    [
        T.StructField("batch_id", T.StringType()),
        T.StructField("status", T.StringType()),  # a BatchStatus
        T.StructField("error", T.StringType()),
        T.StructField("files", T.ArrayType(AUDIT_FILE)),
        *[T.StructField(name, T.LongType()) for name in ROW_COUNTS],
        T.StructField("stage_started_at", T.TimestampType()),
        T.StructField("stage_finished_at", T.TimestampType()),
        T.StructField("merge_started_at", T.TimestampType()),
        T.StructField("merge_finished_at", T.TimestampType()),
    ]
)


@dataclass(frozen=True)
class KeyRange:
    """The smallest and greatest key of a batch; added to MERGE conditions so Delta can skip files."""

    low: str
    high: str

    def condition(self, alias: str) -> Column:
        """``alias``'s key within the range. The bounds are literal values: keys come from CSV data and
        may hold quotes or backslashes."""
        return F.col(f"{alias}.{KEY}").between(F.lit(self.low), F.lit(self.high))

    def sql(self, alias: str) -> str:
        """The same condition as SQL text, the bounds as ``sql_string`` literals: Delta's MERGE binds no
        query parameters, and its file skipping needs literals."""
        return f"{alias}.{KEY} BETWEEN {sql_string(self.low)} AND {sql_string(self.high)}"


@dataclass(frozen=True)
class TimeBands:
    """A few disjoint spans of event time (epoch microseconds, UTC) that cover every event of a batch.

    Added to the history insert's condition, they let Delta skip every history file whose events all
    lie outside them (its min/max statistics): new events are newer than nearly all of the history,
    so an insert reads almost none of it however long the history grows. A replayed or late event
    falls in a band that overlaps old files, and those files are read, as correctness needs.
    """

    spans: tuple[tuple[int, int], ...]

    @classmethod
    def covering(cls, buckets: list[tuple[int, int]], max_bands: int = 8) -> TimeBands:
        """Join sorted or unsorted (low, high) buckets into at most ``max_bands`` spans, closing the
        smallest gaps first, so the spans cover every bucket and as little else as they can."""
        spans = sorted(buckets)
        merged: list[list[int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        while len(merged) > max(1, max_bands):
            gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
            i = gaps.index(min(gaps))
            merged[i : i + 2] = [[merged[i][0], max(merged[i][1], merged[i + 1][1])]]
        return cls(tuple((low, high) for low, high in merged))

    def condition(self, alias: str) -> Column:
        """``alias``'s event time within a band; the bounds are timestamp literals, which data skipping uses."""
        column = F.col(f"{alias}.{EVENT_TIME}")
        within = [column.between(F.lit(_instant(low)), F.lit(_instant(high))) for low, high in self.spans]
        if not within:
            return F.lit(False)
        condition = within[0]
        for band in within[1:]:
            condition = condition | band
        return condition

    def sql(self, alias: str) -> str:
        """The same condition as SQL text, the bounds as UTC timestamp literals."""
        within = [
            f"{alias}.{EVENT_TIME} BETWEEN {_timestamp_sql(low)} AND {_timestamp_sql(high)}" for low, high in self.spans
        ]
        return "(" + " OR ".join(within) + ")" if within else "FALSE"


def _rank_sql(alias: str) -> str:
    """``event_rank`` in SQL: the struct of an event's time and content, for a MERGE condition."""
    return "struct(" + ", ".join(f"{alias}.{name}" for name in EVENT_ORDER) + ")"


def _timestamp_sql(micros: int) -> str:
    """An epoch-microsecond instant as a SQL timestamp literal with its UTC offset (no session-zone reading).

    Written from the instant's integer fields, each zero-padded to its width: ``strftime("%Y")`` writes
    year 23 as ``23``, which Spark refuses. Delta's file skipping needs a literal, not an expression.
    """
    at = _instant(micros)
    return (
        f"TIMESTAMP '{at.year:04d}-{at.month:02d}-{at.day:02d} "
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}+00:00'"
    )


def _instant(micros: int) -> datetime:
    """An epoch-microsecond instant as an aware UTC datetime, by integer arithmetic (years 1 to 9999)."""
    return _EPOCH + timedelta(microseconds=micros)


def create_table_if_absent(
    spark: SparkSession,
    identifier: str,
    schema: T.StructType,
    cluster_by: str | None = None,
    partition_by: str | None = None,
) -> None:
    """Create a Delta table with ``schema`` unless it exists (clustered by ``cluster_by`` or partitioned by
    ``partition_by`` if given).

    Raises ``TableNotCreated`` when a path is left without a Delta table (another creator's first
    commit is under way, or the folder holds other files): ``retry_on_conflict`` tries again.
    """
    layout = f" CLUSTER BY (`{cluster_by}`)" if cluster_by else ""
    layout += f" PARTITIONED BY (`{partition_by}`)" if partition_by else ""
    properties = ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in TABLE_PROPERTIES.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table_sql(identifier)} ({column_definitions(schema.fields)}) USING delta{layout} "
        f"TBLPROPERTIES ({properties})"
    )
    if is_path(identifier) and not table_exists(spark, identifier):
        raise TableNotCreated(f"{identifier} holds files but no Delta table; CREATE TABLE IF NOT EXISTS left it so")


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


def insert_new_history(events: DataFrame, history: str, key_range: KeyRange, bands: TimeBands, marker: str = "") -> int:
    """Append the events whose (key, event time, content) the history table lacks; return how many (retried on
    conflict).

    The key range and the time bands only repeat what the equality implies, so Delta can skip the
    history files that cannot hold a batch's event. ``marker`` starts the attempt id the condition
    carries, as in ``merge_latest``.
    """
    attempt = marker + uuid.uuid4().hex
    source = events.select(*TARGET_COLUMNS, F.lit(attempt).alias(MERGE_ATTEMPT))
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


def table_version(spark: SparkSession, identifier: str) -> int:
    """The table's current version."""
    return int(last_commit(spark, identifier)["version"])


def merge_marker(batch_id: str, stage_record: dict) -> str:
    """What every MERGE of one staging of a batch carries in its condition: the batch and when it was staged.

    A merge that failed after a MERGE committed is retried against the same staging: the retry finds
    the commits its earlier tries made by this marker. A new staging of the batch gets a new marker.
    """
    staged_at = stage_record.get("stage_started_at")
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


def read_audit(spark: SparkSession, audit: str, batch_id: str) -> dict | None:
    """The batch's audit record, or None."""
    if not table_exists(spark, audit):
        return None
    rows = read_table(spark, audit).where(F.col("batch_id") == batch_id).collect()
    return rows[0].asDict(recursive=True) if rows else None


def ensure_audit_table(spark: SparkSession, audit: str) -> None:
    """Create the audit table, or add the columns it lacks.

    It is partitioned by batch, like the staging and rejects tables: each batch's record is replaced in
    its own partition, so the records of batches running at once never conflict (unpartitioned, ten at
    once needed all 8 tries).
    """
    retry_on_conflict(
        lambda: create_table_if_absent(spark, audit, AUDIT_SCHEMA, partition_by="batch_id"), f"creating {audit}"
    )
    add_missing_columns(spark, audit, AUDIT_SCHEMA)


def upsert_audit(spark: SparkSession, record: dict, audit: str) -> None:
    """Write the batch's audit record in one commit, replacing an earlier one of the batch; absent fields are null.

    The table must exist with its current columns (``ensure_audit_table``).
    """
    full = {name: record.get(name) for name in AUDIT_SCHEMA.fieldNames()}
    # The status as a plain string: PySpark 3.5 pickles the row to the JVM, which cannot rebuild an enum.
    full["status"] = None if full["status"] is None else str(full["status"])
    note = json.dumps({"batch_id": record["batch_id"], "status": full["status"]})
    replace_batch(spark.createDataFrame([full], AUDIT_SCHEMA), audit, "batch_id", record["batch_id"], note)


def ensure_current_state_tables(spark: SparkSession, target: str, history: str) -> None:
    """Create the target and history tables, clustered by key, unless they exist; add the columns an
    existing one lacks (a nullable column added to the contract)."""
    for identifier in (target, history):
        retry_on_conflict(
            lambda identifier=identifier: create_table_if_absent(spark, identifier, TARGET_SCHEMA, cluster_by=KEY),
            f"creating {identifier}",
        )
        add_missing_columns(spark, identifier, TARGET_SCHEMA)
