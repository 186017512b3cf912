"""What the stage job does with its inputs: relative paths, unreadable files, whole-file rejects, an unclosed quote."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from spark_jobs import reading
from spark_jobs.cli import OrderLoadError
from spark_jobs.schema import MAX_FIELD_CHARS, MAX_RECORD_FIELDS
from spark_jobs.stage_orders import stage_orders
from spark_jobs.tables import table_exists
from tests.conftest import SEED_FILES
from tests.spark_jobs.helpers import HEADER, read, write_csv


def _row(n: int, address: str = "1 Elm St") -> str:
    return f"{n},TRK{n:04d},2023-01-01,,In Transit,{address},2023-01-01 10:00:00\n"


def _stage(spark, tables, uris, batch_id, limit=0.1):
    return stage_orders(
        spark, [{"uri": uri} for uri in uris], batch_id, tables.staging, tables.rejects, tables.audit, limit
    )


def test_a_relative_path_is_read_and_reconciled(spark, tables, tmp_path, monkeypatch):
    write_csv(tmp_path / "data", "orders.csv", HEADER + _row(1) + _row(2))
    monkeypatch.chdir(tmp_path)

    metrics = _stage(spark, tables, ["data/orders.csv"], "relative")

    assert (metrics["rows_read"], metrics["rows_staged"], metrics["files"][0]["uri"]) == (2, 2, "data/orders.csv")
    sources = {r["_source_file"] for r in read(spark, tables.staging).collect()}
    assert sources == {f"file:{tmp_path}/data/orders.csv"}


def test_files_that_cannot_be_read_are_rejected_whole_and_the_rest_of_the_batch_loads(spark, tables, tmp_path):
    """Failures that belong to one file reject that file, with its reason; they once failed the whole batch."""
    good = write_csv(tmp_path, "good.csv", HEADER + _row(1) + _row(2))
    long_field = write_csv(tmp_path, "long_field.csv", HEADER + _row(3, "x" * (MAX_FIELD_CHARS + 1)) + _row(4))
    wide = write_csv(tmp_path, "wide.csv", HEADER + _row(5) + "," * MAX_RECORD_FIELDS + "\n")
    (tmp_path / "folder.csv").mkdir()
    listed = write_csv(tmp_path, "resized.csv", HEADER + _row(6))
    inputs = [
        {"uri": str(good)},
        {"uri": str(tmp_path / "absent.csv")},
        {"uri": str(long_field)},
        {"uri": str(wide)},
        {"uri": str(tmp_path / "folder.csv")},
        {"uri": str(listed), "size": listed.stat().st_size - 1},
        {"uri": "gs://bucket/input//double.csv"},
    ]

    metrics = stage_orders(spark, inputs, "contained", tables.staging, tables.rejects, tables.audit, 1.0)

    reasons = {f["uri"].rsplit("/", 1)[-1]: (f["status"], f["reason"]) for f in metrics["files"]}
    unparsable = (
        "the reader cannot parse it: a field longer than 16,777,216 characters or a record of more than "
        "20,480 fields (the reader's limits)"
    )
    assert reasons == {
        "good.csv": ("loaded", None),
        "absent.csv": ("rejected", "the file is gone: moved or deleted since it was listed"),
        "long_field.csv": ("rejected", unparsable),
        "wide.csv": ("rejected", unparsable),
        "folder.csv": ("rejected", "a directory, not a file"),
        "resized.csv": (
            "rejected",
            f"changed since it was listed: {listed.stat().st_size - 1} bytes then, {listed.stat().st_size} now",
        ),
        "double.csv": (
            "rejected",
            "its name holds an empty, '.' or '..' path segment (such as '//'), which Hadoop file systems cannot read",
        ),
    }
    assert (metrics["rows_staged"], metrics["files_rejected"]) == (2, 6)
    # Every data row of a file rejected whole is counted, from its bytes where Spark could not read it.
    rows = {f["uri"].rsplit("/", 1)[-1]: f["rows"] for f in metrics["files"]}
    assert rows == {
        **{"good.csv": 2, "long_field.csv": 2, "wide.csv": 2, "resized.csv": 1},
        **{"absent.csv": 0, "folder.csv": 0, "double.csv": 0},  # no bytes to count
    }
    staged = read(spark, tables.staging).collect()
    assert sorted((r["tracking_num"], r["_source_file"]) for r in staged) == [
        ("TRK0001", f"file:{good}"),
        ("TRK0002", f"file:{good}"),
    ]
    rejects = {
        r["source_file"].rsplit("/", 1)[-1]: (r["line_number"], r["reason"])
        for r in read(spark, tables.rejects).collect()
    }
    assert rejects["absent.csv"] == (
        1,
        "file rejected: the file is gone: moved or deleted since it was listed (0 data rows not loaded)",
    )
    assert rejects["double.csv"][1].startswith("file rejected: its name holds an empty")
    assert set(rejects) == set(reasons) - {"good.csv"}
    assert read(spark, tables.audit).first()["status"] == "staged"


def test_a_file_changed_while_it_was_read_is_rejected_whole(spark, tables, tmp_path, monkeypatch):
    """The header is read first and the records after: a file rewritten in between is not loaded from two versions."""
    steady = write_csv(tmp_path, "steady.csv", HEADER + _row(1))
    rewritten = write_csv(tmp_path, "rewritten.csv", HEADER + _row(2))
    counted = reading.record_counts

    def rewrite_then_count(parsed):
        rewritten.write_text("tracking_num,status\nTRK0009,Lost\nTRK0010,Lost\n")
        return counted(parsed)

    monkeypatch.setattr(reading, "record_counts", rewrite_then_count)
    metrics = _stage(spark, tables, [str(steady), str(rewritten)], "rewritten", limit=1.0)

    reasons = {f["uri"].rsplit("/", 1)[-1]: (f["status"], f["reason"]) for f in metrics["files"]}
    size = len(HEADER + _row(2))
    assert reasons == {
        "steady.csv": ("loaded", None),
        "rewritten.csv": ("rejected", f"changed while it was read: {size} bytes then, {rewritten.stat().st_size} now"),
    }
    assert [r["tracking_num"] for r in read(spark, tables.staging).collect()] == ["TRK0001"]


def test_a_batch_whose_every_file_is_rejected_fails_and_counts_every_row(spark, tables, tmp_path):
    renamed = HEADER.replace("status", "state")  # an upstream rename of a required column
    files = [write_csv(tmp_path, f"renamed_{i}.csv", renamed + _row(i) + _row(i + 10)) for i in range(2)]

    with pytest.raises(OrderLoadError) as failure:
        _stage(spark, tables, [str(p) for p in files], "renamed")

    message = str(failure.value)
    assert "batch renamed: 4 of 4 rows rejected (100.0%), above the limit of 10.0%" in message
    assert "file rejected: missing required columns: status (4 rows)" in message
    audit = read(spark, tables.audit).first()
    assert (audit["status"], audit["rows_read"], audit["rows_rejected"], audit["files_rejected"]) == (
        "stage_failed",
        4,
        4,
        2,
    )
    rejects = sorted((r["source_file"], r["line_number"], r["reason"]) for r in read(spark, tables.rejects).collect())
    assert rejects == [
        (f"file:{path}", 1, "file rejected: missing required columns: status (2 data rows not loaded)")
        for path in files
    ]
    assert not table_exists(spark, tables.staging)


def test_an_unclosed_quote_rejects_the_file_whole_and_counts_every_swallowed_line(spark, tables, tmp_path):
    # 98 data lines; the quote opened on line 3 never closes, so lines 3-99 read as one record.
    lines = [_row(1), _row(2, '"1 Elm St')] + [_row(n) for n in range(3, 99)]
    broken = write_csv(tmp_path, "broken.csv", HEADER + "".join(lines))
    good = SEED_FILES[0]

    reason = "unclosed quote: the record on line 3 runs to the end of the file (97 lines read as one record)"

    # 98 of 118 rows rejected, over the 10% limit: the broken file is quarantined and the good one loads.
    metrics = _stage(spark, tables, [str(good), str(broken)], "quote", limit=0.1)

    by_name = {f["uri"].rsplit("/", 1)[-1]: f for f in metrics["files"]}
    assert (by_name["broken.csv"]["status"], by_name["broken.csv"]["rows"], by_name["broken.csv"]["reason"]) == (
        "rejected",
        98,
        reason,
    )
    assert (metrics["rows_read"], metrics["rows_rejected"], metrics["rows_staged"]) == (118, 98, 20)
    # Line 2 was valid, but its file is rejected whole: nothing of it is staged.
    staged_sources = {
        r["_source_file"] for r in read(spark, tables.staging).where(F.col("_batch_id") == "quote").collect()
    }
    assert staged_sources == {f"file:{good}"}
    rejects = read(spark, tables.rejects).where(F.col("batch_id") == "quote").orderBy("line_number").collect()
    assert [r["line_number"] for r in rejects] == [1, 3]
    assert rejects[0]["reason"] == f"file rejected: {reason} (98 data rows not loaded)"
    assert rejects[1]["reason"].startswith("expected 7 fields, found ")
    assert rejects[1]["raw_record"].startswith('2,TRK0002,2023-01-01,,In Transit,"1 Elm St,2023-01-01 10:00:00\n3,')
    assert rejects[1]["raw_record"].endswith("98,TRK0098,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00")


def test_a_batch_staged_again_after_its_files_moved_reads_them_there_and_keeps_its_rejects(spark, tables, tmp_path):
    """Clearing a run that archived its files stages the same batch again: its rows, and its rejected rows."""
    listed = write_csv(tmp_path / "input", "orders.csv", HEADER + _row(1) + _row(2).replace("2023-01-01 10", "bad"))
    archived = tmp_path / "archive" / "cleared" / "orders.csv"
    inputs = [
        {
            "uri": str(listed),
            "size": listed.stat().st_size,
            "archive_uri": str(archived),
            "rejected_uri": str(tmp_path / "rejected" / "orders.csv"),
        }
    ]

    def stage():
        metrics = stage_orders(spark, inputs, "cleared", tables.staging, tables.rejects, tables.audit, 1.0)
        rejects = [(r["line_number"], r["reason"]) for r in read(spark, tables.rejects).collect()]
        staged = [(r["tracking_num"], r["_source_file"]) for r in read(spark, tables.staging).collect()]
        return metrics["files"], rejects, staged

    files, rejects, staged = stage()
    archived.parent.mkdir(parents=True)
    listed.rename(archived)  # the run archived it; then someone clears the run
    files_again, rejects_again, staged_again = stage()

    assert rejects == rejects_again == [(3, "last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp")]
    assert [(f["uri"], f["status"], f["rows"]) for f in files_again] == [(str(listed), "loaded", 2)]
    assert files_again == files
    assert staged == [("TRK0001", f"file:{listed}")]
    assert staged_again == [("TRK0001", f"file:{archived}")]


def test_a_quote_left_open_in_the_last_column_counts_each_row_once(spark, tables, tmp_path):
    """50 data rows; the quote opened in line 4's last column swallows lines 4-51. It counted 51 rows, 49 lines."""
    opened = _row(3).replace(",2023-01-01 10:00:00", ',"2023-01-01 10:00:00')
    broken = write_csv(tmp_path, "broken.csv", HEADER + _row(1) + _row(2) + opened + "".join(map(_row, range(4, 51))))

    metrics = _stage(spark, tables, [str(broken)], "open_last", limit=1.0)

    (file,) = metrics["files"]
    assert (file["rows"], file["rows_rejected"], file["status"]) == (50, 50, "rejected")
    assert (
        file["reason"]
        == "unclosed quote: the record on line 4 runs to the end of the file (48 lines read as one record)"
    )
    assert (metrics["rows_read"], metrics["rows_rejected"], metrics["rows_staged"]) == (50, 50, 0)


