"""The jobs without Spark, for tests whose subject is the Airflow side (the Databricks operator's protocol).

Each stub parses the real job's command line and ends through the real ``spark_jobs.cli.run_job``, so it
prints the result line (a ``JobMetrics``) and exits as the job does; only the work between is simple:

- ``stage-orders`` reads the manifest from the GCS emulator and takes each listed file as loaded, every data
  line a row, unless its object in the input folder is not the generation listed (rejected whole, as replaced
  since the run listed it); the figures, the reject limit and its error come from the real ``outcomes`` code,
  and the batch is recorded as staged (or ``stage_failed`` with that error);
- ``merge-orders`` takes the staged batch as inserted, one target version a merge, and records it merged;
- ``batch-report`` answers from the recorded batch through the real ``report_of``.

``refuse["stage_orders"]`` makes the next stage run refuse the batch with the given error (recorded
``stage_failed``, as the stage records a refusal, then raised as the job's own ``OrderLoadError``). What the
jobs do with the data is proven by the real jobs (``tests/spark_jobs``) and by the DAG runs that execute them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from spark_jobs import batch_report, merge_orders, stage_orders
from spark_jobs.cli import OrderLoadError, run_job, utc_now
from spark_jobs.contracts import CHANGED_SINCE_LISTED, BatchStatus, JobMetrics, Manifest, ManifestFile, Result
from spark_jobs.extract import InputFile
from spark_jobs.headers import FileHeader
from spark_jobs.load import AuditRecord
from spark_jobs.outcomes import FileOutcome, quarantine, reject_limit_error, stage_metrics


def _no_session(name: str) -> None:
    """The stubs start no Spark."""


class StubJobs:
    """The stub entry points and the audit records they keep (by batch id), in memory."""

    def __init__(self) -> None:
        self.audit: dict[str, AuditRecord] = {}
        self.refuse: dict[str, str] = {}
        self.ran: list[str] = []  # each job run, in order

    @property
    def entry_points(self) -> dict[str, Callable[[list[str]], int]]:
        """The stubs by the wheel entry point they stand for."""
        return {"stage-orders": self.stage, "merge-orders": self.merge, "batch-report": self.report}

    def stage(self, argv: list[str]) -> int:
        args = stage_orders.parse_args(argv)
        job = lambda _: self._stage(args.manifest, args.batch_id, args.max_reject_fraction, args.rejects_table)  # noqa: E731
        return run_job("stage_orders", job, _no_session)

    def merge(self, argv: list[str]) -> int:
        args = merge_orders.parse_args(argv)
        return run_job("merge_orders", lambda _: self._merge(args.batch_id), _no_session)

    def report(self, argv: list[str]) -> int:
        args = batch_report.parse_args(argv)
        record = self.audit.get(args.batch_id)
        job = lambda _: batch_report.report_of(record, args.job, args.batch_id, args.audit_table, args.since)  # noqa: E731
        return run_job("batch_report", job, _no_session)

    def _stage(self, manifest_uri: str, batch_id: str, limit: float, rejects_table: str) -> dict:
        self.ran.append("stage_orders")
        started = utc_now()
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        manifest = Manifest.from_json(storage.Blob.from_uri(manifest_uri, client=client).download_as_text())
        outcomes = [_outcome(client, item) for item in manifest.files]
        error = self.refuse.pop("stage_orders", None) or reject_limit_error(batch_id, outcomes, limit, rejects_table)
        outcomes = outcomes if error else quarantine(outcomes, limit)
        loaded = sum(o.rows for o in outcomes if o.loaded)
        metrics = stage_metrics(batch_id, outcomes, {}, None if error else (loaded, 0))
        if error:
            failed = replace(metrics, result=Result.FAILED, status=BatchStatus.STAGE_FAILED, error=error)
            self.audit[batch_id] = AuditRecord(failed, stage_started_at=started, stage_finished_at=utc_now())
            raise OrderLoadError(error)
        self.audit[batch_id] = AuditRecord(metrics, stage_started_at=started, stage_finished_at=utc_now())
        return metrics.to_dict()

    def _merge(self, batch_id: str) -> dict:
        self.ran.append("merge_orders")
        started = utc_now()
        staged = self.audit[batch_id]
        merged = replace(
            staged.metrics,
            status=BatchStatus.MERGED,
            rows_inserted=staged.metrics.rows_staged,
            rows_updated=0,
            rows_skipped_stale=0,
            rows_unchanged=0,
            history_rows_inserted=staged.metrics.rows_staged,
            target_version=sum(record.status == BatchStatus.MERGED for record in self.audit.values()) + 1,
        )
        self.audit[batch_id] = replace(staged, metrics=merged, merge_started_at=started, merge_finished_at=utc_now())
        return merged.to_dict()

    def merged(self) -> list[JobMetrics]:
        """The batches merged, as their audit records hold them."""
        return [record.metrics for record in self.audit.values() if record.status == BatchStatus.MERGED]


def _outcome(client: storage.Client, item: ManifestFile) -> FileOutcome:
    """One listed file: loaded, every data line a row; rejected whole when the input folder holds another
    generation of it than was listed (at its archive or rejected location, as a re-run reads it, it is the same)."""
    for uri in item.locations:
        named = storage.Blob.from_uri(uri, client=client)
        blob = named.bucket.get_blob(named.name)
        if blob is not None:
            break
    else:
        raise OrderLoadError(f"none of {item.locations} exists")
    generation = blob.generation  # before the download, which takes its headers' (the emulator sends none)
    header, *lines = blob.download_as_bytes().decode("utf-8", "replace").splitlines()
    rows = sum(bool(line.strip()) for line in lines)
    listed = InputFile(
        item.uri, item.uri, item.size or blob.size, FileHeader(tuple(header.split(","))), item.generation
    )
    if uri == item.uri and item.generation is not None and generation != item.generation:
        reason = f"{CHANGED_SINCE_LISTED}: generation {item.generation} then, {generation} now"
        return FileOutcome(listed, rows=rows, rows_rejected=rows, reason=reason)
    return FileOutcome(listed, rows=rows)
