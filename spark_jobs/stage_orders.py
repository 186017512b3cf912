"""Stage job: read a batch of CSV files, validate and clean them, write rejects and the staging table.

    python -m spark_jobs.stage_orders --input URI [--input URI ...] | --manifest URI \
        --batch-id ID --staging-table T --rejects-table T [--max-reject-fraction 0.1]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import datetime
from functools import reduce

from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.cli import LOG, OrderLoadError, parse_job_args, run_job, utc_now
from spark_jobs.contracts import BatchStatus, FileStatus
from spark_jobs.extract import (
    RAW_TEXT,
    RECORD_ID,
    InputFile,
    changed_while_read,
    file_fault,
    read_csv_records,
    read_input_files,
    read_manifest,
)
from spark_jobs.headers import EMPTY_FILE, FileHeader
from spark_jobs.load import ensure_audit_table, upsert_audit
from spark_jobs.outcomes import (
    TOP_FILES,
    FileOutcome,
    file_outcomes,
    rejected_file_records,
    row_sources,
    top_reasons,
)
from spark_jobs.schema import BATCH_ID, REJECTS_SCHEMA, ROWS_COLLAPSED, SOURCE_FILE
from spark_jobs.session import spark_conf
from spark_jobs.tables import check_batch_id, read_table, replace_batch, table_exists
from spark_jobs.transform import (
    FILE_LOADED,
    FIRST_RECORD_ID,
    collapse_to_latest,
    parse_orders,
    record_counts,
    rejected_rows,
    valid_rows,
    with_line_numbers,
)

DEFAULT_MAX_REJECT_FRACTION = 0.1
# The staging table is read one batch partition at a time and never filtered on its columns, so its
# files carry no min/max statistics: Delta then skips gathering them over every nested event it writes.
STAGING_PROPERTIES = {"delta.dataSkippingNumIndexedCols": "0"}
# The parsed rows are kept for the job's minute or so: compressing them costs more CPU than the local
# disk it saves (read when the cache is first filled, so it holds for the whole block).
_KEPT_UNCOMPRESSED = {"spark.sql.inMemoryColumnarStorage.compressed": "false"}
_ROW_FILES = T.StructType(
    [
        T.StructField(SOURCE_FILE, T.StringType()),
        T.StructField(FILE_LOADED, T.BooleanType()),
    ]
)
_ROW_SOURCES = T.StructType([*_ROW_FILES.fields, T.StructField(FIRST_RECORD_ID, T.LongType())])
_NO_RECORDS = T.StructType(
    [
        T.StructField(SOURCE_FILE, T.StringType()),
        T.StructField(RECORD_ID, T.LongType()),
        T.StructField(RAW_TEXT, T.StringType()),
    ]
)


def parse_batch(spark: SparkSession, files: list[InputFile]) -> DataFrame:
    """Every record of the batch, parsed: one CSV scan per distinct header, each file read once."""
    groups: dict[FileHeader, list[InputFile]] = defaultdict(list)
    for item in files:
        if item.header.names:
            groups[item.header].append(item)
    frames = [parse_orders(read_csv_records(spark, group, header.cells), header) for header, group in groups.items()]
    return (
        # Called on each frame: DataFrame.unionByName is the classic DataFrame's on PySpark 3.5, even on Connect.
        reduce(lambda left, right: left.unionByName(right), frames)
        if frames
        else parse_orders(spark.createDataFrame([], _NO_RECORDS), EMPTY_FILE)
    )


def find_redeliveries(
    spark: SparkSession, outcomes: list[FileOutcome], audit_table: str | None, batch_id: str
) -> dict[str, str]:
    """For each loaded file an earlier merged batch loaded with the same content or the same name: a note.

    Informational: a re-delivered file is loaded again, and the merge's latest-wins rule and the
    history's insert-if-absent keep that from duplicating anything. Returns the notes by file URI.
    """
    loaded = [o for o in outcomes if o.loaded and o.fingerprint]
    if not audit_table or not loaded:
        return {}
    ensure_audit_table(spark, audit_table)
    uris = [o.file.uri for o in loaded]
    prints = [o.fingerprint for o in loaded]
    earlier = (
        read_table(spark, audit_table)
        .where((F.col("status") == BatchStatus.MERGED.value) & (F.col("batch_id") != batch_id))
        .select("batch_id", "merge_finished_at", F.explode("files").alias("f"))
        .where(F.col("f.status") == FileStatus.LOADED.value)
        .where(F.col("f.uri").isin(uris) | F.col("f.fingerprint").isin(prints))
        .select("batch_id", "merge_finished_at", "f.uri", "f.fingerprint")
        .orderBy("merge_finished_at", "batch_id")
        .collect()
    )
    notes = {}
    for outcome in loaded:
        same_content = [r for r in earlier if r["fingerprint"] == outcome.fingerprint]
        same_name = [r for r in earlier if r["uri"] == outcome.file.uri]
        if same_content:
            first = same_content[0]
            notes[outcome.file.uri] = f"same content as {first['uri']} in batch {first['batch_id']}"
        elif same_name:
            notes[outcome.file.uri] = f"same name as loaded in batch {same_name[0]['batch_id']}, other content"
        else:
            continue
        LOG.warning(
            "%s is a re-delivery (%s); loading it again changes no row", outcome.file.uri, notes[outcome.file.uri]
        )
    return notes


def stage_record(batch_id: str, outcomes: list[FileOutcome], started_at: datetime) -> dict:
    """The stage's audit figures before anything is written: every data row of every file is read."""
    return {
        "batch_id": batch_id,
        "rows_read": sum(o.rows for o in outcomes),
        "rows_rejected": sum(o.rows_rejected for o in outcomes),
        "files_rejected": sum(not o.loaded for o in outcomes),
        "stage_started_at": started_at,
    }


