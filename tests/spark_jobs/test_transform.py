"""Pure transforms, compared whole with chispa on small inline inputs; header rules and URIs in plain Python."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.extract import BYTES_VALID, LAST_FIELD_BYTES, RAW_TEXT, RECORD_ID, InputError, InputFile, normalise_uri
from spark_jobs.headers import file_header
from spark_jobs.outcomes import file_outcomes
from spark_jobs.schema import (
    EVENT_TIME,
    ORDER_COLUMNS,
    RESCUED_DATA,
    ROWS_COLLAPSED,
    SOURCE_FILE,
    SUPERSEDED_EVENTS,
    TARGET_COLUMNS,
    TARGET_SCHEMA,
)
from spark_jobs.transform import (
    REJECT_REASONS,
    VALIDATION_RULES,
    Rule,
    collapse_to_latest,
    field_count,
    parse_orders,
)
from tests.spark_jobs.helpers import HEADER

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
            # B: same time, other content, in two files: the greater content wins (status first), not the file.
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
            (
                *event("B", "2023-01-05 00:00:00", "Returned", "f1", 9),
                [event("B", "2023-01-05 00:00:00", "Delayed", "f2", 2)],
                1,
            ),
            (*event("C", "2023-01-03 00:00:00", "Delivered", "f1", 5), [], 1),
        ],
        expected_schema,
    )
    assert_df_equality(collapsed, expected, ignore_row_order=True, ignore_nullable=True)
    assert list(collapsed.columns[: len(TARGET_COLUMNS)]) == list(TARGET_COLUMNS)


SEED_HEADER = file_header(HEADER.encode(), len(HEADER))
RECORDS = T.StructType(
    [T.StructField(f"_c{i}", T.StringType()) for i in range(7)]
    + [T.StructField(name, dtype) for name, dtype in ((RAW_TEXT, T.StringType()), (SOURCE_FILE, T.StringType()))]
    + [T.StructField(RECORD_ID, T.LongType())]
)


def _records(spark, rows, schema=RECORDS, bytes_valid=True):
    """``read_csv_records``' rows: cells, raw text, source file, record id, whether the bytes were UTF-8, and
    the last field's bytes (passed through as read)."""
    frame = spark.createDataFrame(rows, schema).withColumn(BYTES_VALID, F.lit(bytes_valid))
    return frame.withColumn(LAST_FIELD_BYTES, F.lit(LAST_FIELD).cast("int"))


LAST_FIELD = 19
# An empty field reads as null.
GOOD = ("1", "TRK1", "2023-01-01", None, "In Transit", "1 Elm St", "2023-01-01 10:00:00")
GOOD_VALUES = (1, "TRK1", dt.date(2023, 1, 1), None, "In Transit", "1 Elm St", dt.datetime(2023, 1, 1, 10))
PARSED = T.StructType(
    [T.StructField(name, dtype) for name, dtype in ORDER_COLUMNS.items()]
    + [
        T.StructField(RESCUED_DATA, T.StringType()),
        T.StructField(SOURCE_FILE, T.StringType()),
        T.StructField(RECORD_ID, T.LongType()),
        T.StructField(LAST_FIELD_BYTES, T.IntegerType()),
        T.StructField(REJECT_REASONS, T.ArrayType(T.StringType())),
        T.StructField(RAW_TEXT, T.StringType()),
    ]
)


def with_cell(position: int, text: str | None) -> tuple:
    return tuple(text if i == position else value for i, value in enumerate(GOOD))


def with_value(position: int, value) -> tuple:
    return tuple(value if i == position else v for i, v in enumerate(GOOD_VALUES))


