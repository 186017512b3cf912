"""Stage job: read a batch of CSV files, validate and clean them, write rejects and the staging table.

    python -m spark_jobs.stage_orders --input URI [--input URI ...] | --manifest URI \
        --batch-id ID --staging-table T --rejects-table T [--max-reject-fraction 0.1]
"""

from __future__ import annotations

import argparse
import json
import sys

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.cli import LOG, OrderLoadError, run_job, utc_now
from spark_jobs.extract import RAW_TEXT, read_manifest, read_raw_records
from spark_jobs.load import ensure_audit_table, upsert_audit
from spark_jobs.schema import BATCH_ID, LINE_NUMBER, MAX_COLUMNS, REJECTS_SCHEMA, ROWS_COLLAPSED, SOURCE_FILE
from spark_jobs.tables import check_batch_id, read_table, replace_batch, table_exists
from spark_jobs.transform import (
    FILE_ERROR,
    RECORDS,
    REJECT_REASONS,
    collapse_to_latest,
    file_headers,
    parse_orders,
    rejected_files,
    rejected_rows,
    valid_rows,
    widest_header,
)

DEFAULT_MAX_REJECT_FRACTION = 0.1
TOP_REASONS = 3


def persist_if_supported(df: DataFrame) -> DataFrame:
    """Cache a frame read more than once; serverless compute refuses caching, and then it is computed again."""
    try:
        return df.persist(StorageLevel.MEMORY_AND_DISK)
    except Exception as error:  # noqa: BLE001 - the refusal's error class differs across runtimes
        LOG.warning("cannot cache the input scan (%s); it will be read more than once", error)
        return df


def read_width(spark: SparkSession, uris: list[str]) -> int:
    """Columns to read the batch with: one more than its widest header, so that every record keeps its raw text.

    A cheap first pass (one column) finds the widest header; reading all ``MAX_COLUMNS`` columns instead
    costs several seconds per million records. Headers of ``MAX_COLUMNS`` or more fields are read at
    ``MAX_COLUMNS`` and rejected by ``file_headers``.
    """
    widest = widest_header(read_raw_records(spark, uris, columns=1)).collect()[0]["widest"]
    return min(MAX_COLUMNS, (widest or 1) + 1)


def source_key(path: str) -> str:
    """A file's path as both an input URI and the staged ``_source_file`` reduce to (no ``file:`` scheme)."""
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def file_summaries(inputs: list[dict], headers: DataFrame, parsed: DataFrame) -> list[dict]:
    """Per input file: size, generation, data rows, rejected rows, and whether the file loaded."""
    header_rows = {
        source_key(row[SOURCE_FILE]): row for row in headers.select(SOURCE_FILE, FILE_ERROR, RECORDS).collect()
    }
    counts = {
        source_key(row[SOURCE_FILE]): row
        for row in parsed.groupBy(SOURCE_FILE)
        .agg(
            F.count("*").alias("rows"),
            F.count_if(F.size(REJECT_REASONS) > 0).alias("rows_rejected"),
            F.bit_xor(F.xxhash64(LINE_NUMBER, RAW_TEXT)).alias("content_hash"),
        )
        .collect()
    }
    summaries = []
    for item in inputs:
        key = source_key(item["uri"])
        header = header_rows.get(key)  # None for a zero-byte file
        error = header[FILE_ERROR] if header else None
        count = counts.get(key)
        summaries.append(
            {
                "uri": item["uri"],
                "size": item.get("size"),
                "generation": None if item.get("generation") is None else str(item["generation"]),
                "rows": header[RECORDS] - 1 if header else 0,
                "rows_rejected": count["rows_rejected"] if count else 0,
                "status": "rejected" if error else "loaded",
                "reason": error,
                "fingerprint": fingerprint(count["rows"], count["content_hash"]) if count else None,
                "redelivery_of": None,
            }
        )
    return summaries


def fingerprint(rows: int, content_hash: int) -> str:
    """A file's content identity, whatever its name: its data rows and a hash of every (line, record)."""
    return f"{rows}:{content_hash & 0xFFFFFFFFFFFFFFFF:016x}"


def mark_redeliveries(spark: SparkSession, files: list[dict], audit_table: str | None, batch_id: str) -> int:
    """Note on each loaded file the earlier merged batch that loaded the same content or the same name.

    Informational: a re-delivered file is loaded again, and the merge's latest-wins rule and the
    history's insert-if-absent keep that from duplicating anything. Returns how many files were marked.
    """
    loaded = [f for f in files if f["status"] == "loaded" and f["fingerprint"]]
    if not audit_table or not loaded or not table_exists(spark, audit_table):
        return 0
    ensure_audit_table(spark, audit_table)
    uris = [f["uri"] for f in loaded]
    prints = [f["fingerprint"] for f in loaded]
    earlier = (
        read_table(spark, audit_table)
        .where((F.col("status") == "merged") & (F.col("batch_id") != batch_id))
        .select("batch_id", "merge_finished_at", F.explode("files").alias("f"))
        .where((F.col("f.status") == "loaded") & (F.col("f.uri").isin(uris) | F.col("f.fingerprint").isin(prints)))
        .select("batch_id", "merge_finished_at", "f.uri", "f.fingerprint")
        .orderBy("merge_finished_at", "batch_id")
        .collect()
    )
    marked = 0
    for item in loaded:
        same_content = [r for r in earlier if r["fingerprint"] == item["fingerprint"]]
        same_name = [r for r in earlier if r["uri"] == item["uri"]]
        if same_content:
            first = same_content[0]
            item["redelivery_of"] = f"same content as {first['uri']} in batch {first['batch_id']}"
        elif same_name:
            item["redelivery_of"] = f"same name as loaded in batch {same_name[0]['batch_id']}, other content"
        else:
            continue
        marked += 1
        LOG.warning("%s is a re-delivery (%s); loading it again changes no row", item["uri"], item["redelivery_of"])
    return marked


