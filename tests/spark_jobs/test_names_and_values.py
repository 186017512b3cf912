"""Any name, any content: file names, column names and values from a file are data, never the reader's or SQL's.

Each test stands for one way an outside file once stopped a batch, lost rows silently or corrupted the
target (issue 35's numbered points); each fails on the code before that fix.
"""

from __future__ import annotations

import bz2
import gzip
import re
import zlib

import pytest
from pyspark.sql import functions as F

from spark_jobs import extract
from spark_jobs.extract import DECOMPRESSED_SUFFIXES, refused_name
from spark_jobs.headers import HEAD_BYTES, compression_of, count_records, quote_open_at_end
from spark_jobs.merge_orders import merge_orders
from spark_jobs.outcomes import NONE_READ
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


# 3. Rows "loaded" that went nowhere


@pytest.mark.parametrize(
    ("name", "reason_part"),
    [
        ("_orders.csv", "its name starts with '_', which Spark's file reader skips as hidden"),
        (".orders.csv", "its name starts with '.', which Spark's file reader skips as hidden"),
        ("orders.csv._COPYING_", "ends with '._COPYING_'"),
        ("orders.csv.bz2", "ends with '.bz2'"),
        ("orders.csv.lz4", "ends with '.lz4'"),
        ("orders.csv.gz", "ends with '.gz'"),
        ("orders.csv.zst", "ends with '.zst'"),
    ],
)
def test_a_name_the_reader_would_hide_or_decode_rejects_its_file_with_every_row_counted(
    spark, tables, tmp_path, name, reason_part
):
    hidden = write_csv(tmp_path, name, HEADER + _row("K1") + _row("K2") + _row("K3"))
    good = write_csv(tmp_path, "good.csv", HEADER + _row("K4"))

    metrics = _stage(spark, tables, [hidden, good], "hidden")

    assert _files(metrics) == {name: ("rejected", 3, 3), "good.csv": ("loaded", 1, 0)}
    (reason,) = [f["reason"] for f in metrics["files"] if f["status"] == "rejected"]
    assert reason_part in reason
    assert (metrics["rows_read"], metrics["rows_rejected"], metrics["rows_staged"]) == (4, 3, 1)


def test_a_file_spark_returns_no_records_of_is_never_loaded_though_its_head_shows_data(
    spark, tables, tmp_path, monkeypatch
):
    """The net under the name rules: were Spark to hide a name they do not know, the file is not "loaded"."""
    monkeypatch.setattr(extract, "refused_name", lambda path: None)
    hidden = write_csv(tmp_path, "_orders.csv", HEADER + _row("K1"))
    header_only = write_csv(tmp_path, "header_only.csv", HEADER + "\n\n")

    metrics = _stage(spark, tables, [hidden, header_only], "unseen")

    assert _files(metrics) == {"_orders.csv": ("rejected", 0, 0), "header_only.csv": ("loaded", 0, 0)}
    assert metrics["files"][0]["reason"] == NONE_READ


NAMES = ["_a.csv", "_a=b.csv", ".a.csv", "a.csv._COPYING_", "_metadata.csv", "_common_metadata.csv", "a_.csv", "a.csv"]


def test_the_names_refused_as_hidden_are_those_spark_does_not_read(spark, tmp_path):
    """Asked of Spark itself: each name, alone in a read of its exact path, gives its one record or none."""
    read = {}
    for name in NAMES:
        path = write_csv(tmp_path / name.replace(".", "d"), name, "x\n")
        read[name] = spark.read.option("__globPaths__", "false").text(str(path)).count() == 1
    accepted = {name: refused_name(f"gs://b/input/{name}") is None for name in NAMES}
    assert accepted == read
    assert sorted(name for name, readable in read.items() if not readable) == [
        ".a.csv",
        "_a.csv",
        "_common_metadata.csv",
        "_metadata.csv",
        "a.csv._COPYING_",
    ]


def test_the_suffixes_refused_are_those_hadoop_decompresses_by(spark):
    factory = spark.sparkContext._jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(
        spark.sparkContext._jsc.hadoopConfiguration()
    )
    reversed_suffixes = re.findall(r"(\S+): org\.apache", factory.toString())
    assert sorted(suffix[::-1] for suffix in reversed_suffixes) == sorted(DECOMPRESSED_SUFFIXES)


