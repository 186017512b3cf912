"""What a run loads: its load time, its batch date, and its source (input, or archived hours for a replay)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import Context

from order_tracking_load import storage
from order_tracking_load.layout import BucketLayout
from order_tracking_load.settings import LoadSettings

LOG = logging.getLogger(__name__)
REPLAY_RUN_TYPES = ("backfill",)


def skip(reason: str) -> AirflowSkipException:
    """The exception that skips a task, its reason logged first: Airflow logs a skip's reason inside the
    collapsed "Post Execute" group, so the line above it, the last one shown, is the reason."""
    LOG.info("skipped: %s", reason)
    return AirflowSkipException(reason)


def load_time(context: Context) -> datetime:
    """When a run loads: its run-after, the time its run id carries (``scheduled__<run-after>``), which for a
    scheduled or backfill run is the end of its data interval. The archive folder and the batch date are
    named by it, so a run's files are found from its run id without arithmetic."""
    return context["dag_run"].run_after


def batch_date(context: Context) -> str:
    """The date a run loads for: ``replay_date`` when given, else the date of its load time (UTC)."""
    params = context["params"]
    if params.get("replay_date"):
        return str(params["replay_date"])
    return f"{load_time(context).astimezone(UTC):%Y-%m-%d}"


def is_replay(context: Context) -> bool:
    """A backfill run, or a manual run given ``replay_date``, reloads archived files instead of input/."""
    run_type = context["dag_run"].run_type
    return bool(context["params"].get("replay_date")) or getattr(run_type, "value", run_type) in REPLAY_RUN_TYPES


@dataclass(frozen=True)
class Source:
    """What a run loads: the input prefix, or for a replay the archive folders of its date or interval."""

    prefix: str  # the input prefix, or the archive prefix for a replay
    replay: bool
    dates: tuple[str, ...] = ()  # replay: the archive dates to list
    hours: tuple[datetime, datetime] | None = None  # backfill: the archive hours within (after, through]

    def describe(self, bucket: str) -> str:
        """The source in words, for logs and skip messages."""
        if not self.replay:
            return f"gs://{bucket}/{self.prefix}"
        if self.hours is None:
            return f"gs://{bucket}/{self.prefix}{self.dates[0]}/ (the whole date)"
        first, last = _first_hour_after(self.hours[0]), self.hours[1]
        if first == last:
            return f"gs://{bucket}/{self.prefix}{last:%Y-%m-%d/%H}/"
        span = f"{first:%Y-%m-%d/%H} to {last:%Y-%m-%d/%H}"
        return f"gs://{bucket}/{self.prefix}<date>/<hour>/ from {span}"

    def holds(self, name: str, layout: BucketLayout) -> bool:
        """True when an object listed under ``prefix`` belongs to this source."""
        if not self.replay or self.hours is None:
            return True
        hour = layout.archive_hour(name)
        return hour is not None and self.hours[0] < hour <= self.hours[1]


def _first_hour_after(moment: datetime) -> datetime:
    return (moment + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


def run_source(context: Context, settings: LoadSettings) -> Source:
    """Where a run's files are.

    - A scheduled or manual run loads the input prefix.
    - A manual run given ``replay_date`` reloads every file archived under that date.
    - A backfill run reloads the archive hours that its data interval ends in: the hours after its start,
      up to and including its end. Its run id carries that end, as the run that archived them carried it:
      ``backfill__2026-11-20T15:00:00+00:00`` replays what ``scheduled__2026-11-20T15:00:00+00:00`` archived
      under ``2026-11-20/15/``. A backfill over a range reloads each archived hour once, whatever the period.
    """
    if not is_replay(context):
        return Source(prefix=settings.input_prefix, replay=False)
    if context["params"].get("replay_date"):
        return Source(prefix=settings.archive_prefix, replay=True, dates=(batch_date(context),))
    dag_run = context["dag_run"]
    through = (dag_run.data_interval_end or load_time(context)).astimezone(UTC)
    after = (dag_run.data_interval_start or through).astimezone(UTC)
    if through <= after:  # a zero-length interval (a trigger timetable): the hour its run archives under
        through = through.replace(minute=0, second=0, microsecond=0)
        after = through - timedelta(hours=1)
    first = _first_hour_after(after)
    days = through.date() - first.date()
    dates = tuple(str(first.date() + timedelta(days=n)) for n in range(days.days + 1))
    return Source(prefix=settings.archive_prefix, replay=True, dates=dates, hours=(after, through))


def list_source(settings: LoadSettings, source: Source) -> list:
    """Every object of the run's source, listed whole."""
    if not source.replay:
        return storage.list_objects(settings, source.prefix)
    layout = BucketLayout.of(settings)
    listed = [blob for date in source.dates for blob in storage.list_objects(settings, layout.archive_date(date))]
    return [blob for blob in listed if source.holds(blob.name, layout)]
