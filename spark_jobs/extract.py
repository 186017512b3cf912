"""Reading a batch: input URIs normalised, each file's head read on the driver, CSV records read once by Spark."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.contracts import Manifest
from spark_jobs.headers import HEAD_BYTES, FileHeader, file_header
from spark_jobs.schema import SOURCE_FILE

RAW_TEXT = "_raw_text"  # a malformed record's text as read (null for a record of the header's width)
RECORD_ID = "_record_id"  # increases by one per record within a file: its line number less the file's first id
_CORRUPT = "_corrupt_record"
_GLOB_CHARS = re.compile(r"([\[\]{}*?\\])")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEAD_READERS = 16  # files whose head the driver reads at once (object stores answer slowly, not busily)


class InputError(ValueError):
    """An input the job cannot read: missing, or a directory. Raised before anything is written."""


@dataclass(frozen=True)
class InputFile:
    """One input file: the URI as given, the path Spark reports for it, its size, generation and header."""

    uri: str
    path: str
    size: int
    header: FileHeader
    generation: str | None = None


def normalise_uri(uri: str) -> str:
    """The URI as Spark's ``_metadata.file_path`` names the file: ``file:/abs/path`` locally, else unchanged.

    A relative or absolute local path, ``file:/p``, ``file:///p`` and ``file://localhost/p`` all become
    ``file:/p``; ``gs://``, ``dbfs:`` and other schemes are kept as they are.
    """
    if not _SCHEME.match(uri):
        return "file:" + os.path.abspath(uri)
    if uri.startswith("file:"):
        path = re.sub(r"^file:(//localhost|//)?", "", uri)
        return "file:" + os.path.normpath("/" + path.lstrip("/"))
    return uri


def escape_glob(path: str) -> str:
    """Escape Hadoop glob characters so that a file name like ``a[1].csv`` is read literally."""
    return _GLOB_CHARS.sub(r"\\\1", path)


def has_driver_jvm(spark: SparkSession) -> bool:
    """False on Spark Connect (Databricks serverless compute), where the driver's JVM is out of reach."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # Spark Connect's client libraries are absent: a classic session
        return True
    return not isinstance(spark, ConnectSession)


def _read_head(spark: SparkSession, path: str) -> tuple[int, bytes]:
    """Size and first ``HEAD_BYTES`` bytes of a file (local, gs://, dbfs:, a volume); InputError if absent."""
    return _read_head_hadoop(spark, path) if has_driver_jvm(spark) else _read_head_spark(spark, path)


def _read_head_hadoop(spark: SparkSession, path: str) -> tuple[int, bytes]:
    """Through the driver JVM's Hadoop file system: only the first bytes are read."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    try:
        status = fs.getFileStatus(hadoop_path)
    except Exception as error:
        if "FileNotFoundException" in str(error):
            raise InputError(f"input file not found: {path}") from None
        raise
    if status.isDirectory():
        raise InputError(f"input is a directory, not a file: {path}")
    size = int(status.getLen())
    if size == 0:
        return 0, b""
    # Java 8 APIs only: classic clusters before DBR 16 run JDK 8 (``InputStream.readNBytes`` is Java 11).
    # py4j passes byte arrays by value, so the head is read into a JVM buffer through a channel (NIO, Java
    # 1.4), whose array comes back as bytes; a read returns what the stream has, so it loops until full.
    head = jvm.java.nio.ByteBuffer.allocate(min(size, HEAD_BYTES))
    stream = fs.open(hadoop_path)
    try:
        channel = jvm.java.nio.channels.Channels.newChannel(stream)
        while head.hasRemaining() and channel.read(head) >= 0:
            pass
    finally:
        stream.close()
    return size, bytes(head.array())[: head.position()]


def _read_head_spark(spark: SparkSession, path: str) -> tuple[int, bytes]:
    """Through Spark's ``binaryFile`` source, for Spark Connect: it reads the whole file to return its head.

    A file path lists one file; a directory lists what it holds, under other paths.
    """
    try:
        listed = (
            spark.read.format("binaryFile")
            .load(escape_glob(path))
            .select("path", "length", F.substring("content", 1, HEAD_BYTES).alias("head"))
            .collect()
        )
    except AnalysisException as error:
        if "PATH_NOT_FOUND" in str(error):
            raise InputError(f"input file not found: {path}") from None
        raise
    if len(listed) != 1 or normalise_uri(unquote(listed[0]["path"])) != path:
        raise InputError(f"input is a directory, not a file: {path}")
    return int(listed[0]["length"]), bytes(listed[0]["head"] or b"")


def read_input_files(spark: SparkSession, items: Sequence[dict]) -> list[InputFile]:
    """Normalise each manifest item's URI and read its size and header; fail before any write if one is missing."""
    paths = [normalise_uri(item["uri"]) for item in items]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise InputError(f"the batch names a file more than once: {', '.join(duplicates)}")
    with ThreadPoolExecutor(max_workers=min(_HEAD_READERS, len(paths) or 1)) as pool:
        heads = list(pool.map(lambda path: _read_head(spark, path), paths))
    return [
        InputFile(
            uri=item["uri"],
            path=path,
            size=size,
            header=file_header(head, size),
            generation=None if item.get("generation") is None else str(item["generation"]),
        )
        for item, path, (size, head) in zip(items, paths, heads, strict=True)
    ]


def _schema_names(header_cells: tuple[str, ...]) -> list[str]:
    """Read-schema names: the header's own fields, so Spark's header check agrees with it and stays quiet.

    Positional names (``_c0`` ...) where the fields could not name a schema: blank, or equal but for case.
    """
    folded = [cell.lower() for cell in header_cells]
    if all(header_cells) and len(set(folded)) == len(folded):
        return list(header_cells)
    return [f"_c{i}" for i in range(len(header_cells))]


def read_csv_records(spark: SparkSession, paths: list[str], header_cells: tuple[str, ...]) -> DataFrame:
    """Read files that share a header, in one scan, as string cells named ``_c0``, ``_c1`` ... by position.

    The header line is skipped. Spark keeps the raw text (``_raw_text``) only of a record whose field
    count differs from the header's. Quoted line breaks are allowed (``multiLine``), so a file is never
    split: its records keep their order within one task, which ``_record_id`` follows.
    """
    names = _schema_names(header_cells)
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in names] + [T.StructField(_CORRUPT, T.StringType())]
    )
    return (
        spark.read.schema(schema)
        .options(
            header=True,
            enforceSchema=True,
            multiLine=True,
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=_CORRUPT,
            quote='"',
            escape='"',
            encoding="UTF-8",
        )
        .csv([escape_glob(path) for path in paths])
        .select(
            *[F.col("`" + name.replace("`", "``") + "`").alias(f"_c{i}") for i, name in enumerate(names)],
            F.col(_CORRUPT).alias(RAW_TEXT),
            # Spark reports the path URL-encoded; name it as the file is named ("+" is literal in a path).
            F.url_decode(F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B"))).alias(SOURCE_FILE),
            F.monotonically_increasing_id().alias(RECORD_ID),
        )
    )


def read_manifest(spark: SparkSession, uri: str) -> Manifest:
    """Read a batch manifest (``spark_jobs.contracts.Manifest``) through Hadoop's file system."""
    text = spark.read.text(uri, wholetext=True).collect()[0][0]
    return Manifest.from_json(text, f"manifest {uri}")
