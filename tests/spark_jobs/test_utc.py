"""The times the jobs write are UTC instants, whatever the zone of the process that runs them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pyspark.sql import functions as F

from tests.conftest import SEED_FILES
from tests.spark_jobs.helpers import load_batch, read, write_csv


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def test_the_times_written_are_utc_instants_under_a_non_utc_process_zone(spark, tables, tmp_path, monkeypatch):
    bad = write_csv(tmp_path, "bad.csv", (SEED_FILES[0].read_text() + "1,TRK9,,,In Transit,x,not a time\n"))
    monkeypatch.setenv("TZ", "America/Sao_Paulo")  # UTC-3, no daylight saving since 2019
    time.tzset()
    try:
        before = _micros(datetime.now(UTC))
        load_batch(spark, tables, [bad], "zoned", max_reject_fraction=1.0)
        after = _micros(datetime.now(UTC))
    finally:
        monkeypatch.undo()
        time.tzset()

    written = {
        "_ingested_at": read(spark, tables.staging).select(F.unix_micros("_ingested_at")).first()[0],
        "rejected_at": read(spark, tables.rejects).select(F.unix_micros("rejected_at")).first()[0],
        **read(spark, tables.audit)
        .select(
            *[
                F.unix_micros(name).alias(name)
                for name in ("stage_started_at", "stage_finished_at", "merge_started_at", "merge_finished_at")
            ]
        )
        .first()
        .asDict(),
    }
    assert {name: before <= micros <= after for name, micros in written.items()} == dict.fromkeys(written, True), (
        written,
        before,
        after,
    )
