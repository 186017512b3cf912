"""Hostile input: every row ends up staged intact or rejected with a reason, and no job crashes."""

from __future__ import annotations

from pyspark.sql import functions as F

from spark_jobs.stage_orders import stage_orders
from tests.conftest import REPO
from tests.spark_jobs.helpers import HEADER, read, write_csv


def row(key: str, address: str = "1 Elm St") -> str:
    return f"1,{key},2023-01-01,,In Transit,{address},2023-01-01 10:00:00\n"


def test_odd_names_bytes_and_text_are_loaded_intact_or_rejected_with_a_reason(spark, tables, tmp_path):
    files = {
        "name with spaces ü [1].csv": HEADER + row("TRK1"),
        "formula.csv": HEADER + row("TRK2", '"=HYPERLINK(""http://evil.example"",""click"")"'),
        "bom.csv": "\ufeff" + HEADER + row("TRK3"),
        "nul.csv": HEADER + row("TRK4", "1 Elm\x00 St") + row("TRK5"),
        "duplicate_header.csv": HEADER.replace("address", "status") + row("TRK6"),
    }
    paths = [write_csv(tmp_path, name, text) for name, text in files.items()]
    paths.append(write_csv(tmp_path, "latin1.csv", (HEADER + row("TRK7", "Stra\xdfe")).encode("latin-1")))

    metrics = stage_orders(
        spark, [{"uri": str(p)} for p in paths], "hostile", tables.staging, tables.rejects, tables.audit, 1.0
    )

    statuses = {item["uri"].rsplit("/", 1)[-1]: (item["status"], item["rows"]) for item in metrics["files"]}
    assert statuses == {
        "name with spaces ü [1].csv": ("loaded", 1),
        "formula.csv": ("loaded", 1),
        "bom.csv": ("loaded", 1),
        "nul.csv": ("loaded", 2),
        "duplicate_header.csv": ("rejected", 1),
        "latin1.csv": ("loaded", 1),
    }
    staged = {r["tracking_num"]: r for r in read(spark, tables.staging).collect()}
    assert sorted(staged) == ["TRK1", "TRK2", "TRK3", "TRK5"]
    assert staged["TRK1"]["_source_file"] == f"file:{paths[0]}"
    assert staged["TRK2"]["address"] == '=HYPERLINK("http://evil.example","click")'
    rejects = {
        r["source_file"].rsplit("/", 1)[-1]: r["reason"]
        for r in read(spark, tables.rejects).where(F.col("batch_id") == "hostile").collect()
    }
    assert rejects == {
        "nul.csv": "contains a NUL byte",
        "latin1.csv": "invalid UTF-8 bytes",
        "duplicate_header.csv": "file rejected: duplicate column names: status (1 data row not loaded)",
    }
    # The rejected file's row counts as read and rejected.
    assert (metrics["rows_read"], metrics["rows_staged"], metrics["rows_rejected"]) == (7, 4, 3)


def test_a_quote_inside_a_header_name_is_a_character_not_the_start_of_a_quoted_field(spark, tables, tmp_path):
    # The quote in `note "x` is mid-field, so it opens nothing; the quote in the data row's note closes nothing.
    # Counting every quote as a toggle paired the two up, read a two-line "header" and failed the batch.
    header = HEADER.rstrip("\n") + ',note "x\n'
    body = row("TRK1").rstrip("\n") + ',say "hi\n' + row("TRK2").rstrip("\n") + ",\n"
    stray = write_csv(tmp_path, "stray_quote.csv", header + body)
    clean = write_csv(tmp_path, "clean.csv", HEADER + row("TRK3"))

    metrics = stage_orders(
        spark, [{"uri": str(stray)}, {"uri": str(clean)}], "stray", tables.staging, tables.rejects, tables.audit, 1.0
    )

    statuses = {item["uri"].rsplit("/", 1)[-1]: (item["status"], item["rows"]) for item in metrics["files"]}
    assert statuses == {"stray_quote.csv": ("loaded", 2), "clean.csv": ("loaded", 1)}
    staged = {r["tracking_num"]: r["_rescued_data"] for r in read(spark, tables.staging).collect()}
    assert staged == {"TRK1": '{"note \\"x":"say \\"hi"}', "TRK2": '{"note \\"x":null}', "TRK3": None}
    assert (metrics["rows_read"], metrics["rows_staged"], metrics["rows_rejected"]) == (3, 3, 0)


def test_a_file_with_bare_cr_line_endings_throughout_loads_every_row(spark, tables):
    corpus = REPO / "tests" / "data" / "fuzz-corpus" / "bare-cr-line-endings-throughout.csv"

    metrics = stage_orders(spark, [{"uri": str(corpus)}], "cr", tables.staging, tables.rejects, tables.audit, 1.0)

    assert (metrics["files"][0]["status"], metrics["rows_read"], metrics["rows_staged"]) == ("loaded", 2, 2)
    staged = {r["tracking_num"]: r["status"] for r in read(spark, tables.staging).collect()}
    assert staged == {"CR-K0": "In Transit", "CR-K1": "Deliv\rered"}  # a quoted line break is kept as written