@pytest.mark.parametrize(
    ("data", "kind", "records"),
    [
        (b"a,b\n1,2\n\n3,4", None, 2),
        (b'a,b\n1,"x\ny"\r\n2,3\r\n', None, 2),
        (b'a,b\n1,"open\n2,3\n', None, 1),
        (b"x^not zlib,b\n1,2\n", None, 1),  # starts like a zlib header, but it is text
        (b"a,b\n1," + b"x" * 200_000 + b"\n\x00\n", None, 2),  # a field past Python's csv default limit
        (gzip.compress(b"a,b\n1,2\n3,4\n"), "gzip", 2),
        (bz2.compress(b"a,b\n1,2\n"), "bzip2", 1),
        (zlib.compress(b"a,b\n1,2\n"), "zlib", 1),
        (b"\x28\xb5\x2f\xfd\x00\x58\xff\xfe", "zstd", None),
    ],
)
def test_content_is_known_by_its_bytes_and_its_records_counted(data, kind, records):
    assert (compression_of(data), count_records(data)) == (kind, records)


def test_compressed_content_under_a_plain_name_is_rejected_as_compressed(spark, tables, tmp_path):
    packed = write_csv(tmp_path, "orders.csv", gzip.compress((HEADER + _row("K1")).encode()))

    metrics = _stage(spark, tables, [packed], "packed")

    (item,) = metrics["files"]
    assert (item["status"], item["reason"]) == (
        "rejected",
        "gzip-compressed content: the contract takes uncompressed CSV; upload it decompressed",
    )
    assert (item["rows"], item["rows_rejected"]) == (1, 1)  # counted after decompressing it


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


# 5. A valid U+FFFD


def test_a_real_replacement_character_is_data_and_invalid_bytes_are_rejected(spark, tables, tmp_path):
    text = (HEADER + _row("K\ufffd1", address="Stra\ufffde")).encode("utf-8")
    real = write_csv(tmp_path, "real.csv", text)
    broken = write_csv(tmp_path, "broken.csv", (HEADER + _row("K2", address="Stra\xdfe")).encode("latin-1"))

    metrics = _stage(spark, tables, [real, broken], "fffd")

    assert _files(metrics) == {"real.csv": ("loaded", 1, 0), "broken.csv": ("loaded", 1, 1)}
    staged = [(r["tracking_num"], r["address"]) for r in read(spark, tables.staging).collect()]
    assert staged == [("K\ufffd1", "Stra\ufffde")]
    assert [r["reason"] for r in read(spark, tables.rejects).collect()] == ["invalid UTF-8 bytes"]


def test_unicode_line_separators_inside_values_are_data_not_line_endings(spark, tables, tmp_path):
    """U+2028, U+2029, NEL (U+0085), form feed and vertical tab end a line for Python's ``splitlines``, never
    for CSV: each is kept in its value, and the file's rows are its LF-ended records."""
    keys = ("K\u2028A", "K\x85B")
    addresses = ("1\u2029Elm\x0cSt", "2\x0bOak\x85Rd")
    text = HEADER + "".join(_row(key, address=address) for key, address in zip(keys, addresses, strict=True))
    separators = write_csv(tmp_path, "separators.csv", text.encode("utf-8"))

    metrics = _stage(spark, tables, [separators], "separators")

    assert _files(metrics) == {"separators.csv": ("loaded", 2, 0)}
    staged = sorted((r["tracking_num"], r["address"]) for r in read(spark, tables.staging).collect())
    assert staged == sorted(zip(keys, addresses, strict=True))


# 6. Mixed line endings


def test_crlf_rows_under_an_lf_header_are_the_same_events_as_an_all_crlf_copy(spark, tables, tmp_path):
    header = HEADER.rstrip("\n") + ",carrier\n"
    rows = _row("K1").rstrip("\n") + ",DHL\n" + _row("K2").rstrip("\n") + ',"UPS"\n'
    mixed = write_csv(tmp_path, "mixed.csv", header + rows.replace("\n", "\r\n") + "\r\n")  # and a blank line
    crlf = write_csv(tmp_path, "crlf.csv", (header + rows).replace("\n", "\r\n"))

    metrics = _stage(spark, tables, [mixed, crlf], "crlf")

    assert (metrics["rows_read"], metrics["rows_staged"], metrics["rows_collapsed"]) == (4, 2, 2)
    staged = {r["tracking_num"]: r["_rescued_data"] for r in read(spark, tables.staging).collect()}
    assert staged == {"K1": '{"carrier":"DHL"}', "K2": '{"carrier":"UPS"}'}


