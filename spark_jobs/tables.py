"""Delta tables, whatever they hold: identifiers, reads, creation and new columns, replacing a partition,
retries on a concurrent commit, MERGE in SQL, and finding a commit by its condition.

A table is named by its catalog name (``catalog.schema.table``) or its path. The order tables' own
writes (the target MERGE, the history, the audit record) are in ``spark_jobs.load``."""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from delta import exceptions as delta_errors
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import StructField, StructType

from spark_jobs.contracts import Refusal
from spark_jobs.session import conf_get, spark_conf

LOG = logging.getLogger("order_tracking")
_NAME_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|`[^`]+`")
# What Delta raises when another transaction committed first: the losing commit wrote nothing.
COMMIT_CONFLICTS = tuple(
    getattr(delta_errors, name)
    for name in (
        "ConcurrentAppendException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentDeleteReadException",
        "ConcurrentTransactionException",
        "ConcurrentWriteException",
        "DeltaConcurrentModificationException",
        "MetadataChangedException",
        "ProtocolChangedException",
    )
)
# Two writers creating one table at once: the loser can find the folder before the first commit.
_CREATION_RACES = frozenset({"DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION"})


class TableNotCreated(RuntimeError):
    """``CREATE TABLE IF NOT EXISTS`` on a path left no Delta table there.

    Delta takes an existing folder for an existing path table, so a creator that comes while
    another's first commit is still being written does nothing; retried as a creation race. After
    the last attempt the folder holds files that are not a Delta table, and this is the error.
    """


COMMIT_ATTEMPTS = 8
_ESCAPED_LITERALS = "spark.sql.parser.escapedStringLiterals"
_LITERAL_SAFE = re.compile(r"[A-Za-z0-9 _.:-]")
_Result = TypeVar("_Result")


def is_path(identifier: str) -> bool:
    """True when the identifier names a path-based Delta table (it has a ``/`` or a scheme)."""
    return "/" in identifier or "://" in identifier


def table_sql(identifier: str) -> str:
    """The identifier as it goes into SQL: ``delta.`path``` or the validated catalog name."""
    if is_path(identifier):
        return "delta.`" + identifier.replace("`", "``") + "`"
    parts = identifier.split(".")
    if not 1 <= len(parts) <= 3 or not all(_NAME_PART.fullmatch(part) for part in parts):
        raise Refusal(f"not a table name or a path: {identifier!r}")
    return identifier


def sql_string(value: str) -> str:
    """A SQL string literal for ``value`` in which nothing is interpreted: every character but letters, digits,
    space and ``-_.:`` is written as a ``\\uXXXX`` escape (a character beyond the BMP as its UTF-16 pair).

    So no quote, backslash or ``${`` (Spark SQL's variable substitution, applied to the statement's text
    before it is parsed) is ever in the text, whatever ``value`` holds. Spark parses the escapes with its
    default settings (``spark.sql.parser.escapedStringLiterals`` off; ``merge_into`` pins it).
    """
    return "'" + "".join(char if _LITERAL_SAFE.fullmatch(char) else _escape(char) for char in value) + "'"


def _escape(char: str) -> str:
    units = char.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))


def read_table(spark: SparkSession, identifier: str, version: int | None = None) -> DataFrame:
    """Read a Delta table, optionally at a version."""
    as_of = f" VERSION AS OF {int(version)}" if version is not None else ""
    return spark.sql(f"SELECT * FROM {table_sql(identifier)}{as_of}")


def table_exists(spark: SparkSession, identifier: str) -> bool:
    """True when the Delta table exists."""
    if not is_path(identifier):
        return spark.catalog.tableExists(identifier)
    try:
        spark.sql(f"DESCRIBE DETAIL {table_sql(identifier)}").collect()
    except Exception as error:
        if (
            "DELTA_MISSING_DELTA_TABLE" in str(error)
            or "PATH_NOT_FOUND" in str(error)
            or "not a Delta table" in str(error)
        ):
            return False
        raise
    return True


