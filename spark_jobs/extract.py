"""Reading order-tracking CSV files and batch manifests."""

from __future__ import annotations

import json
import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.schema import MAX_COLUMNS, SOURCE_FILE

CELLS = tuple(f"_c{i}" for i in range(MAX_COLUMNS))
RAW_TEXT = "_raw_text"
RECORD_ID = "_record_id"
_CORRUPT = "_corrupt_record"
_GLOB_CHARS = re.compile(r"([\[\]{}*?\\])")

RAW_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType()) for name in CELLS] + [T.StructField(_CORRUPT, T.StringType())]
)


def escape_glob(path: str) -> str:
    """Escape Hadoop glob characters so that a file name like ``a[1].csv`` is read literally."""
    return _GLOB_CHARS.sub(r"\\\1", path)


def read_raw_records(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Read CSV files, header included, as untyped records in one pass.

    Every file is read with ``MAX_COLUMNS`` string columns and no header, so files whose headers
    differ (order, extra columns) share one scan; headers are mapped by name afterwards. Because a
    record has fewer fields than the read schema, Spark keeps its raw text in ``_corrupt_record``,
    which is what the rejects table stores. ``_record_id`` follows file order within a task
    (multi-line files are never split), which gives each record its line number.
    """
    return (
        spark.read.schema(RAW_SCHEMA)
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
            *CELLS,
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
