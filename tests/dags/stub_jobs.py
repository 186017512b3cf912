"""The jobs without Spark, for tests whose subject is the Airflow side (the Databricks operator's protocol).

Each stub parses the real job's command line and ends through the real ``spark_jobs.cli.run_job``, so it
prints the result line (a ``JobMetrics``) and exits as the job does; only the work between is simple:

- ``stage-orders`` reads the manifest from the GCS emulator and takes each listed file as loaded, every data
  line a row (the figures from the real ``stage_metrics``), and records the batch as staged;
- ``merge-orders`` takes the staged batch as inserted, one target version a merge, and records it merged;
- ``batch-report`` answers from the recorded batch through the real ``report_of``.

``refuse[job]`` makes that job's next run refuse the batch with the given error (recorded ``stage_failed``,
as the stage records a refusal, then raised as the job's own ``OrderLoadError``). What the jobs do with the
data is proven by the real jobs (``tests/spark_jobs``) and by the DAG runs that execute them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from spark_jobs import batch_report, merge_orders, stage_orders
from spark_jobs.cli import OrderLoadError, run_job, utc_now
from spark_jobs.contracts import BatchStatus, JobMetrics, Manifest, Result
from spark_jobs.extract import InputFile
from spark_jobs.headers import FileHeader
from spark_jobs.load import AuditRecord
from spark_jobs.outcomes import FileOutcome, stage_metrics


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
        return run_job("stage_orders", lambda _: self._stage(args.manifest, args.batch_id), _no_session)

    def merge(self, argv: list[str]) -> int:
        args = merge_orders.parse_args(argv)
        return run_job("merge_orders", lambda _: self._merge(args.batch_id), _no_session)

    def report(self, argv: list[str]) -> int:
        args = batch_report.parse_args(argv)
        record = self.audit.get(args.batch_id)
        job = lambda _: batch_report.report_of(record, args.job, args.batch_id, args.audit_table, args.since)  # noqa: E731
        return run_job("batch_report", job, _no_session)

    def _stage(self, manifest_uri: str, batch_id: str) -> dict:
        self.ran.append("stage_orders")
        started = utc_now()
        bucket_name, name = manifest_uri.removeprefix("gs://").split("/", 1)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        manifest = Manifest.from_json(client.bucket(bucket_name).blob(name).download_as_text())
        outcomes = []
        for item in manifest.files:
            data = _first_found(client, item.locations)
            header, *lines = data.decode("utf-8", "replace").splitlines()
            rows = sum(bool(line.strip()) for line in lines)
            listed = InputFile(item.uri, item.uri, item.size or len(data), FileHeader(tuple(header.split(","))))
            outcomes.append(FileOutcome(replace(listed, generation=item.generation), rows=rows))
        metrics = stage_metrics(batch_id, outcomes, {}, (sum(o.rows for o in outcomes), 0))
        if "stage_orders" in self.refuse:
            error = self.refuse.pop("stage_orders")
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


def _first_found(client: storage.Client, locations: tuple[str, ...]) -> bytes:
    """An object's bytes at the first of its locations that holds it (as the stage reads a re-run's files)."""
    for uri in locations:
        bucket_name, name = uri.removeprefix("gs://").split("/", 1)
        blob = client.bucket(bucket_name).blob(name)
        if blob.exists():
            return blob.download_as_bytes()
    raise OrderLoadError(f"none of {locations} exists")