def retry_on_conflict(commit: Callable[[], _Result], what: str, attempts: int = COMMIT_ATTEMPTS) -> _Result:
    """Run an idempotent Delta commit, again when a concurrent writer won the race (bounded, with jitter).

    Only for commits that are safe to repeat: a conflicting commit writes nothing, and running it
    again against the newer version gives the same result as running it alone.
    """
    for attempt in range(1, attempts + 1):
        try:
            return commit()
        except Exception as conflict:
            if attempt == attempts or not _is_conflict(conflict):
                raise
            pause = min(0.5 * 2 ** (attempt - 1), 8.0) * random.uniform(0.5, 1.5)  # jitter only
            LOG.info(
                "%s met a concurrent commit (%s); trying again in %.1f s (attempt %d of %d)",
                what,
                type(conflict).__name__,
                pause,
                attempt + 1,
                attempts,
            )
            time.sleep(pause)
    raise AssertionError("unreachable")


def _is_conflict(error: Exception) -> bool:
    if isinstance(error, (*COMMIT_CONFLICTS, TableNotCreated)):
        return True
    return error_condition(error) in _CREATION_RACES


def error_condition(error: Exception) -> str | None:
    """A Spark error's condition: ``getCondition`` on PySpark 4, ``getErrorClass`` on 3.5 (DBR 15.4)."""
    for reader in ("getCondition", "getErrorClass"):
        if callable(getattr(error, reader, None)):
            return getattr(error, reader)()
    return None


def column_definitions(fields: list[StructField]) -> str:
    """Columns as a CREATE TABLE or ADD COLUMNS clause lists them: each name quoted, with its type."""
    return ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in fields)


def create_table_if_absent(
    spark: SparkSession,
    identifier: str,
    schema: StructType,
    properties: dict[str, str],
    cluster_by: str | None = None,
    partition_by: str | None = None,
) -> None:
    """Create a Delta table with ``schema`` and ``properties`` unless it exists (clustered by ``cluster_by`` or
    partitioned by ``partition_by`` if given); retried when another writer creates it at the same time.

    A path left without a Delta table raises ``TableNotCreated`` once the tries are spent (another
    creator's first commit was under way each time, or the folder holds other files).
    """
    layout = f" CLUSTER BY (`{cluster_by}`)" if cluster_by else ""
    layout += f" PARTITIONED BY (`{partition_by}`)" if partition_by else ""
    listed = ", ".join(f"{sql_string(key)} = {sql_string(value)}" for key, value in properties.items())

    def create() -> None:
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {table_sql(identifier)} ({column_definitions(schema.fields)}) "
            f"USING delta{layout} TBLPROPERTIES ({listed})"
        )
        if is_path(identifier) and not table_exists(spark, identifier):
            raise TableNotCreated(f"{identifier} holds files but no Delta table; CREATE TABLE IF NOT EXISTS left it so")

    retry_on_conflict(create, f"creating {identifier}")


def add_missing_columns(spark: SparkSession, identifier: str, schema: StructType) -> list[str]:
    """Evolve a table to ``schema``: add each top-level column it lacks (nullable, appended last) in one
    ``ALTER TABLE``; return their names. Retried on a concurrent change, the columns looked up again."""

    def add() -> list[str]:
        present = set(read_table(spark, identifier).schema.names)
        missing = [field for field in schema.fields if field.name not in present]
        if missing:
            spark.sql(f"ALTER TABLE {table_sql(identifier)} ADD COLUMNS ({column_definitions(missing)})")
            LOG.info("%s: added the columns %s", identifier, ", ".join(field.name for field in missing))
        return [field.name for field in missing]

    return retry_on_conflict(add, f"adding columns to {identifier}")