@pytest.mark.parametrize(
    ("name", "header_end", "row_ends"),
    [
        ("crlf_header_lf_rows.csv", "\r\n", ["\n", "\n", "\n"]),
        ("crlf_header_mixed_rows.csv", "\r\n", ["\n", "\r\n", "\n"]),
        ("bare_cr.csv", "\r", ["\r", "\r", "\r"]),
    ],
)
def test_rows_end_at_any_line_ending_after_a_crlf_header_and_a_quoted_line_break_is_kept_as_written(
    spark, tables, tmp_path, name, header_end, row_ends
):
    """The reader once took the first line's ending for the file's: after a CRLF header, LF-only rows were
    joined into one record (rejected for its width). A quoted line break is a value's, kept as written."""
    quoted = {"\n": '"Flat 2\r\nBack door"', "\r\n": '"Flat 2\nBack door"', "\r": '"Flat 2\rBack door"'}
    rows = [_row("K1"), _row("K2", address=quoted[row_ends[1]]), _row("K3")]
    ended = [row.rstrip("\n") + end for row, end in zip(rows, row_ends, strict=True)]
    text = HEADER.rstrip("\n") + header_end + "".join(ended)
    path = write_csv(tmp_path, name, text)

    metrics = _stage(spark, tables, [path], "line_endings")

    assert _files(metrics) == {name: ("loaded", 3, 0)}
    staged = {r["tracking_num"]: (r["address"], r["_line_number"]) for r in read(spark, tables.staging).collect()}
    assert staged == {"K1": ("1 Elm St", 2), "K2": (quoted[row_ends[1]].strip('"'), 3), "K3": ("1 Elm St", 4)}


# 7. Long headers


def test_a_header_longer_than_the_limit_rejects_its_file_with_its_rows_counted(spark, tables, tmp_path):
    long_name = "x" * HEAD_BYTES
    wide = write_csv(tmp_path, "wide.csv", HEADER.rstrip("\n") + f",{long_name}\n" + _row("K1") + _row("K2"))
    good = write_csv(tmp_path, "good.csv", HEADER + _row("K3"))

    metrics = _stage(spark, tables, [wide, good], "long_header")

    assert _files(metrics) == {"wide.csv": ("rejected", 2, 2), "good.csv": ("loaded", 1, 0)}
    (reason,) = [f["reason"] for f in metrics["files"] if f["status"] == "rejected"]
    assert (
        reason
        == "the header does not end within its first 64 KiB (the contract's limit), or a quote in it never closes"
    )


# 8. An open quote on the last line


@pytest.mark.parametrize("newline", ["\n", ""])
def test_a_quote_opened_in_the_last_line_rejects_the_file_whole(spark, tables, tmp_path, newline):
    last_column = _row("K2").replace(",2023-01-01 10:00:00\n", ',"2023-01-01 10:00:00') + newline
    middle_column = _row("K2").replace(",1 Elm St,", ',"1 Elm St,').rstrip("\n") + newline
    files = [
        write_csv(tmp_path, "last.csv", HEADER + _row("K1") + last_column),
        write_csv(tmp_path, "middle.csv", HEADER + _row("K1") + middle_column),
    ]

    metrics = _stage(spark, tables, files, "open_quote")

    assert _files(metrics) == {"last.csv": ("rejected", 2, 2), "middle.csv": ("rejected", 2, 2)}
    reasons = {f["uri"].rsplit("/", 1)[-1]: f["reason"] for f in metrics["files"]}
    assert reasons == {
        name: "unclosed quote: the record on line 3 runs to the end of the file (1 line read as one record)"
        for name in ("last.csv", "middle.csv")
    }


def test_a_quote_opened_in_the_last_lines_middle_column_of_a_file_larger_than_its_head_rejects_it(
    spark, tables, tmp_path
):
    """Past the head the driver holds, the reader's own record tells: its raw text ends inside a quote."""
    rows = "".join(_row(f"K{n}") for n in range(1200))
    opened = _row("LAST").replace(",1 Elm St,", ',"1 Elm St,')
    big = write_csv(tmp_path, "big.csv", HEADER + rows + opened)
    assert big.stat().st_size > HEAD_BYTES

    metrics = _stage(spark, tables, [big], "open_quote_big")

    assert _files(metrics) == {"big.csv": ("rejected", 1201, 1201)}
    assert metrics["files"][0]["reason"] == (
        "unclosed quote: the record on line 1202 runs to the end of the file (1 line read as one record)"
    )
    (last,) = read(spark, tables.rejects).where(F.col("line_number") == 1202).collect()
    assert last["reason"] == "expected 7 fields, found 6"


