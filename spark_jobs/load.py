"""Delta writes: the target MERGE, the insert-if-absent history, the audit record, table creation."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.contracts import ROW_COUNTS
from spark_jobs.schema import EVENT_TIME, KEY, TARGET_COLUMNS, TARGET_SCHEMA
from spark_jobs.tables import (
    commit_note,
    delta_table,
    last_commit,
    read_table,
    replace_batch,
    retry_on_conflict,
    sql_string,
    table_exists,
    table_sql,
    version_with_note,
)

# Properties of the target and history tables: deletion vectors let a MERGE mark replaced rows
# instead of rewriting whole files; clustering by key keeps each key range in few files.
TABLE_PROPERTIES = {"delta.enableDeletionVectors": "true"}

AUDIT_FILE = T.StructType(
    [
        T.StructField("uri", T.StringType()),
        T.StructField("size", T.LongType()),
        T.StructField("generation", T.StringType()),
        T.StructField("rows", T.LongType()),
        T.StructField("rows_rejected", T.LongType()),
        T.StructField("status", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("fingerprint", T.StringType()),  # see spark_jobs.contracts.FileResult
        T.StructField("redelivery_of", T.StringType()),
    ]
)
AUDIT_SCHEMA = T.StructType(
    [
        T.StructField("batch_id", T.StringType()),
        T.StructField("status", T.StringType()),  # staged, stage_failed, merged
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
        """``alias``'s key within the range. The bounds are literal values, never SQL text: keys come
        from CSV data and may hold quotes or backslashes."""
        return F.col(f"{alias}.{KEY}").between(F.lit(self.low), F.lit(self.high))


def create_table_if_absent(
    spark: SparkSession, identifier: str, schema: T.StructType, cluster_by: str | None = None
) -> None:
    """Create a Delta table with ``schema`` unless it exists (clustered by ``cluster_by`` if given)."""
    columns = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in schema.fields)
    clustering = f" CLUSTER BY (`{cluster_by}`)" if cluster_by else ""
    properties = ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in TABLE_PROPERTIES.items())
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table_sql(identifier)} ({columns}) USING delta{clustering} "
        f"TBLPROPERTIES ({properties})"
    )


def merge_latest(latest: DataFrame, target: str, key_range: KeyRange, note: str) -> dict[str, int]:
    """One atomic MERGE: insert new keys, update a key only when the incoming event is strictly newer.

    Retried when a concurrent writer commits first (it is idempotent: a key is only ever moved to a
    newer event). Returns the counts and the version the commit, tagged ``note``, wrote.
    """
    spark = latest.sparkSession
    source = latest.select(*TARGET_COLUMNS).alias("s")

    def commit() -> Row:
        merge = (
            delta_table(spark, target)
            .alias("t")
            .merge(source, (F.col(f"t.{KEY}") == F.col(f"s.{KEY}")) & key_range.condition("t"))
            .whenMatchedUpdateAll(condition=F.col(f"s.{EVENT_TIME}") > F.col(f"t.{EVENT_TIME}"))
            .whenNotMatchedInsertAll()
        )
        with commit_note(spark, note):
            return merge.execute().first()

    result = retry_on_conflict(commit, f"MERGE into {target}")
    counts = {"inserted": int(result["num_inserted_rows"]), "updated": int(result["num_updated_rows"])}
    version = version_with_note(spark, target, note)
    if version is None:
        if counts["inserted"] or counts["updated"]:
            raise LookupError(f"the MERGE into {target} changed rows, but no commit of it tagged {note!r} is found")
        # A MERGE that changes nothing commits nothing; any later version holds the same or newer events.
        version = table_version(spark, target)
    return {**counts, "version": version}


def insert_new_history(events: DataFrame, history: str, key_range: KeyRange, note: str) -> int:
    """Append the events whose (key, event time) the history table lacks; return how many (retried on conflict)."""
    spark = events.sparkSession
    source = events.select(*TARGET_COLUMNS).alias("e")
    same_event = (
        (F.col(f"h.{KEY}") == F.col(f"e.{KEY}"))
        & (F.col(f"h.{EVENT_TIME}") == F.col(f"e.{EVENT_TIME}"))
        & key_range.condition("h")
    )

    def commit() -> Row:
        merge = delta_table(spark, history).alias("h").merge(source, same_event).whenNotMatchedInsertAll()
        with commit_note(spark, note):
            return merge.execute().first()

    return int(retry_on_conflict(commit, f"history insert into {history}")["num_inserted_rows"])


def compare_with_target(
    spark: SparkSession, latest: DataFrame, target: str, version: int, key_range: KeyRange
) -> dict[str, int]:
    """Count the batch's rows by how they stand against the target at ``version``.

    ``older``: the target holds a newer event (the row was skipped as stale); ``same``: the target
    holds this very event time (inserted, updated or unchanged); ``missing``: the key is absent,
    which a correct MERGE never leaves.
    """
    current = (
        read_table(spark, target, version)
        .alias("t")
        .where(key_range.condition("t"))
        .select(KEY, F.col(EVENT_TIME).alias("_target_time"))
    )
    joined = latest.select(KEY, EVENT_TIME).join(current, KEY, "left")
    row = joined.agg(
        F.count_if(F.col("_target_time") > F.col(EVENT_TIME)).alias("older"),
        F.count_if(F.col("_target_time") == F.col(EVENT_TIME)).alias("same"),
        F.count_if(F.col("_target_time").isNull() | (F.col("_target_time") < F.col(EVENT_TIME))).alias("missing"),
    ).collect()[0]
    return {name: int(row[name]) for name in ("older", "same", "missing")}


def table_version(spark: SparkSession, identifier: str) -> int:
    """The table's current version."""
    return int(last_commit(spark, identifier)["version"])