def replace_batch(
    df: DataFrame,
    identifier: str,
    batch_column: str,
    batch_id: str,
    commit_note: str,
    table_properties: dict[str, str] | None = None,
) -> None:
    """Atomically replace one batch's rows, noting ``commit_note`` in the commit.

    A table this creates is partitioned by ``batch_column`` and gets ``table_properties``: replacing a
    batch then touches only its own partition, so writers of other batches never conflict with it. Two
    writers creating the table at once are retried.
    """

    def commit() -> None:
        writer = (
            df.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"{batch_column} = {sql_string(batch_id)}")
            .option("userMetadata", commit_note)
        )
        if not table_exists(df.sparkSession, identifier):
            writer = writer.partitionBy(batch_column).options(**(table_properties or {}))
        if is_path(identifier):
            writer.save(identifier)
        else:
            writer.saveAsTable(identifier)

    retry_on_conflict(commit, f"replacing batch {batch_id} in {identifier}")


def merges_marked(spark: SparkSession, identifier: str, marker: str, search: int = 100) -> list[dict[str, str]]:
    """The operation metrics of each MERGE commit, among the table's last ``search``, whose condition holds
    ``marker`` (``version_of_merge`` says why a condition can mark a commit). The table must exist."""
    rows = spark.sql(f"DESCRIBE HISTORY {table_sql(identifier)} LIMIT {int(search)}").collect()
    return [dict(row["operationMetrics"] or {}) for row in rows if _merge_marked(row, marker)]


def _merge_marked(commit: Row, marker: str) -> bool:
    """True when a ``DESCRIBE HISTORY`` row is a MERGE whose condition holds ``marker``."""
    return commit["operation"] == "MERGE" and marker in (commit["operationParameters"] or {}).get("predicate", "")


def table_version(spark: SparkSession, identifier: str) -> int:
    """The table's current version."""
    return int(spark.sql(f"DESCRIBE HISTORY {table_sql(identifier)} LIMIT 1").collect()[0]["version"])


def merge_into(target: str, source: DataFrame, clauses: str) -> Row:
    """MERGE ``source`` (as ``s``) into ``target`` (as ``t``) with ``clauses`` (``ON ... WHEN ...``); its metrics.

    In SQL, not Delta's ``DeltaTable`` API, so that it runs on Spark Connect (Databricks serverless)
    without Delta's Connect plugin. A value from data in ``clauses`` must be a ``sql_string`` literal
    (Delta's MERGE binds no query parameters). The metrics row has ``num_inserted_rows`` and
    ``num_updated_rows``.
    """
    spark = source.sparkSession
    view = f"merge_source_{uuid.uuid4().hex}"
    source.createOrReplaceTempView(view)
    # ``sql_string`` writes for Spark's default escapes: parse the statement with them, whatever the session says.
    escapes = {_ESCAPED_LITERALS: "false"} if conf_get(spark, _ESCAPED_LITERALS, "false") == "true" else {}
    try:
        with spark_conf(spark, escapes):
            return spark.sql(f"MERGE INTO {table_sql(target)} AS t USING {view} AS s {clauses}").first()
    finally:
        spark.catalog.dropTempView(view)


def version_of_merge(spark: SparkSession, identifier: str, marker: str, search: int = 100) -> tuple[int | None, int]:
    """The version of the newest MERGE commit among the table's last ``search`` whose condition holds
    ``marker`` (or None), and the table's latest version.

    Delta records a MERGE's condition in its commit's ``operationParameters``: a MERGE whose condition
    compares a source column with a unique literal is found by that literal, with no session option
    (serverless compute refuses the one that tags commits).
    """
    # The MERGE's commit is nearly always the newest: look at that one alone first (one commit file read).
    for limit in (1, int(search)):
        rows = spark.sql(f"DESCRIBE HISTORY {table_sql(identifier)} LIMIT {limit}").collect()
        found = next((int(row["version"]) for row in rows if _merge_marked(row, marker)), None)
        if found is not None or len(rows) < limit:
            break
    return found, int(rows[0]["version"])