def file_records(outcomes: list[FileOutcome], redeliveries: dict[str, str]) -> dict:
    """The audit record's files, each with its re-delivery note, and how many files are re-deliveries."""
    for outcome in outcomes:
        outcome.redelivery_of = redeliveries.get(outcome.file.uri)
    return {"files": [o.audit_record() for o in outcomes], "files_redelivered": len(redeliveries)}


def write_rejects(
    spark: SparkSession, rows: DataFrame, outcomes: list[FileOutcome], record: dict, rejects_table: str
) -> None:
    """Replace the batch's rejects: rejected rows, and one record per file rejected whole.

    Skipped when the batch has none and the table does not exist yet; otherwise written even when
    empty, so a re-run clears what an earlier attempt of the batch left.
    """
    if not record["rows_rejected"] and not record["files_rejected"] and not table_exists(spark, rejects_table):
        return
    at = record["stage_started_at"]
    files = [{"batch_id": record["batch_id"], **r, "rejected_at": at} for r in rejected_file_records(outcomes)]
    rejects = rejected_rows(rows, record["batch_id"], at).unionByName(spark.createDataFrame(files, REJECTS_SCHEMA))
    replace_batch(rejects, rejects_table, "batch_id", record["batch_id"], json.dumps({"batch_id": record["batch_id"]}))


def check_reject_limit(
    record: dict, outcomes: list[FileOutcome], reasons: list[dict], limit: float, rejects_table: str
) -> str | None:
    """The error when the batch's rejected fraction is above ``limit``; None when within it.

    It names each file rejected whole, with its reason, and the files with the most rows rejected.
    """
    read, rejected = record["rows_read"], record["rows_rejected"]
    # Files rejected whole with no data row still leave nothing loaded: that is all of the batch rejected.
    fraction = rejected / read if read else float(record["files_rejected"] > 0)
    if fraction <= limit:
        return None
    worst = "; ".join(f"{r['reason']} ({r['count']})" for r in reasons)
    return (
        f"batch {record['batch_id']}: {rejected} of {read} rows rejected ({fraction:.1%}), above the limit "
        f"of {limit:.1%}. Worst reasons: {worst}.{_files_to_look_at(outcomes)} The rejects are in {rejects_table}."
    )


