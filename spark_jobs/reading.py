"""Reading a batch: its files' heads, then every record parsed by one CSV read per header, kept and counted.

The stage job's first step. A file whose records cannot be read (gone, a field or record over the
reader's limits, an encoding the reader refuses) is rejected whole and the others are read again; a
file changed while it was read is rejected whole. Only a failure that is no one file's fails the job.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import reduce

from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_jobs.cli import LOG
from spark_jobs.extract import (
    BYTES_VALID,
    LAST_FIELD_BYTES,
    RAW_TEXT,
    RECORD_ID,
    InputFile,
    checked_after_read,
    counted,
    file_fault,
    read_csv_records,
    read_input_files,
)
from spark_jobs.headers import EMPTY_FILE, FileHeader
from spark_jobs.progress import phase
from spark_jobs.schema import SOURCE_FILE
from spark_jobs.session import spark_conf
from spark_jobs.transform import last_record_groups, parse_orders, record_counts

# The parsed rows live for the job's minute or so on local disk: kept uncompressed (the setting is read
# when the cache is first filled, so it holds for the whole block).
_KEPT_UNCOMPRESSED = {"spark.sql.inMemoryColumnarStorage.compressed": "false"}
_NO_RECORDS = T.StructType(
    [
        T.StructField(SOURCE_FILE, T.StringType()),
        T.StructField(RECORD_ID, T.LongType()),
        T.StructField(RAW_TEXT, T.StringType()),
        T.StructField(BYTES_VALID, T.BooleanType()),
        T.StructField(LAST_FIELD_BYTES, T.IntegerType()),
    ]
)


@dataclass(frozen=True)
class ReadBatch:
    """A batch as read: its files (some rejected whole), every record parsed (``parse_orders``), the
    records' ``record_counts`` as dicts, and whether the parsed rows are kept (else each action reads the
    files again)."""

    files: list[InputFile]
    parsed: DataFrame
    counts: list[dict]
    kept: bool


@contextmanager
def read_batch(spark: SparkSession, inputs: list[dict]) -> Iterator[ReadBatch]:
    """The batch's files and records, parsed by one CSV read and kept on local disk for the job's few
    actions, until the block ends.

    Counting, rejecting and staging then reuse the same parsed rows: no file is read twice, and the
    record ids the line numbers come from are those of that one read. Where the compute refuses to keep
    rows (Databricks serverless has no ``persist`` and few settable options), each action reads the
    files again, and may pack them into partitions otherwise: record ids then hold only within an action.
    """
    with phase(f"reading the heads of {len(inputs)} files"):
        files = read_input_files(spark, inputs)
    while True:
        with ExitStack() as keeping:
            try:
                with phase(f"parsing and counting the records of {sum(bool(f.header.names) for f in files)} files"):
                    parsed, kept = _keep(spark, parse_batch(spark, files), keeping)
                    counts = [row.asDict() for row in record_counts(parsed).collect()]
            except Exception as error:
                if file_fault(error) is None:
                    raise
                keeping.close()
                culprit, reason = unreadable_file(spark, files, error)
                LOG.warning("%s is rejected whole: %s; reading the batch's other files again", culprit.uri, reason)
                files = [counted(spark, item.rejected(reason)) if item is culprit else item for item in files]
                continue
            yield ReadBatch(checked_after_read(spark, files, last_fields(counts)), parsed, counts, kept)
            return


def last_fields(counts: list[dict]) -> dict[str, int]:
    """The bytes of each file's last record's last field, where that record has one."""
    return {
        path: group["last_field_bytes"]
        for path, group in last_record_groups(counts).items()
        if group["last_field_bytes"] is not None
    }


def parse_batch(spark: SparkSession, files: list[InputFile]) -> DataFrame:
    """Every record of the batch, parsed: one CSV scan per distinct header, each file read once."""
    groups: dict[FileHeader, list[InputFile]] = defaultdict(list)
    for item in files:
        if item.header.names:
            groups[item.header].append(item)
    frames = [parse_orders(read_csv_records(spark, group, header), header) for header, group in groups.items()]
    return (
        # Called on each frame: DataFrame.unionByName is the classic DataFrame's on PySpark 3.5, even on Connect.
        reduce(lambda left, right: left.unionByName(right), frames)
        if frames
        else parse_orders(spark.createDataFrame([], _NO_RECORDS), EMPTY_FILE)
    )


def _read_fault(spark: SparkSession, files: list[InputFile]) -> str | None:
    """Read and count the records of ``files`` alone: the reason one of them is to be rejected whole when
    the read fails for a file's sake (``file_fault``), None when it succeeds; any other failure is raised."""
    try:
        record_counts(parse_batch(spark, files)).collect()
    except Exception as error:
        fault = file_fault(error)
        if fault is None:
            raise
        return fault
    return None


def unreadable_file(spark: SparkSession, files: list[InputFile], error: Exception) -> tuple[InputFile, str]:
    """The file that a failed read of ``files`` belongs to, and why: found by reading halves of the files
    whose records are read, then confirmed by reading it alone. Spark's error does not always name the
    file (PySpark 3.5 does not for a field over the limit). ``error`` is raised again when the failure
    does not recur with one file alone: it is then not one file's.
    """
    suspects = [item for item in files if item.header.names]
    while len(suspects) > 1:
        half = suspects[: len(suspects) // 2]
        suspects = half if _read_fault(spark, half) else suspects[len(half) :]
    reason = _read_fault(spark, suspects)
    if reason is None:
        raise error
    return suspects[0], reason


def _keep(spark: SparkSession, parsed: DataFrame, keeping: ExitStack) -> tuple[DataFrame, bool]:
    """The parsed rows, kept on local disk until ``keeping`` closes, and whether the compute keeps them."""
    try:
        keeping.enter_context(spark_conf(spark, _KEPT_UNCOMPRESSED))
        kept = parsed.persist(StorageLevel.DISK_ONLY)
        keeping.callback(kept.unpersist)
    except PySparkException as refused:
        keeping.close()
        LOG.warning("this compute keeps no parsed rows (%s); each action reads the batch's files again", refused)
        return parsed, False
    return kept, True
