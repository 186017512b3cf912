"""GCS access for the DAG's tasks: the bucket, a bounded retry on every call, one clear error per outage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.google.cloud.hooks.gcs import GCSHook
from google.api_core.exceptions import GoogleAPIError
from google.api_core.retry import Retry
from google.auth.exceptions import TransportError
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.exceptions import RequestException

from order_tracking_load.settings import LoadSettings


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


def bucket(settings: LoadSettings) -> Any:
    """The bucket, through the GCS connection (every task's GCS call starts here)."""
    return GCSHook(gcp_conn_id=settings.gcp_conn_id).get_conn().bucket(settings.bucket)


def list_objects(settings: LoadSettings, prefix: str) -> list:
    """Every object under ``prefix``, listed whole (bounded retries, one clear error on an outage)."""
    with gcs_errors(f"list gs://{settings.bucket}/{prefix}", settings):
        return list(bucket(settings).list_blobs(prefix=prefix, retry=gcs_retry(settings)))
