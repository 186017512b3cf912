"""Reading a batch: input URIs normalised, each file's head read on the driver, CSV records read once by Spark."""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import reduce
from urllib.parse import unquote

from pyspark import __version__ as _PYSPARK_VERSION
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.contracts import CHANGED_SINCE_LISTED, Manifest, ManifestFile, Refusal
from spark_jobs.headers import (
    EMPTY_FILE,
    HEAD_BYTES,
    FileHeader,
    compression_of,
    count_records,
    file_header,
    quote_left_open,
    quote_open_at_end,
)
from spark_jobs.schema import MAX_FIELD_CHARS, MAX_RECORD_FIELDS, SOURCE_FILE

LOG = logging.getLogger("order_tracking")
RAW_TEXT = "_raw_text"  # a malformed record's text as read (null for a record of the header's width)
BYTES_VALID = "_bytes_valid"  # every cell of the record is valid UTF-8 (a replaced byte and a real U+FFFD differ)
RECORD_ID = "_record_id"  # increases by one per record within a file: its line number less the file's first id
LAST_FIELD_BYTES = "_last_field_bytes"  # the last field as read (unquoted), in bytes: ``quote_open_at_end``
_CORRUPT = "_corrupt_record"
# Spark's file sources expand a path holding ``[ ] { } * ? \\`` as a glob unless told not to (the option
# its own streaming source reads exact files with): a name is read as written, whatever it holds.
EXACT_PATHS = "__globPaths__"
_GLOB_CHARS = re.compile(r"[\[\]{}*?\\]")  # what makes Hadoop's Path look like a glob (SparkHadoopUtil.isGlobPath)
_READER_COLUMNS = frozenset({_CORRUPT, "_metadata"})  # the reader's own names, as Spark folds them
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?")
# The suffixes Hadoop's CompressionCodecFactory decompresses by (its built-in codecs; a test asks the JVM).
DECOMPRESSED_SUFFIXES = (".gz", ".deflate", ".bz2", ".lz4", ".snappy", ".zst")
COUNTED_BYTES = 64 * 1024 * 1024  # the most of a file the driver reads to count the records of a file Spark does not
_SPARK_4 = int(_PYSPARK_VERSION.split(".")[0]) >= 4
_HEAD_READERS = 16  # files whose head the driver reads at once (object stores answer slowly, not busily)


class InputError(Refusal):
    """A batch the job cannot read as given (a file named twice). Raised before anything is written."""


class FileFault(Exception):
    """A failure that belongs to one file: the file is rejected whole with this reason, and the batch goes on."""


GONE = "the file is gone: moved or deleted since it was listed"
UNPARSABLE = (
    f"the reader cannot parse it: a field longer than {MAX_FIELD_CHARS:,} characters or a record of more than "
    f"{MAX_RECORD_FIELDS:,} fields (the reader's limits)"
)
# Failures of one file's content or presence, known by a text their error carries through whichever
# layer wraps it (Hadoop, Spark, py4j, the GCS connector), and the reason the file is rejected with.
# Any other failure belongs to the batch's infrastructure (Spark, Delta, storage) and fails the job.
# Univocity's parser raises TextParsingException over either limit; which limit its message names is not
# reliable (once the JVM has thrown the underlying exception often, it drops the exception's message).
_FILE_FAULTS = (
    (("FileNotFoundException", "PATH_NOT_FOUND"), GONE),
    (("TextParsingException",), UNPARSABLE),
    (
        ("URISyntaxException",),
        "its name is not one this file system can address (Hadoop reads a name as a URI): rename it",
    ),
    (
        ("GZIP encoded",),
        "stored gzip-encoded (Content-Encoding: gzip), which the reader does not decompress: upload it uncompressed",
    ),
)


def file_fault(error: BaseException) -> str | None:
    """The reason to reject a file whole when ``error`` belongs to one file's content or presence, else None."""
    if isinstance(error, FileFault):
        return str(error)
    text = str(error)
    return next((reason for needles, reason in _FILE_FAULTS if any(n in text for n in needles)), None)


