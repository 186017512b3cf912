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
