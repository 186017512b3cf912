"""Which prefix a run reads, and what it calls its date and batch."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType

from order_tracking_load.gcs_files import batch_date, batch_key, is_replay, source_prefix
from order_tracking_load.settings import load_settings


@dataclasses.dataclass
class FakeDagRun:
    run_type: DagRunType
    logical_date: datetime | None
    run_after: datetime


def context(run_type: DagRunType, logical_date: datetime | None, replay_date: str | None = None) -> dict:
    run_after = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    return {"dag_run": FakeDagRun(run_type, logical_date, run_after), "params": {"replay_date": replay_date}}


@pytest.mark.parametrize(
    ("run_type", "logical_date", "replay_date", "prefix"),
    [
        (DagRunType.SCHEDULED, datetime(2026, 11, 26, 10, tzinfo=UTC), None, "input/"),
        (DagRunType.MANUAL, None, None, "input/"),
        (DagRunType.BACKFILL, datetime(2026, 11, 20, tzinfo=UTC), None, "archive/2026-11-20/"),
        (DagRunType.MANUAL, None, "2026-11-21", "archive/2026-11-21/"),
    ],
)
def test_backfills_and_replay_dates_read_the_archive_of_their_date(run_type, logical_date, replay_date, prefix):
    settings = load_settings()
    assert source_prefix(context(run_type, logical_date, replay_date), settings) == prefix
    assert is_replay(context(run_type, logical_date, replay_date)) is prefix.startswith("archive/")


def test_a_manual_run_without_logical_date_is_dated_by_its_run_after():
    assert batch_date(context(DagRunType.MANUAL, None)) == "2026-11-27"


def test_batch_key_keeps_run_ids_readable_and_makes_others_safe():
    assert batch_key("scheduled__2026-11-26T10:00:00+00:00") == "scheduled__2026-11-26T10:00:00+00:00"
    assert batch_key("my run/with 'odd' chars") == "my_run_with__odd__chars"
