"""The jobs on Spark Connect, the protocol Databricks serverless compute speaks, and where rows cannot be kept.

One batch (the seed files, a file with rejected rows, a file rejected whole) is loaded three ways: on the
test's classic session; on it again as serverless compute would run it, with ``persist`` refused and every
session option refused but the few serverless lets a job set; and through a real Spark Connect server and
client in a process of their own. All three must write the same rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame
from pyspark.sql.conf import RuntimeConfig

from tests.conftest import SEED_FILES
from tests.spark_jobs.helpers import HEADER, load_batch, read, refusing_options, refusing_reads, write_csv

REPO = Path(__file__).resolve().parents[2]
BATCH = "connect-1"
# A run's own clock, and the staged rows' earlier events, which carry it too (the history holds them all).
_NOT_COMPARED = {"_ingested_at", "rejected_at", "_superseded_events"}
# The session options a job may set on serverless compute (Databricks: "Configure Spark properties for
# serverless notebooks and jobs"); setting any other fails with CONFIG_NOT_AVAILABLE.
_SERVERLESS_OPTIONS = {
    "spark.sql.session.timeZone",
    "spark.sql.legacy.timeParserPolicy",
    "spark.sql.shuffle.partitions",
    "spark.sql.ansi.enabled",
    "spark.sql.files.maxPartitionBytes",
}


def _batch_files(directory: Path) -> list[Path]:
    bad = write_csv(
        directory,
        "bad_rows.csv",
        HEADER
        + '900,TRK0900,2023-01-09,,In Transit,"12 Quay St, Apt 4",2023-01-09 08:00:00\n'
        + "901,TRK0901,2023-01-09,,In Transit,1 Elm St,not a time\n"
        + "902,,2023-01-09,,In Transit,1 Elm St,2023-01-09 09:00:00\n",
    )
    renamed = write_csv(directory, "renamed.csv", HEADER.replace("status", "state") + "903,TRK0903,,,x,y,z\n")
    return [*SEED_FILES, bad, renamed]


def _rows(frame: DataFrame) -> list[tuple]:
    """The table's rows as sorted tuples of text, without the columns not compared."""
    columns = sorted(c for c in frame.columns if c not in _NOT_COMPARED)
    return sorted(tuple(str(row[c]) for c in columns) for row in frame.select(*columns).collect())


def _tables(spark, root: Path) -> dict[str, list[tuple]]:
    return {name: _rows(read(spark, str(root / name))) for name in ("staging", "rejects", "target", "history")}


def _classic(spark, root: Path, files: list[Path]) -> dict:
    tables = SimpleNamespace(**{n: str(root / n) for n in ("staging", "rejects", "audit", "target", "history")})
    # A limit of 1: bad_rows.csv (2 of 3 rows rejected) loads its good row rather than being quarantined.
    staged, merged = load_batch(spark, tables, files, BATCH, max_reject_fraction=1.0)
    return {"stage": staged, "merge": merged}


@pytest.mark.processes
def test_connect_and_serverless_refusals_write_what_the_classic_session_writes(spark, tmp_path, monkeypatch):
    files = _batch_files(tmp_path / "in")

    classic = _classic(spark, tmp_path / "classic", files)
    refused: list[str] = []
    refused_reads: list[str] = []
    with monkeypatch.context() as serverless:

        def refuse_persist(self, *args, **kwargs):
            raise PySparkException(message="[NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported.")

        # The session's own DataFrame class: on PySpark 4 the classic DataFrame overrides the abstract one's persist.
        serverless.setattr(type(spark.range(1)), "persist", refuse_persist)
        serverless.setattr(RuntimeConfig, "set", refusing_options(_SERVERLESS_OPTIONS, refused))
        serverless.setattr(RuntimeConfig, "get", refusing_reads(_SERVERLESS_OPTIONS, refused_reads))
        unkept = _classic(spark, tmp_path / "unkept", files)
    # The stage asks to keep its rows uncompressed, is refused, and reads the files again instead.
    assert refused == ["spark.sql.inMemoryColumnarStorage.compressed"]
    # Reading options serverless does not expose is refused too; the jobs go on with the defaults.
    assert set(refused_reads) == {
        "spark.sql.inMemoryColumnarStorage.compressed",
        "spark.sql.parser.escapedStringLiterals",
    }
    run = subprocess.run(
        [sys.executable, "-m", "tests.spark_jobs.connect_run", str(tmp_path / "connect"), BATCH, *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    connect = json.loads(run.stdout.strip().splitlines()[-1])

    assert connect["session"] == "pyspark.sql.connect.session"
    stage = classic["stage"]
    assert (stage["rows_read"], stage["rows_rejected"], stage["rows_staged"], stage["files_rejected"]) == (98, 3, 24, 1)
    assert classic["merge"]["rows_inserted"] == 24
    for other in (unkept, connect):
        for job, figures in (
            ("stage", ("rows_read", "rows_rejected", "rows_collapsed", "rows_staged")),
            ("merge", ("rows_inserted", "rows_updated", "history_rows_inserted")),
        ):
            assert [other[job][f] for f in figures] == [classic[job][f] for f in figures], (job, other[job])

    written = _tables(spark, tmp_path / "classic")
    assert written == _tables(spark, tmp_path / "unkept")
    assert written == _tables(spark, tmp_path / "connect")
    rejects = sorted(
        (Path(r["source_file"]).name, r["line_number"], r["reason"])
        for r in read(spark, str(tmp_path / "connect" / "rejects")).collect()
    )
    assert rejects == [
        ("bad_rows.csv", 3, "last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp"),
        ("bad_rows.csv", 4, "tracking_num is empty"),
        ("renamed.csv", 1, "file rejected: missing required columns: status (1 data row not loaded)"),
    ]
