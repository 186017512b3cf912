"""The records that cross a process: manifest, per-file outcome and job metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spark_jobs.contracts import FileResult, FileStatus, JobMetrics, Manifest, ManifestFile, Refusal, Result


def test_a_manifest_survives_its_json_round_trip():
    manifest = Manifest(
        batch_id="scheduled__2026-11-26T10:00:00+00:00",
        files=(
            ManifestFile(
                uri="gs://b/input/a.csv",
                name="input/a.csv",
                generation=17,
                size=120,
                archive_uri="gs://b/archive/2026-11-26/10/run/a.csv",
                rejected_uri="gs://b/rejected/2026-11-26/run/a.csv",
            ),
        ),
        run_id="scheduled__2026-11-26T10:00:00+00:00",
        batch_date="2026-11-26",
    )

    assert Manifest.from_json(json.dumps(manifest.to_dict())) == manifest
    assert manifest.to_dict()["files"] == [
        {
            "uri": "gs://b/input/a.csv",
            "name": "input/a.csv",
            "generation": 17,
            "size": 120,
            "archive_uri": "gs://b/archive/2026-11-26/10/run/a.csv",
            "rejected_uri": "gs://b/rejected/2026-11-26/run/a.csv",
        }
    ]
    assert manifest.files[0].locations == (
        "gs://b/input/a.csv",
        "gs://b/archive/2026-11-26/10/run/a.csv",
        "gs://b/rejected/2026-11-26/run/a.csv",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "manifest m is not JSON"),
        ('{"batch_id": "b"}', "manifest m has no 'files' list of objects with a 'uri'"),
        ('{"batch_id": "b", "files": [{"name": "a.csv"}]}', "manifest m has no 'files' list of objects with a 'uri'"),
        ('{"files": [{"uri": "gs://b/a.csv"}]}', "manifest m has no 'batch_id'"),
    ],
)
def test_a_malformed_manifest_is_refused_clearly(text, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        Manifest.from_json(text, "manifest m")


def test_job_metrics_are_the_last_result_line_a_job_printed():
    line = {
        "result": "succeeded",
        "batch_id": "b1",
        "rows_read": 5,
        "rows_inserted": 2,
        "rows_updated": 0,
        "files": [{"uri": "gs://b/a.csv", "rows": 5, "rows_rejected": 0, "status": "loaded"}],
    }
    output = "\n".join(["INFO starting", json.dumps({"other": 1}), json.dumps(line), "INFO done", ""])

    metrics = JobMetrics.from_output(output)

    assert metrics.succeeded
    assert metrics.changed_target
    assert metrics.figures() == {"rows_read": 5, "rows_inserted": 2, "rows_updated": 0}
    assert metrics.files == (
        FileResult(
            uri="gs://b/a.csv",
            size=None,
            generation=None,
            rows=5,
            rows_rejected=0,
            status="loaded",
            reason=None,
            fingerprint=None,
            redelivery_of=None,
        ),
    )
    assert JobMetrics.from_output("no metrics here\n") is None
    replay = JobMetrics.from_dict({"result": "succeeded", "rows_inserted": 0, "rows_updated": 0})
    assert not replay.changed_target


def test_a_line_of_a_newer_version_is_read_by_the_fields_known_and_the_others_logged_once(caplog):
    """A rolling upgrade: a wheel deployed ahead of the plugin adds a figure, a file field and a status. They
    failed every task whose run succeeded ("JobMetrics has no field ..."), on every retry."""
    newer = {
        "result": "succeeded",
        "version": 2,
        "batch_id": "b1",
        "status": "merged_and_optimised",
        "rows_read": 5,
        "rows_teleported": 1,
        "files": [{"uri": "a", "status": "loaded", "rows": 5, "colour": 1}],
    }

    first, again = JobMetrics.from_dict(newer), JobMetrics.from_dict(newer)

    assert first == again
    assert (first.succeeded, first.batch_id, first.rows_read, first.status, first.version) == (True, "b1", 5, None, 2)
    assert [(f.uri, f.status, f.rows) for f in first.files] == [("a", FileStatus.LOADED, 5)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sorted(w.split(",")[0] for w in warnings) == sorted(
        [
            "JobMetrics: ignoring field rows_teleported",
            "FileResult: ignoring field colour",
            "ignoring batch status 'merged_and_optimised'",
        ]
    )  # each once, though read twice


def test_only_what_a_reader_needs_and_cannot_find_is_refused():
    with pytest.raises(Refusal, match=r"^JobMetrics needs result, which this record lacks"):
        JobMetrics.from_dict({"batch_id": "b1"})
    with pytest.raises(Refusal, match=r"^FileResult needs status, which this record lacks"):
        JobMetrics.from_dict({"result": "succeeded", "files": [{"uri": "a"}]})
    with pytest.raises(ValueError, match="'moved' is not a valid FileStatus"):  # the archive cannot act on it
        JobMetrics.from_dict({"result": "succeeded", "files": [{"uri": "a", "status": "moved"}]})


def test_a_result_line_is_found_after_the_exceptions_type_in_a_runs_error():
    line = JobMetrics(Result.FAILED, error="batch b1: no file of it loads", retryable=False).to_json_line()

    found = JobMetrics.from_output(f"SystemExit: {line}")

    assert (found.error, found.retryable, found.version) == ("batch b1: no file of it loads", False, 1)


def test_the_audit_table_holds_each_file_result_field_and_each_count():
    from spark_jobs.contracts import ROW_COUNTS
    from spark_jobs.load import AUDIT_FILE, AUDIT_SCHEMA

    assert AUDIT_FILE.names == list(FileResult.__dataclass_fields__)
    assert [name for name in AUDIT_SCHEMA.names if name in ROW_COUNTS] == list(ROW_COUNTS)


def test_the_contracts_module_imports_no_pyspark():
    code = "import sys, spark_jobs.contracts; print(sorted(m for m in sys.modules if m.startswith('pyspark')))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_an_audit_row_with_a_column_this_version_does_not_know_is_read():
    """A wheel rolled back after the audit table gained a column reads the batch's record all the same."""
    from spark_jobs.contracts import BatchStatus
    from spark_jobs.load import AuditRecord

    row = {
        "batch_id": "b1",
        "status": "merged",
        "rows_read": 3,
        "files": [],
        "rows_archived": 3,
        "merge_started_at": None,
    }

    record = AuditRecord.from_row(row)

    assert (record.metrics.batch_id, record.status, record.metrics.rows_read, record.metrics.succeeded) == (
        "b1",
        BatchStatus.MERGED,
        3,
        True,
    )
