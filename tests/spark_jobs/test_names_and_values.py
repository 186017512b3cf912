"""Any name, any content: file names, column names and values from a file are data, never the reader's or SQL's.

Each test stands for one way an outside file once stopped a batch, lost rows silently or corrupted the
target (issue 35's numbered points); each fails on the code before that fix.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from spark_jobs.merge_orders import merge_orders
from spark_jobs.stage_orders import stage_orders
from spark_jobs.tables import sql_string
from tests.spark_jobs.helpers import HEADER, read, write_csv


def _row(key: str, address: str = "1 Elm St", at: str = "2023-01-01 10:00:00", status: str = "In Transit") -> str:
    return f"1,{key},2023-01-01,,{status},{address},{at}\n"


def _stage(spark, tables, paths, batch_id, limit=1.0, **listed):
    inputs = [{"uri": str(path), **listed} for path in paths]
    return stage_orders(spark, inputs, batch_id, tables.staging, tables.rejects, tables.audit, limit)


def _files(metrics) -> dict[str, tuple]:
    return {f["uri"].rsplit("/", 1)[-1]: (f["status"], f["rows"], f["rows_rejected"]) for f in metrics["files"]}


# 1. Column names that Spark uses itself


@pytest.mark.parametrize(
    "extra", ["_corrupt_record", "_CORRUPT_Record", "_metadata", "_Metadata", "_raw_text", "_source_file"]
)
def test_a_column_named_like_the_readers_own_is_an_unknown_column_kept_in_rescued_data(spark, tables, tmp_path, extra):
    header = HEADER.rstrip("\n") + f",{extra}\n"
    odd = write_csv(tmp_path, "odd.csv", header + _row("K1").rstrip("\n") + ",kept\n")
    good = write_csv(tmp_path, "good.csv", HEADER + _row("K2"))

    metrics = _stage(spark, tables, [odd, good], "reserved")

    assert _files(metrics) == {"odd.csv": ("loaded", 1, 0), "good.csv": ("loaded", 1, 0)}
    staged = {r["tracking_num"]: r["_rescued_data"] for r in read(spark, tables.staging).collect()}
    assert staged == {"K1": f'{{"{extra}":"kept"}}', "K2": None}


# 2. Object names


def test_a_colon_in_a_file_name_is_read_by_its_exact_name(spark, tables, tmp_path):
    colon = write_csv(tmp_path, "orders_2023-01-01T10:00:00.csv", HEADER + _row("K1"))

    metrics = _stage(spark, tables, [colon], "colon")

    assert _files(metrics) == {"orders_2023-01-01T10:00:00.csv": ("loaded", 1, 0)}
    assert [r["_source_file"] for r in read(spark, tables.staging).collect()] == [f"file:{colon}"]


def test_glob_characters_in_a_name_are_read_from_an_archive_folder_named_by_a_run_id(spark, tables, tmp_path):
    """A cleared run reads its files where it moved them: a folder named by run id, colons and plus included."""
    names = ["a[1].csv", "b{x,y}.csv", "c*.csv", "d?.csv", "e\\f.csv"]
    listed = [write_csv(tmp_path / "input", name, HEADER + _row(f"K{i}")) for i, name in enumerate(names)]
    archive = tmp_path / "archive" / "2026-11-20" / "15" / "manual__2026-11-20T15:00:00+00:00"
    inputs = [{"uri": str(path), "archive_uri": str(archive / path.name)} for path in listed]
    archive.mkdir(parents=True)
    for path in listed:
        path.rename(archive / path.name)

    metrics = stage_orders(spark, inputs, "globs", tables.staging, tables.rejects, tables.audit, 1.0)

    assert _files(metrics) == {name: ("loaded", 1, 0) for name in names}
    staged = sorted(r["_source_file"] for r in read(spark, tables.staging).collect())
    assert staged == sorted(f"file:{archive / name}" for name in names)


# 4. A value became SQL


HOSTILE = [
    "${x}",
    "a\x00b",
    "TRK${x}",
    "$${y}",
    "'",
    "''",
    "\\",
    "\\'",
    "%",
    "*",
    "a\nb",
    "😀",
    "\ufffd",
    "${spark.app.name}",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_sql_string_literal_is_the_value_whatever_it_holds(spark, value):
    assert spark.conf.get("spark.sql.variable.substitute") == "false"
    with _substitution_on(spark):
        assert spark.sql(f"SELECT {sql_string(value)} AS v").first()["v"] == value


def test_a_key_holding_a_variable_reference_is_merged_once_and_replays_change_nothing(spark, tables, tmp_path):
    first = write_csv(tmp_path, "first.csv", HEADER + _row("D${x}") + _row("D"))
    later = write_csv(tmp_path, "later.csv", HEADER + _row("D${x}", at="2023-01-02 10:00:00", status="Delivered"))
    with _substitution_on(spark):
        for batch_id, path in [("one", first), ("two", later), ("two", later)]:
            _stage(spark, tables, [path], batch_id)
            merge_orders(spark, batch_id, tables.staging, tables.target, tables.history, tables.audit)

    target = sorted((r["tracking_num"], r["status"]) for r in read(spark, tables.target).collect())
    assert target == [("D", "In Transit"), ("D${x}", "Delivered")]
    assert read(spark, tables.history).where(F.col("tracking_num") == "D${x}").count() == 2


class _substitution_on:
    """Spark SQL's variable substitution switched on (its default, which a caller's session may keep)."""

    def __init__(self, spark):
        self.spark = spark

    def __enter__(self):
        self.before = self.spark.conf.get("spark.sql.variable.substitute")
        self.spark.conf.set("spark.sql.variable.substitute", "true")

    def __exit__(self, *_):
        self.spark.conf.set("spark.sql.variable.substitute", self.before)
