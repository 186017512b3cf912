"""make deploy against the Jobs API stand-in: a wheel whose version changes with every build, in a volume."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile

from tests.conftest import REPO
from tests.dags.databricks_stand_in import JobsApiStandIn


def _deploy(stand_in: JobsApiStandIn) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABRICKS_HOST": stand_in.host,
        "DATABRICKS_TOKEN": "dapi-deploy",
        "ORDER_TRACKING_TABLE_NAMESPACE": "main.order_tracking",
    }
    return subprocess.run(
        [sys.executable, "scripts/deploy.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def _check_record(wheel: bytes) -> tuple[str, dict]:
    """The wheel's version (METADATA) and entry points; every RECORD hash is checked against its file."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        (record,) = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
        for path, digest, size in csv.reader(io.StringIO(archive.read(record).decode())):
            if path == record:
                continue
            data = archive.read(path)
            expected = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (expected, len(data)), path
        info = record.rsplit("/", 1)[0]
        metadata = archive.read(f"{info}/METADATA").decode()
        version = next(line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Version: "))
        assert info == f"order_tracking_spark_jobs-{version}.dist-info"
        return version, archive.read(f"{info}/entry_points.txt").decode()


def test_each_deploy_uploads_a_wheel_of_a_new_version_and_creates_the_schema_once():
    with JobsApiStandIn() as stand_in:
        first = _deploy(stand_in)
        assert first.returncode == 0, first.stderr
        second = _deploy(stand_in)
        assert second.returncode == 0, second.stderr

    assert stand_in.refused == []  # the schema and volume requests passed the SDK's types
    assert stand_in.schemas == {"main.order_tracking"}
    assert stand_in.volumes == {"main.order_tracking.artifacts"}
    assert "created schema main.order_tracking" in first.stdout
    assert "created schema" not in second.stdout
    paths = sorted(stand_in.files)
    assert len(paths) == 2
    printed = [
        line.split("=", 1)[1] for out in (first, second) for line in out.stdout.splitlines() if "WHEEL_URI=" in line
    ]
    assert sorted(printed) == paths
    versions = []
    for path in paths:
        assert path.startswith("/Volumes/main/order_tracking/artifacts/order_tracking_spark_jobs-0.1.0+")
        assert path.endswith("-py3-none-any.whl")
        version, entry_points = _check_record(stand_in.files[path])
        assert path.split("/")[-1] == f"order_tracking_spark_jobs-{version}-py3-none-any.whl"
        assert "batch-report = spark_jobs.batch_report:main" in entry_points
        versions.append(version)
    assert versions[0] != versions[1]
