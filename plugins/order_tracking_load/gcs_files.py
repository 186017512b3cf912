"""The GCS side of a run: wait for files, list them into a manifest, archive exactly what was loaded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException
from airflow.providers.google.cloud.hooks.gcs import GCSHook
from airflow.providers.google.cloud.sensors.gcs import GCSObjectsWithPrefixExistenceSensor
from airflow.providers.google.cloud.triggers.gcs import GCSPrefixBlobTrigger
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferralTimeout
from airflow.triggers.base import TriggerEvent
from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed
from google.api_core.retry import Retry
from google.auth.exceptions import TransportError
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.exceptions import RequestException

from order_tracking_load.settings import LoadSettings
from spark_jobs.contracts import FileStatus, JobMetrics, Manifest, ManifestFile

LOG = logging.getLogger(__name__)
REPLAY_RUN_TYPES = ("backfill",)
_UNSAFE = re.compile(r"[^\w.:+@=-]", re.ASCII)
_SAFE_RUN_ID = re.compile(r"[\w.:+@=-]{1,200}", re.ASCII)


def skip(reason: str) -> AirflowSkipException:
    """The exception that skips a task, its reason logged first: Airflow logs a skip's reason inside the
    collapsed "Post Execute" group, so the line above it, the last one shown, is the reason."""
    LOG.info("skipped: %s", reason)
    return AirflowSkipException(reason)


def gcs_retry(settings: LoadSettings) -> Retry:
    """The storage client's retry policy (exponential backoff on transient errors), bounded by the setting."""
    return DEFAULT_RETRY.with_timeout(settings.gcs_retry.total_seconds())


@contextmanager
def gcs_errors(action: str, settings: LoadSettings) -> Iterator[None]:
    """Turn a GCS outage into one clear error (the task then fails, and Airflow retries it)."""
    try:
        yield
    except (GoogleAPIError, RequestException, TransportError) as error:
        raise AirflowException(
            f"GCS unreachable or refusing: could not {action} after retrying for "
            f"{settings.gcs_retry.total_seconds():.0f} s ({type(error).__name__}: {str(error)[:300]})"
        ) from error


def _bucket(settings: LoadSettings) -> Any:
    return GCSHook(gcp_conn_id=settings.gcp_conn_id).get_conn().bucket(settings.bucket)


def list_objects(settings: LoadSettings, prefix: str) -> list:
    """Every object under ``prefix``, listed whole (bounded retries, one clear error on an outage)."""
    with gcs_errors(f"list gs://{settings.bucket}/{prefix}", settings):
        return list(_bucket(settings).list_blobs(prefix=prefix, retry=gcs_retry(settings)))


