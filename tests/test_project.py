"""Project-level promises: the README documents every setting, the wheel carries both entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from order_tracking_load.settings import SETTINGS
from tests.conftest import REPO


def test_readme_documents_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    for setting in SETTINGS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{setting.env}` |")), None)
        assert row is not None, f"{setting.env} is not in the README's configuration table"
        if setting.default and setting.env != "ORDER_TRACKING_LOCAL_TABLE_ROOT":
            assert f"`{setting.default}`" in row, f"{setting.env}: default {setting.default!r} not documented"


def test_wheel_ships_the_jobs_with_their_entry_points(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("order_tracking_spark_jobs-0.1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read("order_tracking_spark_jobs-0.1.0.dist-info/entry_points.txt").decode()
    assert {"spark_jobs/stage_orders.py", "spark_jobs/merge_orders.py", "spark_jobs/transform.py"} <= set(names)
    assert not any(name.startswith(("tests/", "dags/", "plugins/")) for name in names)
    assert "stage-orders = spark_jobs.stage_orders:main" in entry_points
    assert "merge-orders = spark_jobs.merge_orders:main" in entry_points