@dataclass(frozen=True)
class InputFile:
    """One input file: the URI as given, the path Spark reports for it, its size, generation and header,
    and its modification time (epoch milliseconds) when its head was read."""

    uri: str
    path: str
    size: int
    header: FileHeader
    generation: int | None = None
    modified: int | None = None
    rows: int | None = None  # data records counted on the driver, for a file Spark does not read (None: not counted)
    quote_left_open: bool = False  # its bytes end inside a quoted field (checked where its head is the whole file)

    def rejected(self, reason: str) -> InputFile:
        """This file rejected whole for ``reason``: its header keeps its text but no columns, so no record is used."""
        return replace(self, header=FileHeader(names=(), error=reason, text=self.header.text))


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


def unaddressable(path: str) -> str | None:
    """Why Hadoop cannot read the object ``path`` names, or None: an empty, ``.`` or ``..`` segment in its
    name, which Hadoop's ``Path`` normalises away, so that it would name another object or none."""
    name = _AUTHORITY.sub("", path)
    segments = name.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in segments):
        return "its name holds an empty, '.' or '..' path segment (such as '//'), which Hadoop file systems cannot read"
    return None


def has_driver_jvm(spark: SparkSession) -> bool:
    """False on Spark Connect (Databricks serverless compute), where the driver's JVM is out of reach."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # Spark Connect's client libraries are absent: a classic session
        return True
    return not isinstance(spark, ConnectSession)


def refused_name(path: str) -> str | None:
    """Why Spark's file reader would not read the file ``path`` names as it is, or None: a name its file index
    hides, or one whose suffix makes Hadoop decompress it
    (``CompressionCodecFactory``, by name, whatever the bytes are). The contract takes uncompressed CSV."""
    name = path.rsplit("/", 1)[-1]
    # Spark's file index keeps only data paths (PartitioningAwareFileIndex.isDataPath), after listing with
    # HadoopFSUtils.shouldFilterOutPathName: together, these names are never read.
    if (name.startswith("_") and "=" not in name) or name.startswith("."):
        return f"its name starts with '{name[0]}', which Spark's file reader skips as hidden: rename it"
    if name.endswith("._COPYING_"):
        return "its name ends with '._COPYING_' (a copy in progress), which Spark's file reader skips: rename it"
    suffix = next((suffix for suffix in DECOMPRESSED_SUFFIXES if name.endswith(suffix)), None)
    if suffix:
        return (
            f"its name ends with '{suffix}', so Spark's reader would decompress it whatever its bytes are; "
            "the contract takes uncompressed CSV: upload it decompressed, named without that suffix"
        )
    return None


def read_head(spark: SparkSession, path: str, head_bytes: int = HEAD_BYTES, offset: int = 0) -> tuple[int, int, bytes]:
    """Size, modification time (epoch ms) and first ``head_bytes`` bytes of a file (local, gs://, dbfs:, a
    volume), or those from ``offset`` on. ``FileFault`` when it is gone or a directory."""
    read = _read_head_hadoop if has_driver_jvm(spark) else _read_head_spark
    return read(spark, path, head_bytes, offset)


def _read_head_hadoop(spark: SparkSession, path: str, head_bytes: int, offset: int) -> tuple[int, int, bytes]:
    """Through the driver JVM's Hadoop file system: only the bytes asked for are read."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    try:
        status = fs.getFileStatus(hadoop_path)
    except Exception as error:
        if "FileNotFoundException" in str(error):
            raise FileFault(GONE) from None
        raise
    if status.isDirectory():
        raise FileFault("a directory, not a file")
    size, modified = int(status.getLen()), int(status.getModificationTime())
    if size <= offset or head_bytes == 0:
        return size, modified, b""
    # Java 8 APIs only: classic clusters before DBR 16 run JDK 8 (``InputStream.readNBytes`` is Java 11).
    # py4j passes byte arrays by value, so the head is read into a JVM buffer through a channel (NIO, Java
    # 1.4), whose array comes back as bytes; a read returns what the stream has, so it loops until full.
    head = jvm.java.nio.ByteBuffer.allocate(min(size - offset, head_bytes))
    stream = fs.open(hadoop_path)
    try:
        stream.seek(offset)
        channel = jvm.java.nio.channels.Channels.newChannel(stream)
        while head.hasRemaining() and channel.read(head) >= 0:
            pass
    finally:
        stream.close()
    return size, modified, bytes(head.array())[: head.position()]