class NewFilesTrigger(GCSPrefixBlobTrigger):
    """Prefix trigger that also ends at a deadline, with a ``timeout`` event.

    The deadline lives in the trigger itself, so a run that waits in vain ends the same way in the
    triggerer and under ``dag.test()`` (which runs triggers inline and never times them out).
    """

    def __init__(self, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, arguments = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {**arguments, "deadline": self.deadline}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            hook = self._get_async_hook()
            while True:
                matches = await self._list_blobs_with_prefix(hook=hook, bucket_name=self.bucket, prefix=self.prefix)
                if matches:
                    yield TriggerEvent({"status": "success", "message": "files arrived", "matches": matches})
                    return
                if time.time() >= self.deadline:
                    yield TriggerEvent({"status": "timeout", "message": f"nothing under {self.prefix} in time"})
                    return
                await asyncio.sleep(min(self.poke_interval, max(self.deadline - time.time(), 0)))
        except Exception as error:  # noqa: BLE001 - reported to the task, which fails (and retries)
            yield TriggerEvent(
                {"status": "error", "message": f"listing gs://{self.bucket}/{self.prefix} failed: {error}"}
            )


class NewFilesSensor(GCSObjectsWithPrefixExistenceSensor):
    """Deferrable prefix sensor: a timeout skips the run (nothing arrived); any error fails it.

    The stock ``soft_fail`` would also turn an unreachable GCS into a skip, hiding an outage. The prefix
    is the run's source: the input prefix, or the archive of its date for a replay.
    """

    def __init__(self, *, settings: LoadSettings, **kwargs: Any) -> None:
        super().__init__(
            bucket=settings.bucket,
            prefix=settings.input_prefix,
            google_cloud_conn_id=settings.gcp_conn_id,
            deferrable=True,
            timeout=settings.sensor_timeout.total_seconds(),
            poke_interval=settings.poke_interval.total_seconds(),
            **kwargs,
        )
        self.settings = settings

    def poke(self, context: Context) -> bool:
        """One listing, with the bounded retry policy and a clear error when GCS cannot be reached."""
        self._matches = [blob.name for blob in list_source(self.settings, self._source)]
        return bool(self._matches)

    def execute(self, context: Context) -> Any:
        self._source = run_source(context, self.settings)
        self.prefix = self._source.prefix
        if self.poke(context):
            return self._matches
        if earlier_manifest(self.settings, context["run_id"]) is not None:
            # A cleared run loads the batch it listed before, which need not be in input any more.
            LOG.info("run %s listed its batch before: no need to wait", context["run_id"])
            return []
        if self._source.replay:
            # Archived files do not arrive later: a replay with nothing to reload ends at once.
            raise skip(f"nothing to replay: no archived files in {self._source.describe(self.bucket)}")
        self.defer(
            trigger=NewFilesTrigger(
                bucket=self.bucket,
                prefix=self.prefix,
                poke_interval=self.poke_interval,
                google_cloud_conn_id=self.google_cloud_conn_id,
                hook_params={"impersonation_chain": self.impersonation_chain},
                deadline=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            # A backstop only: the trigger's own deadline normally ends the wait first.
            timeout=timedelta(seconds=self.timeout + 300),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if event["status"] == "timeout":
            raise skip(f"no new files under gs://{self.bucket}/{self.prefix}: {event['message']}")
        return super().execute_complete(context, event)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (AirflowSensorTimeout, TaskDeferralTimeout) as timeout:
            raise skip(f"no new files under gs://{self.bucket}/{self.prefix}: {timeout}") from timeout


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


def archive_folder(settings: LoadSettings, context: Context) -> str:
    """Where a run archives what it loaded: ``<archive>/<date>/<hour>/`` of its load time (UTC): run
    ``scheduled__2026-11-20T15:00:00+00:00`` archives under ``2026-11-20/15/``."""
    moment = load_time(context).astimezone(UTC)
    return f"{settings.archive_prefix}{moment:%Y-%m-%d}/{moment:%H}/"


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

    def holds(self, name: str) -> bool:
        """True when an object listed under ``prefix`` belongs to this source."""
        if not self.replay or self.hours is None:
            return True
        date, _, rest = name[len(self.prefix) :].partition("/")
        hour = rest.split("/", 1)[0]
        # Archives written before the hour folder existed (<date>/<batch>/...) count as the date's first hour.
        hour = hour if len(hour) == 2 and hour.isdigit() else "00"
        try:
            folder = datetime.strptime(f"{date} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
        except ValueError:
            return False
        return self.hours[0] < folder <= self.hours[1]


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
        return list_objects(settings, source.prefix)
    listed = [blob for date in source.dates for blob in list_objects(settings, f"{source.prefix}{date}/")]
    return [blob for blob in listed if source.holds(blob.name)]


def batch_key(run_id: str) -> str:
    """The run id as a batch id and object-name segment: the id itself when it is safe and short,
    else its safe characters and a hash of the whole id after ``~``, which no kept id contains.
    Two run ids never share a batch key (short of a 64-bit hash collision).
    """
    if _SAFE_RUN_ID.fullmatch(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return f"{_UNSAFE.sub('_', run_id)[:180]}~{digest}"


def manifest_name(settings: LoadSettings, run_id: str) -> str:
    """The object name of a run's manifest."""
    return f"{settings.manifest_prefix}{batch_key(run_id)}.json"


def earlier_manifest(settings: LoadSettings, run_id: str) -> Manifest | None:
    """The manifest this run id wrote before (an earlier try, or the run cleared and run again), if any."""
    name = manifest_name(settings, run_id)
    with gcs_errors(f"read gs://{settings.bucket}/{name}", settings):
        blob = _bucket(settings).get_blob(name, retry=gcs_retry(settings))
        text = blob.download_as_text(retry=gcs_retry(settings)) if blob is not None else None
    return None if text is None else Manifest.from_json(text, f"manifest gs://{settings.bucket}/{name}")


def _listed(settings: LoadSettings, blob: Any, source: Source, batch_id: str, date: str, folder: str) -> ManifestFile:
    """One listed object, with where the run moves it: ``<archive folder><batch>/<name in input>`` once
    loaded, ``<rejected>/<date>/<batch>/<name in input>`` when rejected whole. A replay moves nothing."""
    relative = blob.name[len(source.prefix) :]
    uri = f"gs://{settings.bucket}/"
    return ManifestFile(
        uri=uri + blob.name,
        name=blob.name,
        generation=blob.generation,
        size=blob.size,
        archive_uri=None if source.replay else f"{uri}{folder}{batch_id}/{relative}",
        rejected_uri=None if source.replay else f"{uri}{settings.rejected_prefix}{date}/{batch_id}/{relative}",
    )


def list_and_write_manifest(settings: LoadSettings, context: Context) -> dict:
    """List the exact ``.csv`` objects to load (name, generation, size) and write them as the run's manifest.

    A run's manifest is its batch: a run id that wrote one before loads it again rather than listing
    anew, so clearing a run reloads the same files (read where the run moved them) with the same rejects.
    """
    run_id = context["run_id"]
    name = manifest_name(settings, run_id)
    manifest_uri = f"gs://{settings.bucket}/{name}"
    earlier = earlier_manifest(settings, run_id)
    if earlier is not None:
        LOG.info("run %s listed its batch before: reusing %s (%d files)", run_id, manifest_uri, len(earlier.files))
        return {**earlier.to_dict(), "manifest_uri": manifest_uri}

    source = run_source(context, settings)
    blobs = list_source(settings, source)
    key, date, folder = batch_key(run_id), batch_date(context), archive_folder(settings, context)
    files = tuple(
        _listed(settings, blob, source, key, date, folder)
        for blob in sorted(blobs, key=lambda blob: blob.name)
        if blob.name.lower().endswith(".csv")
    )
    ignored = sorted(
        blob.name for blob in blobs if not blob.name.lower().endswith(".csv") and not blob.name.endswith("/")
    )
    for ignored_name in ignored:
        LOG.warning("left alone (not a .csv file): gs://%s/%s", settings.bucket, ignored_name)
    if not files:
        raise skip(f"no .csv objects in {source.describe(settings.bucket)}")

    manifest = Manifest(
        batch_id=key,
        files=files,
        run_id=run_id,
        batch_date=date,
        replay=source.replay,
        source_prefix=source.prefix,
        archive_folder=folder,
    )
    # Written only after the whole listing succeeded, in one upload: GCS makes the object appear whole
    # or not at all, so no partial manifest can exist.
    with gcs_errors(f"write {manifest_uri}", settings):
        _bucket(settings).blob(name).upload_from_string(
            json.dumps(manifest.to_dict(), indent=2), content_type="application/json", retry=gcs_retry(settings)
        )
    LOG.info(
        "manifest %s lists %d files (%d bytes) from %s",
        manifest_uri,
        len(files),
        sum(f.size or 0 for f in files),
        source.describe(settings.bucket),
    )
    return {**manifest.to_dict(), "manifest_uri": manifest_uri}


def archive_loaded_files(settings: LoadSettings, listing: dict, stage_result: dict, context: Context) -> dict:
    """Move exactly the manifest's objects: loaded ones to their ``archive_uri``, files rejected whole to
    their ``rejected_uri``.

    A listed object that is no longer in input was moved by an earlier try of this task, or by another
    run that loaded the same files (its rows are in the target either way); it is reported, not moved.
    """
    manifest = Manifest.from_dict(listing, "the listing")
    if manifest.replay:
        LOG.info("replay of archived files: nothing to move")
        return {"archived": [], "rejected": [], "left_in_input": [], "already_gone": []}
    outcome_by_uri = {item.uri: item for item in JobMetrics.from_dict(stage_result).files}
    bucket = _bucket(settings)
    retry = gcs_retry(settings)
    in_bucket = f"gs://{settings.bucket}/"
    moved: dict[str, list[str]] = {"archived": [], "rejected": [], "left_in_input": [], "already_gone": []}
    for item in manifest.files:
        outcome = outcome_by_uri.get(item.uri)
        if outcome is None:
            raise AirflowException(f"stage reported nothing about {item.uri}; not archiving it")
        if outcome.status == FileStatus.REJECTED:
            destination = item.rejected_uri.removeprefix(in_bucket)
            LOG.warning("%s was rejected whole (%s): moving it to %s", item.uri, outcome.reason, destination)
            kind = "rejected"
        else:
            destination = item.archive_uri.removeprefix(in_bucket)
            kind = "archived"
        with gcs_errors(f"move gs://{settings.bucket}/{item.name} to {destination}", settings):
            result = _move(bucket, item.name, int(item.generation), destination, retry)
        where = {"moved": kind, "changed": "left_in_input", "occupied": "left_in_input", "gone": "already_gone"}
        moved[where[result]].append(destination if result == "moved" else item.name)
    LOG.info(
        "archived %d, rejected %d, left in input %d (changed since listing), already gone %d",
        len(moved["archived"]),
        len(moved["rejected"]),
        len(moved["left_in_input"]),
        len(moved["already_gone"]),
    )
    return moved


def _move(bucket: Any, name: str, generation: int, destination: str, retry: Retry) -> str:
    """Move one object version: "moved" (now or by an earlier try), "changed" (replaced since listing: it
    stays for the next run), "occupied" (the destination holds another object, which is never
    overwritten: it stays in input) or "gone" (no longer in input).
    """
    current = bucket.get_blob(name, retry=retry)
    if current is None:
        if bucket.get_blob(destination, retry=retry) is not None:
            return "moved"  # by an earlier try of this task
        LOG.warning(
            "gs://%s/%s is no longer in input: another run that loaded it moved it, or someone deleted it",
            bucket.name,
            name,
        )
        return "gone"
    if current.generation != generation:
        LOG.warning("gs://%s/%s changed after it was listed; left for the next run", bucket.name, name)
        return "changed"
    occupant = bucket.get_blob(destination, retry=retry)
    if occupant is None:
        try:  # never over an archived object: the copy is refused if the destination appeared meanwhile
            bucket.copy_blob(
                current, bucket, destination, source_generation=generation, if_generation_match=0, retry=retry
            )
        except PreconditionFailed:
            occupant = bucket.get_blob(destination, retry=retry)
    if occupant is not None and (occupant.crc32c, occupant.size) != (current.crc32c, current.size):
        LOG.warning(
            "gs://%s/%s already holds another object; it is never overwritten, and gs://%s/%s stays in input",
            bucket.name,
            destination,
            bucket.name,
            name,
        )
        return "occupied"
    try:
        bucket.delete_blob(name, if_generation_match=generation, retry=retry)
    except PreconditionFailed:
        LOG.warning("gs://%s/%s was replaced while archiving; the new version stays", bucket.name, name)
    except NotFound:
        pass
    return "moved"