def test_reject_line_numbers_count_records_and_say_so(spark, tables, tmp_path):
    """The reader skips blank lines and reads a quoted line break inside one record, so the number it gives
    a rejected row is its record's, the header being record 1: the contract calls it that (not a line)."""
    blank_then_bad = HEADER + _row(1) + "\n" + _row(2).replace("In Transit", "")
    spanning_then_bad = HEADER + _row(1, '"1 Elm St\nFlat 2"') + _row(2).replace("In Transit", "")
    files = [write_csv(tmp_path, "blank.csv", blank_then_bad), write_csv(tmp_path, "span.csv", spanning_then_bad)]

    _stage(spark, tables, [str(path) for path in files], "records", limit=1.0)

    rejects = sorted(
        (r["source_file"].rsplit("/", 1)[-1], r["line_number"]) for r in read(spark, tables.rejects).collect()
    )
    assert rejects == [("blank.csv", 3), ("span.csv", 3)]  # both on physical line 4


def test_a_file_named_with_percent_escapes_is_read_under_its_literal_name(spark, tables, tmp_path):
    """Spark reports paths URL-encoded and the stage decodes them: a name that itself holds ``%20`` and ``%2B``
    must come back as written, or its rows would match no input and fail the batch."""
    odd = write_csv(tmp_path, "a%20b%2Bc.csv", HEADER + _row(1))

    metrics = _stage(spark, tables, [str(odd)], "percent", limit=1.0)

    assert [(f["uri"], f["status"], f["rows"]) for f in metrics["files"]] == [(str(odd), "loaded", 1)]
    assert [r["_source_file"] for r in read(spark, tables.staging).collect()] == [f"file:{tmp_path}/a%20b%2Bc.csv"]
