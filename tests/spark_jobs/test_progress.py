"""Progress while a job works: its phases as they start and end, and a line at least every 30 s of each."""

from __future__ import annotations

import logging
import time

import pytest

from spark_jobs.progress import HEARTBEAT_SECONDS, phase
from spark_jobs.stage_orders import stage_orders
from tests.spark_jobs.helpers import HEADER, write_csv


def test_a_phase_logs_its_start_a_heartbeat_while_it_lasts_and_its_end(caplog):
    caplog.set_level(logging.INFO, logger="order_tracking")

    with phase("merging", every=0.05):
        time.sleep(0.23)
    with pytest.raises(RuntimeError), phase("writing", every=10):
        raise RuntimeError("disk full")

    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "merging ..."
    assert 3 <= sum(line.startswith("merging: still going after") for line in lines) <= 5
    assert lines[-3].startswith("merging: done in 0.2")
    assert lines[-2:] == ["writing ...", lines[-1]]
    assert lines[-1].startswith("writing: stopped by an error in 0.0")
    assert HEARTBEAT_SECONDS == 30


def test_the_stage_logs_each_phase_as_it_goes(spark, tables, tmp_path, caplog):
    """It logged nothing between its command line and its summary: minutes, on a big batch."""
    caplog.set_level(logging.INFO, logger="order_tracking")
    path = write_csv(tmp_path, "a.csv", HEADER + "1,K1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00\n")

    stage_orders(spark, [{"uri": str(path)}], "progress", tables.staging, tables.rejects, tables.audit, 1.0)

    started = [r.getMessage() for r in caplog.records if r.getMessage().endswith(" ...")]
    assert started == [
        "reading the heads of 1 files ...",
        "parsing and counting the records of 1 files ...",
        f"writing the rejects to {tables.rejects} ...",
        f"writing the staged rows to {tables.staging} ...",
    ]
