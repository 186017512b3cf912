"""Large and many inputs: a 10 MB field, a 200 MB file, 1,000 tiny files; each file read once. No row lost."""

from __future__ import annotations

from pyspark.sql import functions as F

from bench.workload import BatchShape, write_csv_files
from spark_jobs.stage_orders import stage_orders
from tests.spark_jobs.helpers import HEADER, read, write_csv

MIB = 1024 * 1024


def _stage(spark, tables, paths, batch_id):
    return stage_orders(
        spark, [{"uri": str(p)} for p in paths], batch_id, tables.staging, tables.rejects, tables.audit, 0.1
    )


def test_a_10_mb_field_is_loaded_intact(spark, tables, tmp_path):
    address = "x" * (10 * MIB - 7) + " Elm St"
    path = write_csv(
        tmp_path,
        "wide.csv",
        HEADER
        + f'1,TRK1,2023-01-01,,In Transit,"{address}",2023-01-01 10:00:00\n'
        + "2,TRK2,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00\n",
    )

    metrics = _stage(spark, tables, [path], "wide")

    assert (metrics["rows_read"], metrics["rows_staged"], metrics["rows_rejected"]) == (2, 2, 0)
    staged = {r["tracking_num"]: r for r in read(spark, tables.staging).select("tracking_num", "address").collect()}
    assert len(staged["TRK1"]["address"]) == 10 * MIB
    assert staged["TRK1"]["address"] == address
    assert staged["TRK2"]["address"] == "1 Elm St"


def test_a_200_mb_file_stages_every_row(spark, tables, tmp_path):
    # Wide rows (a padded address) keep the row count, and so the test's time, modest for 200 MB.
    events = [(*row[:5], f"{row[5]} {'x' * 760}", row[6]) for row in BatchShape(1_000_000, 250_000, seed=11).events()]
    [path] = write_csv_files(iter(events), tmp_path, files=1, stem="big")
    assert path.stat().st_size >= 200 * 1000 * 1000

    metrics = _stage(spark, tables, [path], "big")

    keys = {row[1] for row in events}
    assert metrics["rows_read"] == len(events)
    assert metrics["rows_rejected"] == 0
    assert metrics["rows_staged"] == len(keys)
    assert metrics["rows_staged"] + metrics["rows_collapsed"] == len(events)
    staged = read(spark, tables.staging)
    assert staged.select("tracking_num").distinct().count() == staged.count() == len(keys)


def test_1000_tiny_files_in_one_batch(spark, tables, tmp_path):
    paths = [
        write_csv(
            tmp_path / "tiny",
            f"tiny {i:04d}.csv",
            HEADER + f"{i},TRK{i:04d},2023-01-01,,In Transit,{i} Elm St,2023-01-01 10:00:00\n",
        )
        for i in range(1000)
    ]

    metrics = _stage(spark, tables, paths, "tiny")

    assert len(metrics["files"]) == 1000
    assert {(f["status"], f["rows"]) for f in metrics["files"]} == {("loaded", 1)}
    assert (metrics["rows_read"], metrics["rows_staged"]) == (1000, 1000)
    by_file = read(spark, tables.staging).select(
        F.regexp_extract("_source_file", r"tiny (\d{4})\.csv$", 1).alias("n"), "tracking_num"
    )
    assert {(r["n"], r["tracking_num"]) for r in by_file.collect()} == {
        (f"{i:04d}", f"TRK{i:04d}") for i in range(1000)
    }


def _local_bytes_read(spark) -> int:
    """Bytes read so far through Hadoop's local file system in this JVM (driver and local-mode executors)."""
    statistics = spark.sparkContext._jvm.org.apache.hadoop.fs.FileSystem.getAllStatistics()
    return sum(int(s.getBytesRead()) for s in statistics if s.getScheme() == "file")


def test_each_input_file_is_read_once(spark, tables, tmp_path):
    # Rows wide enough that the files dwarf everything else the job reads (Delta logs, file heads).
    events = [(*row[:5], f"{row[5]} {'x' * 200}", row[6]) for row in BatchShape(100_000, 20_000, seed=5).events()]
    paths = write_csv_files(iter(events), tmp_path, files=2, stem="once")
    input_bytes = sum(path.stat().st_size for path in paths)
    assert input_bytes > 4 * 1000 * 1000

    before = _local_bytes_read(spark)
    metrics = _stage(spark, tables, paths, "once")
    read_bytes = _local_bytes_read(spark) - before

    assert metrics["rows_read"] == len(events)
    # Counting, rejecting and staging all use the one parse: a second pass over the CSV would read 2x.
    assert input_bytes <= read_bytes < 1.25 * input_bytes, (read_bytes, input_bytes)
