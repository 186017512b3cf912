"""A run's manifest: the exact objects it loads, listed once; a run id that listed before loads the same."""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow.sdk import Context

from order_tracking_load import storage
from order_tracking_load.layout import BucketLayout, batch_key
from order_tracking_load.runs import Source, batch_date, list_source, load_time, run_source, skip
from order_tracking_load.settings import LoadSettings
from spark_jobs.contracts import Manifest, ManifestFile

LOG = logging.getLogger(__name__)


def earlier_manifest(settings: LoadSettings, run_id: str) -> Manifest | None:
    """The manifest this run id wrote before (an earlier try, or the run cleared and run again), if any."""
    name = BucketLayout.of(settings).manifest(run_id)
    retry = storage.gcs_retry(settings)
    with storage.gcs_errors(f"read gs://{settings.bucket}/{name}", settings):
        blob = storage.bucket(settings).get_blob(name, retry=retry)
        text = blob.download_as_text(retry=retry) if blob is not None else None
    return None if text is None else Manifest.from_json(text, f"manifest gs://{settings.bucket}/{name}")


def _listed(settings: LoadSettings, blob: Any, source: Source, batch: str, context: Context) -> ManifestFile:
    """One listed object, with where the run moves it (``layout``): to the archive once loaded, to
    rejected/ when rejected whole. A replay moves nothing."""
    relative = blob.name[len(source.prefix) :]
    layout, uri = BucketLayout.of(settings), f"gs://{settings.bucket}/"
    return ManifestFile(
        uri=uri + blob.name,
        name=blob.name,
        generation=blob.generation,
        size=blob.size,
        archive_uri=None if source.replay else uri + layout.archived(load_time(context), batch, relative),
        rejected_uri=None if source.replay else uri + layout.rejected(batch_date(context), batch, relative),
    )


def list_and_write_manifest(settings: LoadSettings, context: Context) -> dict:
    """List the exact ``.csv`` objects to load (name, generation, size) and write them as the run's manifest.

    A run's manifest is its batch: a run id that wrote one before loads it again rather than listing
    anew, so clearing a run reloads the same files (read where the run moved them) with the same rejects.
    """
    run_id = context["run_id"]
    name = BucketLayout.of(settings).manifest(run_id)
    manifest_uri = f"gs://{settings.bucket}/{name}"
    earlier = earlier_manifest(settings, run_id)
    if earlier is not None:
        LOG.info("run %s listed its batch before: reusing %s (%d files)", run_id, manifest_uri, len(earlier.files))
        return {**earlier.to_dict(), "manifest_uri": manifest_uri}

    source = run_source(context, settings)
    blobs = list_source(settings, source)
    key = batch_key(run_id)
    files = tuple(
        _listed(settings, blob, source, key, context)
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

    manifest = Manifest(batch_id=key, files=files, run_id=run_id, batch_date=batch_date(context), replay=source.replay)
    # Written only after the whole listing succeeded, in one upload: GCS makes the object appear whole
    # or not at all, so no partial manifest can exist.
    with storage.gcs_errors(f"write {manifest_uri}", settings):
        storage.bucket(settings).blob(name).upload_from_string(
            json.dumps(manifest.to_dict(), indent=2), content_type="application/json", retry=storage.gcs_retry(settings)
        )
    LOG.info(
        "manifest %s lists %d files (%d bytes) from %s",
        manifest_uri,
        len(files),
        sum(f.size or 0 for f in files),
        source.describe(settings.bucket),
    )
    return {**manifest.to_dict(), "manifest_uri": manifest_uri}