def _files_to_look_at(outcomes: list[FileOutcome]) -> str:
    """The files a reject-limit failure names: each one rejected whole, then those with most rejected rows."""
    whole = [f"{outcome.file.uri} ({outcome.reason})" for outcome in outcomes if not outcome.loaded]
    partly = sorted(
        (outcome for outcome in outcomes if outcome.loaded and outcome.rows_rejected),
        key=lambda outcome: (-outcome.rows_rejected, outcome.file.uri),
    )
    named = [f"{outcome.file.uri} ({outcome.rows_rejected} of {outcome.rows})" for outcome in partly[:TOP_FILES]]
    more = len(partly) - len(named)
    return "".join(
        (
            f" Files rejected whole: {'; '.join(whole)}." if whole else "",
            f" Most rows rejected: {'; '.join(named)}{f' and {more} more files' if more else ''}." if named else "",
        )
    )


def write_staging(spark: SparkSession, rows: DataFrame, record: dict, staging_table: str) -> dict[str, int]:
    """Replace the batch's staged rows with the latest event per key; return the rows staged and collapsed.

    The counts are read back from the batch's partition as committed, so the reconciliation checks
    what the table holds, not what the job meant to write. (A Spark ``Observation`` on the written
    rows was tried: it returns no row when the write creates a catalog table, so it is not used.)
    """
    batch_id = record["batch_id"]
    staged = collapse_to_latest(valid_rows(rows, batch_id, record["stage_started_at"]))
    replace_batch(staged, staging_table, BATCH_ID, batch_id, json.dumps({"batch_id": batch_id}), STAGING_PROPERTIES)
    totals = (
        read_table(spark, staging_table)
        .where(F.col(BATCH_ID) == batch_id)
        .agg(F.count(F.lit(1)).alias("staged"), F.coalesce(F.sum(ROWS_COLLAPSED), F.lit(0)).alias("collapsed"))
        .first()
    )
    return {"rows_staged": int(totals["staged"]), "rows_collapsed": int(totals["collapsed"])}


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


@contextmanager
def parsed_once(spark: SparkSession, files: list[InputFile]) -> Iterator[tuple[list[InputFile], DataFrame, list, bool]]:
    """The batch's records, parsed by one CSV read and kept on local disk for the job's few actions: the
    files (some now rejected whole), the parsed rows, their ``record_counts`` and whether they are kept.

    Counting, rejecting and staging then reuse the same parsed rows: no file is read twice, and the
    record ids the line numbers come from are those of that one read. Where the compute refuses to keep
    rows (Databricks serverless has no ``persist`` and few settable options), each action reads the
    files again, and may pack them into partitions otherwise: record ids then hold only within an action.

    Containment: a file whose records cannot be read (gone, a field or record over the reader's limits,
    an encoding the reader refuses) is rejected whole and the others are read again; a file changed
    while it was read is rejected whole. Only a failure that is no one file's fails the job.
    """
    while True:
        with ExitStack() as keeping:
            try:
                parsed, kept = _keep(spark, parse_batch(spark, files), keeping)
                counts = record_counts(parsed).collect()
            except Exception as error:
                if file_fault(error) is None:
                    raise
                keeping.close()
                culprit, reason = unreadable_file(spark, files, error)
                LOG.warning("%s is rejected whole: %s; reading the batch's other files again", culprit.uri, reason)
                files = [item.rejected(reason) if item is culprit else item for item in files]
                continue
            yield changed_while_read(spark, files), parsed, counts, kept
            return