def _read_head_spark(spark: SparkSession, path: str, head_bytes: int, offset: int) -> tuple[int, int, bytes]:
    """Through Spark's ``binaryFile`` source, for Spark Connect: it reads the whole file to return its head
    (and none of it for ``head_bytes=0``). A file path lists one file; a directory lists what it holds,
    under other paths.
    """
    head = F.substring("content", offset + 1, head_bytes) if head_bytes else F.lit(None).cast("binary")
    try:
        listed = (
            spark.read.format("binaryFile")
            .option(EXACT_PATHS, "false")
            .load(path)
            .select("path", "length", F.unix_millis("modificationTime").alias("modified"), head.alias("head"))
            .collect()
        )
    except AnalysisException as error:
        if "PATH_NOT_FOUND" in str(error):
            raise FileFault(GONE) from None
        raise
    if len(listed) != 1 or normalise_uri(unquote(listed[0]["path"])) != path:
        raise FileFault("a directory, not a file")
    return int(listed[0]["length"]), int(listed[0]["modified"]), bytes(listed[0]["head"] or b"")


def _read_where_it_is(spark: SparkSession, path: str, moved_to: list[str]) -> tuple[str, tuple[int, int, bytes]]:
    """The file's path and head where it is: at ``path``, or, once gone from there, where its run moves it
    (a re-run of a batch whose files were archived reads them in the archive)."""
    try:
        return path, read_head(spark, path)
    except FileFault as fault:
        if str(fault) != GONE:
            raise
        for moved in moved_to:
            with contextlib.suppress(FileFault):
                found = read_head(spark, moved)
                LOG.info("%s is no longer where it was listed; reading it where its run moved it: %s", path, moved)
                return moved, found
        raise


def _inspect(spark: SparkSession, item: dict, path: str) -> InputFile:
    """A manifest item's size, modification time and header; rejected whole if it cannot be read, or
    no longer has the size it was listed with."""
    listed = ManifestFile(**item)
    found = InputFile(uri=listed.uri, path=path, size=listed.size or 0, header=EMPTY_FILE, generation=listed.generation)
    problem = unaddressable(path)
    if problem:
        return found.rejected(problem)
    moved_to = [normalise_uri(uri) for uri in listed.locations[1:]]
    try:
        path, (size, modified, head) = _read_where_it_is(spark, path, moved_to)
    except Exception as error:
        reason = file_fault(error)
        if reason is None:
            raise
        return found.rejected(refused_name(path) or reason)  # Spark Connect cannot list a hidden name either
    found = replace(found, path=path, size=size, modified=modified, header=file_header(head, size))
    refusal = _refusal(listed.size, size, path, head)
    if refusal:
        found = found.rejected(refusal)
    if found.header.cells:
        return replace(found, quote_left_open=len(head) >= size and quote_left_open(head))
    # Spark will not read it: its records are counted here, so that every row of the batch is accounted for.
    return counted(spark, found, head)


def _refusal(listed_size: int | None, size: int, path: str, head: bytes) -> str | None:
    """Why a file that could be read is still not to be read by Spark: changed since it was listed, a name the
    reader hides or decompresses by, or compressed content."""
    if listed_size is not None and listed_size != size:
        return f"{CHANGED_SINCE_LISTED}: {listed_size} bytes then, {size} now"
    compression = compression_of(head)
    if compression:
        return f"{compression}-compressed content: the contract takes uncompressed CSV; upload it decompressed"
    return refused_name(path)


def counted(spark: SparkSession, item: InputFile, head: bytes = b"") -> InputFile:
    """A file Spark does not read (rejected whole), with its data records counted on the driver from its bytes
    (``head`` when it is the whole file); not counted past ``COUNTED_BYTES`` or when it cannot be read."""
    if len(head) < item.size:
        if item.size > COUNTED_BYTES:
            return item
        try:
            head = read_head(spark, item.path, item.size)[2]
        except FileFault:
            return item
    return replace(item, rows=count_records(head))


