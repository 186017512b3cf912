"""Table identifiers: a catalog name (``catalog.schema.table``) or a path-based Delta table."""

from __future__ import annotations

import re

from pyspark.sql import DataFrame, SparkSession

_NAME_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^`[^`]+`$")
_BATCH_ID = re.compile(r"^[\w.:+@=\- ]{1,250}$")


def is_path(identifier: str) -> bool:
    """True when the identifier names a path-based Delta table (it has a ``/`` or a scheme)."""
    return "/" in identifier or "://" in identifier


def table_sql(identifier: str) -> str:
    """The identifier as it goes into SQL: ``delta.`path``` or the validated catalog name."""
    if is_path(identifier):
        return "delta.`" + identifier.replace("`", "``") + "`"
    parts = identifier.split(".")
    if not 1 <= len(parts) <= 3 or not all(_NAME_PART.match(part) for part in parts):
        raise ValueError(f"not a table name or a path: {identifier!r}")
    return identifier


def sql_string(value: str) -> str:
    """A SQL string literal for ``value``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_batch_id(batch_id: str) -> str:
    """Return the batch id if it is safe to store and filter on, else raise ``ValueError``."""
    if not _BATCH_ID.match(batch_id):
        raise ValueError(f"batch id {batch_id!r} must be 1-250 characters of letters, digits, space and _.:+@=-")
    return batch_id


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


def replace_batch(df: DataFrame, identifier: str, batch_column: str, batch_id: str, commit_note: str) -> None:
    """Atomically replace one batch's rows, noting ``commit_note`` in the commit.

    A table this creates is partitioned by ``batch_column``: replacing a batch then touches only its own
    partition, without reading other batches' files. A table made unpartitioned by an earlier version
    keeps its layout.
    """
    writer = (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{batch_column} = {sql_string(batch_id)}")
        .option("userMetadata", commit_note)
    )
    if not table_exists(df.sparkSession, identifier):
        writer = writer.partitionBy(batch_column)
    if is_path(identifier):
        writer.save(identifier)
    else:
        writer.saveAsTable(identifier)


def last_commit(spark: SparkSession, identifier: str) -> dict:
    """The newest entry of the table's history (version, operation, metrics)."""
    row = spark.sql(f"DESCRIBE HISTORY {table_sql(identifier)} LIMIT 1").collect()[0]
    return row.asDict(recursive=True)
