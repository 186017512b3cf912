"""Pure transforms, compared whole with chispa on small inline inputs."""

from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.extract import read_raw_records
from spark_jobs.schema import ROWS_COLLAPSED, SUPERSEDED_EVENTS, TARGET_COLUMNS, TARGET_SCHEMA
from spark_jobs.transform import FILE_ERROR, HEADER_NAMES, collapse_to_latest, field_count, file_headers
from tests.spark_jobs.helpers import write_csv

INGESTED = dt.datetime(2026, 1, 1)


def event(key: str, ts: str, status: str, source: str, line: int) -> tuple:
    when = dt.datetime.fromisoformat(ts)
    return (1, key, None, None, status, None, when, None, source, line, "b", INGESTED)


def test_field_count_ignores_commas_inside_quotes(spark):
    records = spark.createDataFrame(
        [("a,b,c",), ('"a,b",c',), ('"say ""hi, there""",b,',), ("",), ('"multi\nline, field",x',)], "raw string"
    )
    counted = records.select("raw", field_count(F.col("raw")).alias("fields"))
    expected = spark.createDataFrame(
        [("a,b,c", 3), ('"a,b",c', 2), ('"say ""hi, there""",b,', 3), ("", 1), ('"multi\nline, field",x', 2)],
        "raw string, fields int",
    )
    assert_df_equality(counted, expected, ignore_row_order=True, ignore_nullable=True)


def test_collapse_keeps_the_latest_event_and_a_deterministic_tie_break(spark):
    valid = spark.createDataFrame(
        [
            event("A", "2023-01-01 10:00:00", "In Transit", "f1", 2),
            event("A", "2023-01-02 10:00:00", "Delivered", "f1", 3),
            # B: same time in two files; the greater file name wins whatever the row order.
            event("B", "2023-01-05 00:00:00", "Delayed", "f2", 2),
            event("B", "2023-01-05 00:00:00", "Returned", "f1", 9),
            # C: an exact re-delivery of one event in one file collapses to the later line.
            event("C", "2023-01-03 00:00:00", "Delivered", "f1", 4),
            event("C", "2023-01-03 00:00:00", "Delivered", "f1", 5),
        ],
        TARGET_SCHEMA,
    )
    collapsed = collapse_to_latest(valid)

    superseded_type = T.ArrayType(TARGET_SCHEMA)
    expected_schema = T.StructType(
        [
            *TARGET_SCHEMA.fields,
            T.StructField(SUPERSEDED_EVENTS, superseded_type),
            T.StructField(ROWS_COLLAPSED, T.IntegerType()),
        ]
    )
    expected = spark.createDataFrame(
        [
            (
                *event("A", "2023-01-02 10:00:00", "Delivered", "f1", 3),
                [event("A", "2023-01-01 10:00:00", "In Transit", "f1", 2)],
                1,
            ),
            (*event("B", "2023-01-05 00:00:00", "Delayed", "f2", 2), [], 1),
            (*event("C", "2023-01-03 00:00:00", "Delivered", "f1", 5), [], 1),
        ],
        expected_schema,
    )
    assert_df_equality(collapsed, expected, ignore_row_order=True, ignore_nullable=True)
    assert list(collapsed.columns[: len(TARGET_COLUMNS)]) == list(TARGET_COLUMNS)


def test_file_headers_map_names_and_explain_unusable_files(spark, tmp_path):
    good = "order_num,tracking_num,pck_recieved_date,package_deliver_date,status,address,last_update_timestamp"
    files = {
        "bom.csv": "\ufeff" + good + "\n",
        "reordered.csv": "status,last_update_timestamp,tracking_num,order_num,note\n",
        "duplicate.csv": "order_num,tracking_num,status,status,last_update_timestamp\n",
        "missing.csv": "order_num,tracking_num\n",
    }
    paths = [str(write_csv(tmp_path, name, text)) for name, text in files.items()]

    headers = file_headers(read_raw_records(spark, paths)).select(
        F.regexp_extract("_source_file", r"([^/]+)$", 1).alias("file"),
        HEADER_NAMES,
        FILE_ERROR,
        "_pos_status",
        "_extra_positions",
    )
    expected = spark.createDataFrame(
        [
            ("bom.csv", good.split(","), None, 5, []),
            ("reordered.csv", ["status", "last_update_timestamp", "tracking_num", "order_num", "note"], None, 1, [5]),
            (
                "duplicate.csv",
                ["order_num", "tracking_num", "status", "status", "last_update_timestamp"],
                "duplicate column names: status",
                3,
                [],
            ),
            (
                "missing.csv",
                ["order_num", "tracking_num"],
                "missing required columns: status, last_update_timestamp",
                0,
                [],
            ),
        ],
        headers.schema,
    )
    assert_df_equality(headers, expected, ignore_row_order=True, ignore_nullable=True)
