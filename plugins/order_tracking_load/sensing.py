"""Waiting for a run's files: a deferrable prefix sensor whose wait in vain skips the run, never fails it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.google.cloud.sensors.gcs import GCSObjectsWithPrefixExistenceSensor
from airflow.providers.google.cloud.triggers.gcs import GCSPrefixBlobTrigger
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferralTimeout
from airflow.triggers.base import TriggerEvent

from order_tracking_load import manifests, runs
from order_tracking_load.settings import LoadSettings

LOG = logging.getLogger(__name__)
PROGRESS_SECONDS = 300  # how often a waiting trigger says what it waits for


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
            said = -PROGRESS_SECONDS
            while True:
                matches = await self._list_blobs_with_prefix(hook=hook, bucket_name=self.bucket, prefix=self.prefix)
                if matches:
                    self.log.info(
                        "%d objects under gs://%s/%s: the run goes on", len(matches), self.bucket, self.prefix
                    )
                    yield TriggerEvent({"status": "success", "message": "files arrived", "matches": matches})
                    return
                if time.time() >= self.deadline:
                    yield TriggerEvent({"status": "timeout", "message": f"nothing under {self.prefix} in time"})
                    return
                if time.monotonic() - said >= PROGRESS_SECONDS:  # what it waits for, at most every 5 minutes
                    said = time.monotonic()
                    self.log.info(
                        "nothing under gs://%s/%s yet; looking every %.0f s until %s UTC",
                        self.bucket,
                        self.prefix,
                        self.poke_interval,
                        datetime.fromtimestamp(self.deadline, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    )
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
        self._matches = [blob.name for blob in runs.list_source(self.settings, self._source)]
        return bool(self._matches)

    def execute(self, context: Context) -> Any:
        self._source = runs.run_source(context, self.settings)
        self.prefix = self._source.prefix
        if self.poke(context):
            return self._matches
        if manifests.earlier_manifest(self.settings, context["run_id"]) is not None:
            # A cleared run loads the batch it listed before, which need not be in input any more.
            LOG.info("run %s listed its batch before: no need to wait", context["run_id"])
            return []
        if self._source.replay:
            # Archived files do not arrive later: a replay with nothing to reload ends at once.
            raise runs.skip(f"nothing to replay: no archived files in {self._source.describe(self.bucket)}")
        LOG.info(
            "no object under gs://%s/%s yet: waiting for one in the triggerer, for up to %.0f s "
            "(listing every %.0f s); a wait in vain skips the run",
            self.bucket,
            self.prefix,
            self.timeout,
            self.poke_interval,
        )
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
            raise runs.skip(f"no new files under gs://{self.bucket}/{self.prefix}: {event['message']}")
        return super().execute_complete(context, event)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (AirflowSensorTimeout, TaskDeferralTimeout) as timeout:
            raise runs.skip(f"no new files under gs://{self.bucket}/{self.prefix}: {timeout}") from timeout