def read_input_files(spark: SparkSession, items: Sequence[dict]) -> list[InputFile]:
    """Normalise each manifest item's URI and read its size and header. A file that cannot be read is
    rejected whole; a file named twice fails the batch before any write."""
    paths = [normalise_uri(item["uri"]) for item in items]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise InputError(f"the batch names a file more than once: {', '.join(duplicates)}")
    with ThreadPoolExecutor(max_workers=min(_HEAD_READERS, len(paths) or 1)) as pool:
        return list(pool.map(lambda item, path: _inspect(spark, item, path), items, paths))


def checked_after_read(spark: SparkSession, files: list[InputFile], last_fields: dict[str, int]) -> list[InputFile]:
    """The files again, each one whose records were read rejected whole if it is gone or has another size or
    modification time than when its head was read (its header and records may be of different versions),
    and each one longer than its head marked ``quote_left_open`` when its tail shows the last field of its
    last record (``last_fields``: bytes, by path) to be a quote opened and never closed."""

    def recheck(item: InputFile) -> InputFile:
        if not item.header.names:
            return item
        last_field = last_fields.get(item.path)
        # The head was the whole file where it is no longer than HEAD_BYTES: its bytes were checked then.
        tail = min(item.size, 2 * last_field + 2) if last_field is not None and item.size > HEAD_BYTES else 0
        try:
            size, modified, data = read_head(spark, item.path, head_bytes=tail, offset=item.size - tail)
        except FileFault:
            return item.rejected("gone while it was read")
        if (size, modified) != (item.size, item.modified):
            return item.rejected(f"changed while it was read: {item.size} bytes then, {size} now")
        if tail and quote_open_at_end(data, last_field):
            return replace(item, quote_left_open=True)
        return item

    with ThreadPoolExecutor(max_workers=min(_HEAD_READERS, len(files) or 1)) as pool:
        return list(pool.map(recheck, files))


def _schema_names(header_cells: tuple[str, ...]) -> list[str]:
    """Read-schema names: the header's own fields, so Spark's header check agrees with it and stays quiet.

    Positional names (``_c0`` ...) where the fields could not name a schema: blank, equal but for case, or
    one of the reader's own columns (its corrupt-record column, the hidden ``_metadata``), which a data
    column of that name would collide with or shadow (Spark resolves names without case).
    """
    # As the reader sees them: it reads one character a byte (``read_csv_records``).
    as_read = [cell.encode("utf-8").decode("iso-8859-1") for cell in header_cells]
    distinct = all(len({cell.lower() for cell in cells}) == len(cells) for cells in (header_cells, as_read))
    reserved = _READER_COLUMNS.intersection(cell.lower() for cell in header_cells)
    if all(header_cells) and distinct and not reserved:
        return as_read
    return [f"_c{i}" for i in range(len(header_cells))]