def stage_orders(
    spark: SparkSession,
    inputs: list[dict],
    batch_id: str,
    staging_table: str,
    rejects_table: str,
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
    audit_table: str | None = None,
) -> dict:
    """Stage one batch: count and check every row, write the rejects, then the staging rows. Returns metrics.

    With ``audit_table``, the batch's audit record gets the stage's figures (status ``staged`` or
    ``stage_failed``), which the merge job completes.
    """
    check_batch_id(batch_id)
    if not 0 <= max_reject_fraction <= 1:
        raise ValueError(
            f"max_reject_fraction is a fraction from 0 to 1 (0.1 = 10% of the batch's rows), not {max_reject_fraction}"
        )
    if not inputs:
        raise OrderLoadError("no input files: pass --input or a manifest that lists files")
    started_at = utc_now()
    files = read_input_files(spark, inputs)
    with parsed_once(spark, files) as (files, parsed, counts, kept):
        outcomes = file_outcomes(files, (row.asDict() for row in counts))
        record = stage_record(batch_id, outcomes, started_at)
        reasons = top_reasons(outcomes)
        # Kept rows keep the record ids the count saw; otherwise each write takes its files' first ids itself.
        sources = row_sources(outcomes, with_first_ids=kept)
        rows = with_line_numbers(parsed, spark.createDataFrame(sources, _ROW_SOURCES if kept else _ROW_FILES))

        # The re-delivery notes only go into the audit record: they are looked up while the batch is written.
        with ThreadPoolExecutor(max_workers=1) as side:
            redeliveries = side.submit(find_redeliveries, spark, outcomes, audit_table, batch_id)
            write_rejects(spark, rows, outcomes, record, rejects_table)
            error = check_reject_limit(record, outcomes, reasons, max_reject_fraction, rejects_table)
            if error is None:
                record.update(write_staging(spark, rows, record, staging_table))
                if record["rows_read"] != record["rows_staged"] + record["rows_rejected"] + record["rows_collapsed"]:
                    error = f"batch {batch_id}: counts do not reconcile: {record}"
            record.update(file_records(outcomes, redeliveries.result()))
    status = BatchStatus.STAGE_FAILED if error else BatchStatus.STAGED
    record.update(status=status, error=error, stage_finished_at=utc_now())
    if audit_table:
        upsert_audit(spark, record, audit_table)
    if error:
        raise OrderLoadError(error)
    log_summary(record, outcomes)
    times = ("stage_started_at", "stage_finished_at")  # the audit record's, not the job's metrics
    return {**{key: value for key, value in record.items() if key not in times}, "top_reject_reasons": reasons}


def log_summary(record: dict, outcomes: list[FileOutcome]) -> None:
    """Log the files rejected whole and the batch's figures."""
    for outcome in outcomes:
        if not outcome.loaded:
            LOG.warning("file %s rejected whole: %s", outcome.file.uri, outcome.reason)
    LOG.info(
        "staged batch %s: %d files, %d rows read, %d rejected, %d collapsed, %d staged",
        record["batch_id"],
        len(outcomes),
        record["rows_read"],
        record["rows_rejected"],
        record["rows_collapsed"],
        record["rows_staged"],
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the stage job's command line."""
    parser = argparse.ArgumentParser(prog="stage_orders", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", action="append", help="a CSV file URI; repeat for more")
    source.add_argument("--manifest", help="URI of a JSON manifest listing the batch's files")
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--staging-table", required=True)
    parser.add_argument("--rejects-table", required=True)
    parser.add_argument("--max-reject-fraction", type=float, default=DEFAULT_MAX_REJECT_FRACTION)
    parser.add_argument(
        "--audit-table", help="record the stage's figures in this audit table (the merge completes them)"
    )
    return parse_job_args(parser, sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)

    def job() -> dict:
        from spark_jobs.session import get_spark

        spark = get_spark("stage_orders")
        if args.input:
            inputs = [{"uri": uri} for uri in args.input]
        else:
            inputs = [asdict(item) for item in read_manifest(spark, args.manifest).files]
        return stage_orders(
            spark,
            inputs,
            args.batch_id,
            args.staging_table,
            args.rejects_table,
            args.max_reject_fraction,
            args.audit_table,
        )

    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
