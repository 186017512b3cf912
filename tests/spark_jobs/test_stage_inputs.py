"""What the stage job does with its inputs: relative paths, a missing file, whole-file rejects, an unclosed quote."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from spark_jobs.cli import OrderLoadError
from spark_jobs.extract import InputError
from spark_jobs.stage_orders import stage_orders
from spark_jobs.tables import table_exists
from tests.conftest import SEED_FILES
from tests.spark_jobs.helpers import HEADER, read, write_csv


def _row(n: int, address: str = "1 Elm St") -> str:
    return f"{n},TRK{n:04d},2023-01-01,,In Transit,{address},2023-01-01 10:00:00\n"


def _stage(spark, tables, uris, batch_id, limit=0.1):
    return stage_orders(
        spark, [{"uri": uri} for uri in uris], batch_id, tables.staging, tables.rejects, limit, tables.audit
    )


def test_a_relative_path_is_read_and_reconciled(spark, tables, tmp_path, monkeypatch):
    write_csv(tmp_path / "data", "orders.csv", HEADER + _row(1) + _row(2))
    monkeypatch.chdir(tmp_path)

    metrics = _stage(spark, tables, ["data/orders.csv"], "relative")

    assert (metrics["rows_read"], metrics["rows_staged"], metrics["files"][0]["uri"]) == (2, 2, "data/orders.csv")
    sources = {r["_source_file"] for r in read(spark, tables.staging).collect()}
    assert sources == {f"file:{tmp_path}/data/orders.csv"}


def test_a_missing_input_fails_before_anything_is_written(spark, tables, tmp_path):
    present = write_csv(tmp_path, "present.csv", HEADER + _row(1))

    with pytest.raises(InputError, match=f"input file not found: file:{tmp_path}/absent.csv"):
        _stage(spark, tables, [str(present), str(tmp_path / "absent.csv")], "missing")

    assert not any(table_exists(spark, t) for t in (tables.staging, tables.rejects, tables.audit))


def test_a_batch_whose_every_file_is_rejected_fails_and_counts_every_row(spark, tables, tmp_path):
    renamed = HEADER.replace("status", "state")  # an upstream rename of a required column
    files = [write_csv(tmp_path, f"renamed_{i}.csv", renamed + _row(i) + _row(i + 10)) for i in range(2)]

    with pytest.raises(OrderLoadError) as failure:
        _stage(spark, tables, [str(p) for p in files], "renamed")

    message = str(failure.value)
    assert "batch renamed: 4 of 4 rows rejected (100.0%), above the limit of 10.0%" in message
    assert "file rejected: missing required columns: status (4)" in message
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

    with pytest.raises(OrderLoadError) as failure:
        _stage(spark, tables, [str(good), str(broken)], "quote")
    assert "98 of 118 rows rejected (83.1%)" in str(failure.value)
    reason = "unclosed quote: the record on line 3 runs to the end of the file (97 lines read as one record)"
    assert f"file rejected: {reason} (98)" in str(failure.value)

    metrics = _stage(spark, tables, [str(good), str(broken)], "quote", limit=1.0)

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
