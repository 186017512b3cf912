"""make deploy: build the jobs' wheel with a version of its own, upload it to a Unity Catalog volume.

    ORDER_TRACKING_TABLE_NAMESPACE=main.order_tracking make deploy

1. builds the wheel, and stamps it with a version no earlier build had: ``0.1.0+<UTC time>.<commit>`` (as
   the Databricks CLI's ``dynamic_version`` does), so a running cluster installs the new file instead of
   keeping the one it already has under the same name;
2. creates the schema ``ORDER_TRACKING_TABLE_NAMESPACE`` and its volume (``ORDER_TRACKING_DEPLOY_VOLUME``,
   default ``artifacts``) when absent;
3. uploads the wheel there, never over an existing file, and prints the ``ORDER_TRACKING_WHEEL_URI`` to set.

It authenticates as the Databricks SDK does (``DATABRICKS_HOST`` with ``DATABRICKS_TOKEN``, or
``DATABRICKS_CLIENT_ID``/``DATABRICKS_CLIENT_SECRET`` for a service principal, or a CLI profile).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from order_tracking_load.settings import DEPLOY_SETTINGS, setting  # noqa: E402  (the settings registry)

(DEPLOY_VOLUME,) = DEPLOY_SETTINGS


def build_wheel(folder: Path) -> Path:
    """``python -m build --wheel`` of the repo into ``folder``."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(folder), str(REPO)], check=True, capture_output=True
    )
    (wheel,) = folder.glob("*.whl")
    return wheel


def build_version(base: str, now: datetime | None = None) -> str:
    """``<base>+<UTC time to the microsecond>.<commit>``: a PEP 440 local version no earlier build had."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S%f")
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return f"{base}+{stamp}" + (f".g{commit.stdout.strip()}" if commit.returncode == 0 else "")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def restamp(wheel: Path, version: str, folder: Path) -> Path:
    """A copy of ``wheel`` at ``version``: its file name, dist-info folder, METADATA and RECORD rewritten."""
    name, old_version, rest = wheel.name.split("-", 2)
    old_info, new_info = f"{name}-{old_version}.dist-info/", f"{name}-{version}.dist-info/"
    target = folder / f"{name}-{version}-{rest}"
    records = []
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            path = item.filename.replace(old_info, new_info, 1) if item.filename.startswith(old_info) else item.filename
            if path == new_info + "RECORD":
                continue
            data = source.read(item)
            if path == new_info + "METADATA":
                data = re.sub(rb"(?m)^Version: .*$", b"Version: " + version.encode(), data, count=1)
            out.writestr(zipfile.ZipInfo(path, date_time=item.date_time), data, zipfile.ZIP_DEFLATED)
            records.append((path, _record_hash(data), str(len(data))))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*records, (new_info + "RECORD", "", "")])
        out.writestr(new_info + "RECORD", text.getvalue())
    return target


def ensure_schema_and_volume(workspace, catalog: str, schema: str, volume: str) -> None:
    """Create the schema and the managed volume when absent (the job identity then needs no CREATE rights)."""
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.catalog import VolumeType

    try:
        workspace.schemas.get(f"{catalog}.{schema}")
    except NotFound:
        workspace.schemas.create(name=schema, catalog_name=catalog, comment="order-tracking incremental load")
        print(f"created schema {catalog}.{schema}")
    try:
        workspace.volumes.read(f"{catalog}.{schema}.{volume}")
    except NotFound:
        workspace.volumes.create(catalog_name=catalog, schema_name=schema, name=volume, volume_type=VolumeType.MANAGED)
        print(f"created volume {catalog}.{schema}.{volume}")


def deploy(workspace=None) -> str:
    """Build, stamp, create the schema and volume if absent, upload; return the wheel's volume path."""
    from databricks.sdk import WorkspaceClient

    namespace = setting("ORDER_TRACKING_TABLE_NAMESPACE").read()
    catalog, schema = namespace.split(".")
    volume = DEPLOY_VOLUME.read()
    workspace = workspace or WorkspaceClient()
    with tempfile.TemporaryDirectory() as folder:
        built = build_wheel(Path(folder) / "built")
        version = build_version(built.name.split("-")[1])
        wheel = restamp(built, version, Path(folder))
        ensure_schema_and_volume(workspace, catalog, schema, volume)
        path = f"/Volumes/{catalog}/{schema}/{volume}/{wheel.name}"
        with wheel.open("rb") as data:
            workspace.files.upload(path, data, overwrite=False)
    print(f"uploaded {path}")
    print(f"ORDER_TRACKING_WHEEL_URI={path}")
    return path


if __name__ == "__main__":
    deploy()
