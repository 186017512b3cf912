"""The records that cross a process: manifest, per-file outcome and job metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spark_jobs.contracts import FileResult, JobMetrics, Manifest, ManifestFile


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


def test_a_key_the_metrics_do_not_define_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^JobMetrics has no field rows_teleported, stage_started_at$"):
        JobMetrics.from_dict({"result": "succeeded", "rows_teleported": 1, "stage_started_at": "2026-11-26"})
    with pytest.raises(ValueError, match=r"^FileResult has no field colour$"):
        JobMetrics.from_dict({"result": "succeeded", "files": [{"uri": "a", "status": "loaded", "colour": 1}]})
    with pytest.raises(ValueError, match="'merged_twice' is not a valid BatchStatus"):
        JobMetrics.from_dict({"result": "succeeded", "status": "merged_twice"})


def test_the_audit_table_holds_each_file_result_field_and_each_count():
    from spark_jobs.contracts import ROW_COUNTS
    from spark_jobs.load import AUDIT_FILE, AUDIT_SCHEMA

    assert AUDIT_FILE.names == list(FileResult.__dataclass_fields__)
    assert [name for name in AUDIT_SCHEMA.names if name in ROW_COUNTS] == list(ROW_COUNTS)


def test_the_contracts_module_imports_no_pyspark():
    code = "import sys, spark_jobs.contracts; print(sorted(m for m in sys.modules if m.startswith('pyspark')))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