def read_audit(spark: SparkSession, audit: str, batch_id: str) -> dict | None:
    """The batch's audit record, or None."""
    if not table_exists(spark, audit):
        return None
    rows = read_table(spark, audit).where(F.col("batch_id") == batch_id).collect()
    return rows[0].asDict(recursive=True) if rows else None


def ensure_audit_table(spark: SparkSession, audit: str) -> None:
    """Create the audit table, or add the columns an older version of this code did not write."""
    retry_on_conflict(lambda: create_table_if_absent(spark, audit, AUDIT_SCHEMA), f"creating {audit}")
    current = read_table(spark, audit).schema
    missing = [f"`{f.name}` {f.dataType.simpleString()}" for f in AUDIT_SCHEMA.fields if f.name not in current.names]
    file_fields = current["files"].dataType.elementType.names
    missing += [
        f"files.element.`{f.name}` {f.dataType.simpleString()}" for f in AUDIT_FILE.fields if f.name not in file_fields
    ]
    if missing:
        retry_on_conflict(
            lambda: spark.sql(f"ALTER TABLE {table_sql(audit)} ADD COLUMNS ({', '.join(missing)})"),
            f"adding columns to {audit}",
        )


def upsert_audit(spark: SparkSession, record: dict, audit: str) -> None:
    """Write the batch's audit record in one commit, replacing an earlier one of the batch; absent fields are null."""
    ensure_audit_table(spark, audit)
    full = {name: record.get(name) for name in AUDIT_SCHEMA.fieldNames()}
    note = json.dumps({"batch_id": record["batch_id"], "status": record.get("status")})
    replace_batch(spark.createDataFrame([full], AUDIT_SCHEMA), audit, "batch_id", record["batch_id"], note)


def ensure_current_state_tables(spark: SparkSession, target: str, history: str) -> None:
    """Create the target and history tables, clustered by key, unless they exist."""
    for identifier in (target, history):
        retry_on_conflict(
            lambda identifier=identifier: create_table_if_absent(spark, identifier, TARGET_SCHEMA, cluster_by=KEY),
            f"creating {identifier}",
        )
