"""Archiving a run's files: exactly the manifest's objects, at the generation listed, never over another."""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.sdk import Context
from google.api_core.exceptions import NotFound, PreconditionFailed
from google.api_core.retry import Retry

from order_tracking_load import storage
from order_tracking_load.settings import LoadSettings
from spark_jobs.contracts import CHANGED_SINCE_LISTED, FileResult, FileStatus, JobMetrics, Manifest

LOG = logging.getLogger(__name__)


def archive_loaded_files(settings: LoadSettings, listing: dict, load_result: dict, context: Context) -> dict:
    """Move exactly the manifest's objects: loaded ones to their ``archive_uri``, files rejected whole to
    their ``rejected_uri``, by what became of each (``load_result``: the merge's metrics, which carry the
    stage's per-file results). Returns what moved where, and the files quarantined, for the run's report.

    A listed object that is no longer in input was moved by an earlier try of this task, or by another
    run that loaded the same files (its rows are in the target either way); it is reported, not moved.
    """
    listed = {key: value for key, value in listing.items() if key != "manifest_uri"}  # the listing task's own
    manifest = Manifest.from_dict(listed, "the listing")
    files = JobMetrics.from_dict(load_result).files
    moved: dict[str, Any] = {"archived": [], "rejected": [], "left_in_input": [], "already_gone": []}
    moved |= {"files": len(files), "quarantined": [f.to_dict() for f in files if f.status == FileStatus.REJECTED]}
    if manifest.replay:
        LOG.info("replay of archived files: nothing to move")
        return moved
    outcome_by_uri = {item.uri: item for item in files}
    bucket = storage.bucket(settings)
    retry = storage.gcs_retry(settings)
    in_bucket = f"gs://{settings.bucket}/"
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
        with storage.gcs_errors(f"move gs://{settings.bucket}/{item.name} to {destination}", settings):
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


def report_quarantined_files(settings: LoadSettings, moved: dict) -> dict:
    """Fail the run at its end when the stage quarantined files (``moved``: what the archive task moved, and
    the files quarantined), naming each with its reason: the rest of the batch loaded and is archived, and
    the next run goes on, but a quarantine needs someone to act.

    Not retried: a retry finds the same files quarantined. With none quarantined, it returns an empty list of them.
    """
    quarantined = [FileResult.from_dict(item) for item in moved["quarantined"]]
    files = moved["files"]
    if not quarantined:
        LOG.info("no file quarantined: all %d files of the batch loaded", files)
        return {"quarantined": []}
    in_bucket = f"gs://{settings.bucket}/"
    left = {f"{in_bucket}{name}" for name in moved.get("left_in_input", ())}
    # Left in input because a new version replaced the one listed: the next run lists and loads that one.
    replaced = [item for item in quarantined if item.uri in left and item.reason.startswith(CHANGED_SINCE_LISTED)]
    to_fix = [item for item in quarantined if item not in replaced]
    parts = [f"{len(quarantined)} of {files} files quarantined; the other files loaded and are archived."]
    if to_fix:
        where = (
            f"moved to {', '.join(in_bucket + name for name in moved['rejected'])}"
            if moved.get("rejected")
            else "left where they were (a replay, or moved by an earlier run)"
        )
        parts.append(
            f"Quarantined: {_named(to_fix)}. They are {where}. "
            "Fix each file and upload it to the input folder again: the next run loads it."
        )
    if replaced:
        parts.append(
            f"Replaced in the input folder after the run listed them, so not loaded: {_named(replaced)}. They stay "
            "there, and the next run loads the version there: nothing to do."
        )
    parts.append(f"Their rows are in {settings.tables.rejects}.")
    raise AirflowFailException(" ".join(parts))


def _named(items: list) -> str:
    return "; ".join(f"{item.uri} ({item.reason}, {item.rows} rows)" for item in items)
