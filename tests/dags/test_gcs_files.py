"""Which files a run reads, where it archives them, and what it calls its batch."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType

from order_tracking_load.layout import BucketLayout, batch_key
from order_tracking_load.runs import batch_date, load_time, run_source
from order_tracking_load.settings import load_settings
from spark_jobs.contracts import check_batch_id


@dataclasses.dataclass
class FakeDagRun:
    run_type: DagRunType
    logical_date: datetime | None
    run_after: datetime
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None


def context(
    run_type: DagRunType,
    logical_date: datetime | None,
    replay_date: str | None = None,
    interval: tuple[datetime, datetime] | None = None,
) -> dict:
    run_after = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    dag_run = FakeDagRun(run_type, logical_date, run_after, *(interval or (None, None)))
    return {"dag_run": dag_run, "params": {"replay_date": replay_date}}


ARCHIVED = [
    "archive/2026-11-19/23/scheduled__2026-11-19T23:00:00+00:00/a.csv",
    "archive/2026-11-20/00/scheduled__2026-11-20T00:00:00+00:00/b.csv",
    "archive/2026-11-20/13/manual__2026-11-20T13:12:00+00:00/c.csv",
    "archive/2026-11-21/00/scheduled__2026-11-21T00:00:00+00:00/e.csv",
]


LAYOUT = BucketLayout.of(load_settings())


def test_the_layout_reads_back_the_hour_it_archives_under_and_nothing_outside_it():
    moment = datetime(2026, 11, 20, 15, 42, tzinfo=UTC)
    assert LAYOUT.archive_hour(LAYOUT.archived(moment, "run", "a/b.csv")) == datetime(2026, 11, 20, 15, tzinfo=UTC)
    outside = ("archive/2026-11-20/some_batch/d.csv", "archive/2026-11-20/24/r/d.csv", "input/2026-11-20/15/r/d.csv")
    assert [LAYOUT.archive_hour(name) for name in outside] == [None, None, None]
    assert LAYOUT.rejected("2026-11-20", "run", "a.csv") == "rejected/2026-11-20/run/a.csv"
    run_id = "scheduled__2026-11-20T15:00:00+00:00"
    assert LAYOUT.manifest(run_id) == f"manifests/{run_id}.json"


def _day(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("interval", "dates", "held"),
    [
        # A daily backfill run reloads the hours its interval ends in: 01 to 23 of its date, then 00 of the next.
        ((_day(20), _day(21)), ("2026-11-20", "2026-11-21"), ["c.csv", "e.csv"]),
        # Hourly runs split the date between them: each file falls in exactly one run, the one of its label.
        ((_day(20, 12), _day(20, 13)), ("2026-11-20",), ["c.csv"]),
        ((_day(20, 13), _day(20, 14)), ("2026-11-20",), []),
        ((_day(19, 22), _day(20, 0)), ("2026-11-19", "2026-11-20"), ["a.csv", "b.csv"]),
    ],
)
def test_a_backfill_run_replays_the_archive_hours_its_data_interval_ends_in(interval, dates, held):
    source = run_source(context(DagRunType.BACKFILL, interval[0], interval=interval), load_settings())

    assert (source.replay, source.prefix, source.dates) == (True, "archive/", dates)
    assert [name.rsplit("/", 1)[1] for name in ARCHIVED if source.holds(name, LAYOUT)] == held


def test_a_backfill_run_replays_what_the_scheduled_run_of_its_label_archived():
    settings = load_settings()
    scheduled = context(DagRunType.SCHEDULED, _day(20, 14), interval=(_day(20, 14), _day(20, 15)))
    scheduled["dag_run"].run_after = _day(20, 15)  # scheduled__2026-11-20T15:00:00+00:00
    backfill = context(DagRunType.BACKFILL, _day(20, 14), interval=(_day(20, 14), _day(20, 15)))

    archived = LAYOUT.archived(load_time(scheduled), "scheduled__2026-11-20T15:00:00+00:00", "a.csv")
    source = run_source(backfill, settings)

    assert archived == "archive/2026-11-20/15/scheduled__2026-11-20T15:00:00+00:00/a.csv"
    assert source.holds(archived, LAYOUT)
    assert source.describe("b") == "gs://b/archive/2026-11-20/15/"


def test_a_daily_backfill_over_a_range_replays_each_archived_file_once():
    settings = load_settings()
    runs = [
        run_source(context(DagRunType.BACKFILL, _day(d), interval=(_day(d), _day(d + 1))), settings)
        for d in (18, 19, 20, 21)
    ]

    assert sorted(name for source in runs for name in ARCHIVED if source.holds(name, LAYOUT)) == sorted(ARCHIVED)


def test_scheduled_and_manual_runs_load_input_and_replay_dates_load_their_whole_date():
    settings = load_settings()
    for run_type, logical_date in ((DagRunType.SCHEDULED, _day(26, 10)), (DagRunType.MANUAL, None)):
        source = run_source(context(run_type, logical_date), settings)
        assert (source.replay, source.prefix) == (False, "input/")
    replay = run_source(context(DagRunType.MANUAL, None, replay_date="2026-11-20"), settings)
    assert (replay.replay, replay.dates, replay.hours) == (True, ("2026-11-20",), None)
    assert [name for name in ARCHIVED if replay.holds(name, LAYOUT)] == ARCHIVED  # listing already scoped the date


def test_a_run_archives_under_the_date_and_hour_of_its_run_after_which_its_run_id_carries():
    # The context's run-after is 2026-11-27 09:30, whatever the logical date (the start of the interval).
    for run in (context(DagRunType.SCHEDULED, _day(26, 10)), context(DagRunType.MANUAL, None)):
        assert LAYOUT.archived(load_time(run), "b", "x/a.csv") == "archive/2026-11-27/09/b/x/a.csv"
    assert batch_date(context(DagRunType.MANUAL, None)) == "2026-11-27"


def test_batch_keys_keep_safe_run_ids_and_never_collide():
    assert batch_key("scheduled__2026-11-26T10:00:00+00:00") == "scheduled__2026-11-26T10:00:00+00:00"
    odd = batch_key("my run/with 'odd' chars")
    assert odd.startswith("my_run_with__odd__chars~")
    keys = {batch_key(run_id) for run_id in ("a/b", "a_b", "a b", "a\\b", "x" * 201, "x" * 202, "x" * 200)}
    assert len(keys) == 7
    for key in keys:
        assert check_batch_id(key) == key


def test_a_batch_id_with_a_trailing_newline_is_refused():
    with pytest.raises(ValueError, match="batch id"):
        check_batch_id("batch\n")