@pytest.mark.parametrize("newline", ["\n", ""])
def test_a_quote_opened_in_the_last_lines_last_column_of_a_file_larger_than_its_head_rejects_it(
    spark, tables, tmp_path, newline
):
    """The record the reader returns has the right width and a valid timestamp (the swallowed line break is
    trimmed away): only the file's tail tells, checked against the last field's length as read."""
    rows = "".join(_row(f"K{n}") for n in range(1200))
    opened = _row("LAST").replace(",2023-01-01 10:00:00\n", ',"2023-01-01 10:00:00') + newline
    closed = _row("LAST").replace(",2023-01-01 10:00:00\n", ',"2023-01-01 10:00:00\n"\n')
    big = write_csv(tmp_path, "big.csv", HEADER + rows + opened)
    fine = write_csv(tmp_path, "fine.csv", HEADER + rows.replace(",K", ",F") + closed)
    assert min(big.stat().st_size, fine.stat().st_size) > HEAD_BYTES

    metrics = _stage(spark, tables, [big, fine], "open_quote_big_last")

    assert _files(metrics) == {"big.csv": ("rejected", 1201, 1201), "fine.csv": ("loaded", 1201, 0)}
    (reason,) = [f["reason"] for f in metrics["files"] if f["status"] == "rejected"]
    assert reason == "unclosed quote: the record on line 1202 runs to the end of the file (1 line read as one record)"


@pytest.mark.parametrize(
    ("tail", "field", "open_"),
    [
        (b'1,"abc', 3, True),
        (b'1,"abc\n', 4, True),
        (b'1,"a""b\r\n', 5, True),  # a doubled quote is one byte of the field
        (b'1\n"""x', 2, True),  # the opening quote, then a doubled one
        (b'1\r"abc\r', 4, True),  # a bare-CR file: the last record starts after a CR
        (b'1\r"abc"\r', 3, False),
        (b'1,"', 0, True),
        (b'1,"abc"', 3, False),  # closed
        (b'1,"abc\n"\n', 4, False),  # closed, the field ending in a line break
        (b'1,"a"""', 2, False),  # closed, the field ending in a quote
        (b'1,""', 0, False),  # an empty quoted field
        (b"1,abc\n", 3, False),  # not quoted
        (b'1, "abc\n', 5, False),  # a quote after a space is a character
        (b'1,x "y\n', 4, False),
        (b'"abc', 3, False),  # the separator before it is not in the tail
    ],
)
def test_the_tail_shows_a_quote_left_open_only_when_the_last_field_runs_from_an_opening_quote(tail, field, open_):
    assert quote_open_at_end(tail, field) is open_


# 9. The gate holds good files hostage


def test_a_file_rejected_whole_or_over_the_limit_on_its_own_is_quarantined_and_the_good_file_loads(
    spark, tables, tmp_path
):
    good = write_csv(tmp_path, "good.csv", HEADER + "".join(_row(f"G{n}") for n in range(4)))
    no_status = write_csv(
        tmp_path, "no_status.csv", HEADER.replace(",status", "") + "1,N1,2023-01-01,,x,2023-01-01 10:00:00\n" * 3
    )
    half_bad = write_csv(
        tmp_path, "half_bad.csv", HEADER + _row("H1") + _row("H2") + _row("H3", at="yesterday") + _row("H4", at="")
    )

    metrics = _stage(spark, tables, [good, no_status, half_bad], "gate", limit=0.1)

    assert _files(metrics) == {
        "good.csv": ("loaded", 4, 0),
        "no_status.csv": ("rejected", 3, 3),
        "half_bad.csv": ("rejected", 4, 4),
    }
    reasons = {f["uri"].rsplit("/", 1)[-1]: f["reason"] for f in metrics["files"] if f["reason"]}
    assert reasons == {
        "no_status.csv": "missing required columns: status",
        "half_bad.csv": "2 of 4 rows rejected (50.0%), above the limit of 10.0%",
    }
    assert (metrics["rows_read"], metrics["rows_rejected"], metrics["rows_staged"]) == (11, 7, 4)
    assert sorted(r["tracking_num"] for r in read(spark, tables.staging).collect()) == ["G0", "G1", "G2", "G3"]
    rejects = sorted(
        (r["source_file"].rsplit("/", 1)[-1], r["line_number"], r["reason"])
        for r in read(spark, tables.rejects).collect()
    )
    assert rejects == [
        (
            "half_bad.csv",
            1,
            "file rejected: 2 of 4 rows rejected (50.0%), above the limit of 10.0% (4 data rows not loaded)",
        ),
        ("half_bad.csv", 4, "last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp"),
        ("half_bad.csv", 5, "last_update_timestamp is empty"),
        ("no_status.csv", 1, "file rejected: missing required columns: status (3 data rows not loaded)"),
    ]