RULES = {
    "valid row": (GOOD, None, GOOD_VALUES, [], None),
    "surrounding spaces are trimmed": (
        (" 1 ", " TRK1 ", " 2023-01-01 ", " ", " In Transit ", " 1 Elm St ", " 2023-01-01T10:00:00 "),
        None,
        GOOD_VALUES,
        [],
        None,
    ),
    "Unicode white space is trimmed": (
        (
            "\t1\u3000",
            "\u00a0TRK1\t",
            "\u20282023-01-01\u2029",
            "\u00a0\u1680",
            "\u2003In Transit\u202f",
            "\x0b1 Elm St\x0c",
            "\u205f2023-01-01T10:00:00\u0085",
        ),
        None,
        GOOD_VALUES,
        [],
        None,
    ),
    "a key of white space only is empty": (
        with_cell(1, "\u00a0\t\u3000"),
        None,
        with_value(1, None),
        ["tracking_num is empty"],
        "1,\u00a0\t\u3000,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00",
    ),
    "timestamp before the accepted range": (
        with_cell(6, "1899-12-31 23:59:59"),
        None,
        with_value(6, dt.datetime(1899, 12, 31, 23, 59, 59)),  # it parses; the row is rejected for its range
        ["last_update_timestamp is before 1900-01-01"],
        "1,TRK1,2023-01-01,,In Transit,1 Elm St,1899-12-31 23:59:59",
    ),
    "empty tracking_num": (
        with_cell(1, " "),
        None,
        with_value(1, None),
        ["tracking_num is empty"],
        "1, ,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00",
    ),
    "empty status": (
        with_cell(4, None),
        None,
        with_value(4, None),
        ["status is empty"],
        "1,TRK1,2023-01-01,,,1 Elm St,2023-01-01 10:00:00",
    ),
    "order_num not a whole number": (
        with_cell(0, "1.5"),
        None,
        with_value(0, None),
        ["order_num is not a whole number"],
        "1.5,TRK1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00",
    ),
    "bad date": (
        with_cell(2, "2023-02-30"),
        None,
        with_value(2, None),
        ["pck_recieved_date is not a yyyy-MM-dd date"],
        "1,TRK1,2023-02-30,,In Transit,1 Elm St,2023-01-01 10:00:00",
    ),
    "date in another format": (
        with_cell(3, "01/02/2023"),
        None,
        GOOD_VALUES,
        ["package_deliver_date is not a yyyy-MM-dd date"],
        "1,TRK1,2023-01-01,01/02/2023,In Transit,1 Elm St,2023-01-01 10:00:00",
    ),
    "empty timestamp": (
        with_cell(6, None),
        None,
        with_value(6, None),
        ["last_update_timestamp is empty"],
        "1,TRK1,2023-01-01,,In Transit,1 Elm St,",
    ),
    "timestamp with fractions": (
        with_cell(6, "2023-01-01 10:00:00.5"),
        None,
        with_value(6, None),
        ["last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp"],
        "1,TRK1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00.5",
    ),
    "NUL byte": (
        with_cell(5, "1 Elm\x00 St"),
        None,
        with_value(5, "1 Elm\x00 St"),
        ["contains a NUL byte"],
        "1,TRK1,2023-01-01,,In Transit,1 Elm\x00 St,2023-01-01 10:00:00",
    ),
    "wrong field count": (
        GOOD,
        "1,TRK1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00,extra\r\n",
        GOOD_VALUES,
        ["expected 7 fields, found 8"],
        "1,TRK1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00,extra",
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_parse_orders_applies_one_rule(spark, rule):
    cells, raw_text, values, reasons, rejected_text = RULES[rule]
    records = _records(spark, [(*cells, raw_text, "file:/in/a.csv", 7)])

    parsed = parse_orders(records, SEED_HEADER)

    expected = spark.createDataFrame([(*values, None, "file:/in/a.csv", 7, LAST_FIELD, reasons, rejected_text)], PARSED)
    assert_df_equality(parsed, expected, ignore_nullable=True)


def test_invalid_utf8_bytes_reject_a_row_and_a_real_replacement_character_does_not(spark):
    fffd = with_cell(5, "Stra\ufffde")
    records = _records(spark, [(*fffd, None, "file:/in/a.csv", 7)]).unionByName(
        _records(spark, [(*fffd, None, "file:/in/a.csv", 8)], bytes_valid=False)
    )

    parsed = parse_orders(records, SEED_HEADER).orderBy(RECORD_ID).collect()

    assert [(row["address"], row[REJECT_REASONS]) for row in parsed] == [
        ("Stra\ufffde", []),
        ("Stra\ufffde", ["invalid UTF-8 bytes"]),
    ]


NO_INSTANT = ["2023-01-01 24:00:00", "2023-01-01 23:59:60", "2023-02-29 10:00:00", "2023-01-01T10:60:00"]


@pytest.mark.parametrize("text", NO_INSTANT)
def test_a_well_shaped_timestamp_that_is_no_instant_is_rejected_not_rolled_over(spark, text):
    """Hour 24, a leap second, 29 February of a common year, minute 60: the shape passes, the value does not
    exist, and the row is rejected with the timestamp's reason (never moved to the next minute or day)."""
    records = _records(spark, [(*with_cell(6, text), None, "file:/in/a.csv", 7)])

    [row] = parse_orders(records, SEED_HEADER).collect()

    assert (row[EVENT_TIME], row[REJECT_REASONS]) == (
        None,
        ["last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp"],
    )


def test_a_rule_added_to_the_rules_decides_validity_and_gives_its_reason(spark):
    """A rule is one entry: added there, it rejects the rows it names, with its reason, and only those."""
    no_address = Rule("address is empty", lambda f: f.value["address"].isNull())
    rows = [(*GOOD, None, "file:/in/a.csv", 2), (*with_cell(5, " "), None, "file:/in/a.csv", 3)]
    records = _records(spark, rows)

    parsed = parse_orders(records, SEED_HEADER, (*VALIDATION_RULES, no_address)).orderBy(RECORD_ID).collect()

    rebuilt = "1,TRK1,2023-01-01,,In Transit, ,2023-01-01 10:00:00"
    assert [(row[RECORD_ID], row[REJECT_REASONS], row[RAW_TEXT]) for row in parsed] == [
        (2, [], None),
        (3, ["address is empty"], rebuilt),
    ]
    # Without it, both rows are valid: an empty address is allowed.
    unchanged = parse_orders(records, SEED_HEADER).orderBy(RECORD_ID).collect()
    assert [row[REJECT_REASONS] for row in unchanged] == [[], []]


def test_parse_orders_maps_columns_by_name_and_rescues_unknown_ones(spark):
    text = "status,last_update_timestamp,tracking_num,carrier,order_num\n"
    header = file_header(text.encode(), len(text))
    records = _records(
        spark,
        [("Delivered", "2023-01-02 10:00:00", "TRK2", "DHL", "2", None, "f", 3)],
        ", ".join(f"_c{i} string" for i in range(5)) + f", {RAW_TEXT} string, {SOURCE_FILE} string, {RECORD_ID} long",
    )

    parsed = parse_orders(records, header)

    expected = spark.createDataFrame(
        [
            (
                2,
                "TRK2",
                None,
                None,
                "Delivered",
                None,
                dt.datetime(2023, 1, 2, 10),
                '{"carrier":"DHL"}',
                "f",
                3,
                LAST_FIELD,
                [],
                None,
            )
        ],
        PARSED,
    )
    assert_df_equality(parsed, expected, ignore_nullable=True)


@pytest.mark.parametrize(
    ("text", "names", "error"),
    [
        (HEADER, tuple(HEADER.strip().split(",")), None),
        ("\ufeff" + HEADER, tuple(HEADER.strip().split(",")), None),
        (
            " status , last_update_timestamp,tracking_num,,order_num\r\n1",
            ("status", "last_update_timestamp", "tracking_num", "_c4", "order_num"),
            None,
        ),
        (
            "order_num,tracking_num\n",
            ("order_num", "tracking_num"),
            "missing required columns: status, last_update_timestamp",
        ),
        (
            "order_num,tracking_num,status,status,last_update_timestamp\n",
            ("order_num", "tracking_num", "status", "status", "last_update_timestamp"),
            "duplicate column names: status",
        ),
        (
            '"order_num,tracking_num\nstatus,last_update_timestamp',
            (),
            "the header does not end within its first 64 KiB (the contract's limit), or a quote in it never closes",
        ),
        ("", (), None),
    ],
    ids=["seed", "bom", "spaces-crlf-blank", "missing", "duplicate", "unclosed-quote", "zero-bytes"],
)
def test_header_rules(text, names, error):
    header = file_header(text.encode(), len(text.encode()))

    assert (header.names, header.error) == (names, error)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("data/orders.csv", f"file:{Path.cwd()}/data/orders.csv"),
        ("/in/../in/a.csv", "file:/in/a.csv"),
        ("file:/in/a.csv", "file:/in/a.csv"),
        ("file:///in/a.csv", "file:/in/a.csv"),
        ("file://localhost/in/a.csv", "file:/in/a.csv"),
        ("gs://bucket/input/a b.csv", "gs://bucket/input/a b.csv"),
    ],
)
def test_input_uris_are_normalised_as_spark_names_files(uri, path):
    assert normalise_uri(uri) == path


def test_a_file_spark_names_otherwise_than_the_inputs_is_a_clear_error():
    text = HEADER + "1,TRK1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00\n"
    named = InputFile(uri="a.csv", path="file:/in/a.csv", size=len(text), header=file_header(text.encode(), len(text)))
    row = {"_source_file": "file:/in/b.csv", "_reject_reasons": [], "records": 1, "first_id": 0, "last_id": 0}

    with pytest.raises(
        InputError, match=r"Spark read file:/in/b.csv, which matches no input as normalised: file:/in/a.csv"
    ):
        file_outcomes([named], [{**row, "last_lines": None, "last_open": None, "hash_xor": 0, "hash_sum": 0}])


def test_header_names_are_trimmed_of_unicode_white_space_but_not_of_other_separators():
    text = "\u00a0order_num\t,tracking_num\u3000,\u2003status,last_update_timestamp\u001f\n"

    assert file_header(text.encode(), len(text.encode())).names == (
        "order_num",
        "tracking_num",
        "status",
        "last_update_timestamp\u001f",  # a unit separator is not white space, though Python's str.strip() drops it
    )