def top_reject_reasons(spark: SparkSession, rejects_table: str, batch_id: str) -> list[dict]:
    """The most frequent reject reasons of a batch, most frequent first."""
    rows = (
        read_table(spark, rejects_table)
        .where(F.col("batch_id") == batch_id)
        .select(F.explode(F.split("reason", "; ")).alias("reason"))
        .groupBy("reason")
        .count()
        .orderBy(F.desc("count"), "reason")
        .limit(TOP_REASONS)
        .collect()
    )
    return [{"reason": row["reason"], "count": row["count"]} for row in rows]


def stage_orders(
    spark: SparkSession,
    inputs: list[dict],
    batch_id: str,
    staging_table: str,
    rejects_table: str,
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
    audit_table: str | None = None,
) -> dict:
    """Stage one batch: rejects first, then the reject-limit check, then the staging rows. Returns metrics.

    With ``audit_table``, the batch's audit record gets the stage's figures (status ``staged`` or
    ``stage_failed``), which the merge job completes.
    """
    check_batch_id(batch_id)
    if not inputs:
        raise OrderLoadError("no input files: pass --input or a manifest that lists files")
    started_at = utc_now()
    uris = [item["uri"] for item in inputs]
    raw = read_raw_records(spark, uris, read_width(spark, uris))
    # Kept once computed: the per-file counts, the rejects and the staging rows all read them. The
    # files are read once more for the headers; caching the raw records costs more than that read.
    headers = persist_if_supported(file_headers(raw))
    parsed = persist_if_supported(parse_orders(raw, headers))
    try:
        files = file_summaries(inputs, headers, parsed)
        files_redelivered = mark_redeliveries(spark, files, audit_table, batch_id)
        rows_read = sum(f["rows"] for f in files if f["status"] == "loaded")
        rows_rejected = sum(f["rows_rejected"] for f in files)
        for item in files:
            if item["status"] == "rejected":
                LOG.warning("file %s rejected whole: %s", item["uri"], item["reason"])

        rejects = rejected_rows(parsed, batch_id, started_at).unionByName(rejected_files(headers, batch_id, started_at))
        replace_batch(
            rejects.select(*REJECTS_SCHEMA.fieldNames()),
            rejects_table,
            "batch_id",
            batch_id,
            json.dumps({"batch_id": batch_id}),
        )
        reasons = (
            top_reject_reasons(spark, rejects_table, batch_id)
            if rows_rejected or any(f["reason"] for f in files)
            else []
        )
        record = {
            "batch_id": batch_id,
            "files": files,
            "rows_read": rows_read,
            "rows_rejected": rows_rejected,
            "files_rejected": sum(f["status"] == "rejected" for f in files),
            "files_redelivered": files_redelivered,
            "stage_started_at": started_at,
        }
        fraction = rows_rejected / rows_read if rows_read else 0.0
        if fraction > max_reject_fraction:
            worst = "; ".join(f"{r['reason']} ({r['count']})" for r in reasons)
            error = (
                f"batch {batch_id}: {rows_rejected} of {rows_read} rows rejected ({fraction:.1%}), above the limit "
                f"of {max_reject_fraction:.1%}. Worst reasons: {worst}. The rejects are in {rejects_table}."
            )
            if audit_table:
                upsert_audit(
                    spark,
                    {**record, "status": "stage_failed", "error": error, "stage_finished_at": utc_now()},
                    audit_table,
                )
            raise OrderLoadError(error)

        staged = collapse_to_latest(valid_rows(parsed, batch_id, started_at))
        replace_batch(staged, staging_table, BATCH_ID, batch_id, json.dumps({"batch_id": batch_id}))
    finally:
        parsed.unpersist()
        headers.unpersist()

    totals = (
        read_table(spark, staging_table)
        .where(F.col(BATCH_ID) == batch_id)
        .agg(F.count("*").alias("staged"), F.coalesce(F.sum(ROWS_COLLAPSED), F.lit(0)).alias("collapsed"))
        .collect()[0]
    )
    record.update(
        status="staged",
        rows_staged=int(totals["staged"]),
        rows_collapsed=int(totals["collapsed"]),
        stage_finished_at=utc_now(),
    )
    if rows_read != record["rows_staged"] + rows_rejected + record["rows_collapsed"]:
        raise OrderLoadError(f"batch {batch_id}: counts do not reconcile: {record}")
    if audit_table:
        upsert_audit(spark, record, audit_table)
    LOG.info(
        "staged batch %s: %d files, %d rows read, %d rejected, %d collapsed, %d staged",
        batch_id,
        len(files),
        rows_read,
        rows_rejected,
        record["rows_collapsed"],
        record["rows_staged"],
    )
    return {**record, "top_reject_reasons": reasons}


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def job() -> dict:
        from spark_jobs.session import get_spark

        spark = get_spark("stage_orders")
        inputs = [{"uri": uri} for uri in args.input] if args.input else read_manifest(spark, args.manifest)["files"]
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