def read_csv_records(spark: SparkSession, files: list[InputFile], header: FileHeader) -> DataFrame:
    """Read files that share a header, in one scan, as string cells named ``_c0``, ``_c1`` ... by position.

    The header line is skipped. Records end at the header's line ending (``FileHeader.line_break``), never
    at one Spark's reader guesses from a file's first line: LF, CRLF and LF-only rows mix in one file,
    and a quoted line break is kept as written. Spark keeps the raw text (``_raw_text``) only of a record whose field
    count differs from the header's. Quoted line breaks are allowed (``multiLine``), so a file is never
    split: its records keep their order within one task, which ``_record_id`` follows. A field longer
    than ``MAX_FIELD_CHARS`` or a record wider than ``MAX_RECORD_FIELDS`` fails the read (``file_fault``
    knows it); the reader sets aside a buffer of the field limit per file, so the limit it is given is
    never above the largest file's size, which no field of these files can exceed.
    """
    field_chars = min(MAX_FIELD_CHARS, max(item.size for item in files) + 1)
    names = _schema_names(header.cells)
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in names] + [T.StructField(_CORRUPT, T.StringType())]
    )
    reader = spark.read.schema(schema).options(
        header=True,
        enforceSchema=True,
        multiLine=True,
        lineSep=header.line_break,
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=_CORRUPT,
        quote='"',
        escape='"',
        # Bytes as read, one character each: each cell is decoded as UTF-8 below, where invalid bytes can be
        # told from a real U+FFFD (a UTF-8 read replaces them with U+FFFD). The quote, the comma and the line
        # breaks are ASCII, so the records are those of a UTF-8 read.
        encoding="ISO-8859-1",
        maxCharsPerColumn=field_chars,
        maxColumns=MAX_RECORD_FIELDS,
    )
    # One read lists many paths when none looks like a glob; a path that does is read alone, as written:
    # with globbing off, Spark's DataSource.checkAndGlobPathIfNecessary expands each such path to every
    # path of its read (Spark 3.5 to 4.2), which would read the other files again.
    paths = [item.path for item in files]
    plain = [path for path in paths if not _GLOB_CHARS.search(path)]
    reads = ([plain] if plain else []) + [[path] for path in paths if _GLOB_CHARS.search(path)]
    cells = [_decoded(F.col(_quoted(name))) for name in names]
    if cells:
        # A CR that ends a record's last field is its line ending's (CRLF rows, read at LF).
        last_text, last_valid = cells[-1]
        cells[-1] = (F.regexp_replace(last_text, "\r\\z", ""), last_valid)
    columns = [
        *[text.alias(f"_c{i}") for i, (text, _) in enumerate(cells)],
        _decoded(F.col(_CORRUPT))[0].alias(RAW_TEXT),
        reduce(operator.and_, [valid for _, valid in cells], F.lit(True)).alias(BYTES_VALID),
        # Bytes, as the reader reads one character a byte: of the last field as read, its line breaks included.
        (F.length(F.col(_quoted(names[-1]))) if names else F.lit(None)).cast("int").alias(LAST_FIELD_BYTES),
        # Spark reports the path URL-encoded; name it as the file is named ("+" is literal in a path).
        F.url_decode(F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B"))).alias(SOURCE_FILE),
    ]
    # A CRLF blank line under an LF line ending reads as a short record whose one cell is a CR: a blank
    # line, skipped as any is.
    lone_cr = F.col(_CORRUPT).isin("", "\r") & (F.col(_quoted(names[0])) == "\r") if names else F.lit(False)
    not_blank = ~F.coalesce(lone_cr, F.lit(False))
    frames = [reader.option(EXACT_PATHS, "false").csv(read).where(not_blank).select(*columns) for read in reads]
    return reduce(lambda left, right: left.unionByName(right), frames).withColumn(
        RECORD_ID, F.monotonically_increasing_id()
    )


def _quoted(name: str) -> str:
    """A column name as Spark resolves it, whatever it holds (dots, backticks)."""
    return "`" + name.replace("`", "``") + "`"


def _decoded(cell: Column) -> tuple[Column, Column]:
    """A cell read as ISO-8859-1 (one character a byte), decoded as UTF-8, and whether its bytes are valid
    UTF-8 (true for a null cell). Invalid bytes decode to U+FFFD. An all-ASCII cell (as many characters as
    UTF-8 bytes: a count Spark keeps) is its own text. Spark 4 has functions for it; Spark 3.5's ``decode``
    replaces invalid bytes, so its bytes are valid when the text encodes back to them."""
    ascii_only = F.octet_length(cell) == F.length(cell)
    raw = F.encode(cell, "ISO-8859-1")
    if _SPARK_4:
        text, valid = F.call_function("make_valid_utf8", raw), F.call_function("is_valid_utf8", raw)
    else:
        text = F.decode(raw, "UTF-8")
        valid = F.encode(text, "UTF-8") == raw
    return F.when(ascii_only, cell).otherwise(text), F.coalesce(ascii_only | valid, F.lit(True))


def read_manifest(spark: SparkSession, uri: str) -> Manifest:
    """Read a batch manifest (``spark_jobs.contracts.Manifest``) through Hadoop's file system."""
    text = spark.read.text(uri, wholetext=True).collect()[0][0]
    return Manifest.from_json(text, f"manifest {uri}")
