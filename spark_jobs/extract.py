"""Reading order-tracking CSV files and batch manifests."""

from __future__ import annotations

import json
import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.schema import MAX_COLUMNS, SOURCE_FILE

RAW_TEXT = "_raw_text"
RECORD_ID = "_record_id"
_CORRUPT = "_corrupt_record"
_GLOB_CHARS = re.compile(r"([\[\]{}*?\\])")


def cell_names(columns: int) -> tuple[str, ...]:
    """The names of the first ``columns`` untyped CSV fields: ``_c0``, ``_c1``, ..."""
    return tuple(f"_c{i}" for i in range(columns))


def raw_cells(raw: DataFrame) -> tuple[str, ...]:
    """The untyped field columns a ``read_raw_records`` frame holds."""
    return cell_names(sum(1 for name in raw.columns if re.fullmatch(r"_c\d+", name)))


def escape_glob(path: str) -> str:
    """Escape Hadoop glob characters so that a file name like ``a[1].csv`` is read literally."""
    return _GLOB_CHARS.sub(r"\\\1", path)


def read_raw_records(spark: SparkSession, paths: list[str], columns: int = MAX_COLUMNS) -> DataFrame:
    """Read CSV files, header included, as untyped records in one pass.

    Every file is read with ``columns`` string columns and no header, so files whose headers differ
    (order, extra columns) share one scan; headers are mapped by name afterwards. The stage job reads
    one column more than the widest header (at most ``MAX_COLUMNS``): each column costs time on every
    record. Because a record has fewer fields than the read schema, Spark keeps its raw text in
    ``_corrupt_record``, which is what the rejects table stores. ``_record_id`` follows file order
    within a task (multi-line files are never split), which gives each record its line number.
    """
    cells = cell_names(columns)
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in cells] + [T.StructField(_CORRUPT, T.StringType())]
    )
    return (
        spark.read.schema(schema)
        .options(
            header=False,
            multiLine=True,
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=_CORRUPT,
            quote='"',
            escape='"',
            encoding="UTF-8",
            enforceSchema=True,
        )
        .csv([escape_glob(path) for path in paths])
        .select(
            *cells,
            F.regexp_replace(F.col(_CORRUPT), r"\r?\n$", "").alias(RAW_TEXT),
            # Spark reports the path URL-encoded; store it as the file is named ("+" is literal in a path).
            F.url_decode(F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B"))).alias(SOURCE_FILE),
            F.monotonically_increasing_id().alias(RECORD_ID),
        )
    )


def read_manifest(spark: SparkSession, uri: str) -> dict:
    """Read a batch manifest: ``{"batch_id": ..., "files": [{"uri", "size", "generation"}, ...]}``."""
    text = spark.read.text(uri, wholetext=True).collect()[0][0]
    manifest = json.loads(text)
    if not isinstance(manifest.get("files"), list):
        raise ValueError(f"manifest {uri} has no 'files' list")
    return manifest
