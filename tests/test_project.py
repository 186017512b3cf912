"""Project-level promises: the configuration doc lists every setting, the wheel carries both entry points."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_the_configuration_doc_is_generated_from_every_registry():
    """docs/CONFIGURATION.md is what make docs writes: every variable the code reads, with its default."""
    written = (REPO / "docs" / "CONFIGURATION.md").read_text()
    assert written == _configuration_doc().render(), "docs/CONFIGURATION.md is stale: run make docs"
    documented = set(re.findall(r"^\| `(ORDER_TRACKING_[A-Z0-9_]+)` \|", written, re.MULTILINE))
    read_in_code = set()
    for folder in ("dags", "plugins", "spark_jobs", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            read_in_code |= set(re.findall(r'"(ORDER_TRACKING_[A-Z0-9_]+)"', path.read_text()))
    assert {"ORDER_TRACKING_SPARK_LOG_LEVEL", "ORDER_TRACKING_DEPLOY_VOLUME"} <= read_in_code <= documented
    assert next(line for line in written.splitlines() if line.startswith("| `ORDER_TRACKING_RETRIES` |")) == (
        "| `ORDER_TRACKING_RETRIES` | `3` | task retries, with exponential backoff |"
    )


def _configuration_doc():
    spec = importlib.util.spec_from_file_location("configuration_doc", REPO / "scripts" / "configuration_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


CREDENTIAL_PATTERNS = {
    "Databricks token": re.compile(r"dapi[0-9a-f]{32}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key file": re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{16,}"'),
    "Google API key": re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
}


def test_the_repo_holds_no_credential():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    assert ".env.example" in tracked
    assert ".env" not in tracked
    found = []
    for name in tracked:
        path = REPO / name
        if not path.is_file() or path.suffix in {".png", ".jar"}:
            continue
        for line in path.read_text(errors="replace").splitlines():
            # The secrets test's own fakes are marked FAKE (f-strings keep the key markers out of this file).
            if "FAKE" not in line:
                found += [(name, kind) for kind, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(line)]
    assert found == []


def test_make_env_writes_a_generated_fernet_key_and_never_overwrites(tmp_path):
    from cryptography.fernet import Fernet

    for name in ("Makefile", ".env.example", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / ".venv" / ".installed").touch()  # the venv is up to date: make builds nothing else

    made = subprocess.run(["make", ".env"], cwd=tmp_path, capture_output=True, text=True, check=False)

    assert made.returncode == 0, made.stderr
    lines = (tmp_path / ".env").read_text().splitlines()
    assert lines[:-1] == (REPO / ".env.example").read_text().splitlines()
    name, _, key = lines[-1].partition("=")
    assert name == "AIRFLOW__CORE__FERNET_KEY"
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"token")) == b"token"
    # Run again, even with .env.example changed since: the existing .env (and its key) is kept.
    os.utime(tmp_path / ".env.example", (time.time() + 60, time.time() + 60))
    again = subprocess.run(["make", ".env"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert again.returncode != 0
    assert ".env exists; remove it to regenerate" in again.stdout
    assert (tmp_path / ".env").read_text().splitlines() == lines


def test_the_compose_stack_binds_loopback_and_requires_a_fernet_key():
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    published = {name: service["ports"] for name, service in compose["services"].items() if "ports" in service}
    assert published == {"fake-gcs": ["127.0.0.1:4443:4443"], "airflow-apiserver": ["127.0.0.1:8080:8080"]}
    fernet = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__FERNET_KEY"]
    assert fernet.startswith("${AIRFLOW__CORE__FERNET_KEY:?")


def test_the_delta_jars_follow_the_delta_spark_pin(tmp_path, monkeypatch):
    import shutil

    sys.path.insert(0, str(REPO / "scripts"))
    import check_image_version

    assert check_image_version.check_delta_jars() == 0
    copy = tmp_path / "repo"
    (copy / "jars").mkdir(parents=True)
    shutil.copy(REPO / "jars" / "pom.xml", copy / "jars" / "pom.xml")
    (copy / "requirements.txt").write_text(
        (REPO / "requirements.txt").read_text().replace("delta-spark==4.4.0", "delta-spark==4.5.0")
    )
    monkeypatch.setattr(check_image_version, "REPO", copy)
    assert check_image_version.check_delta_jars() == 1


def test_the_wheel_requires_the_python_its_code_needs():
    # vermin reads the job code and names the lowest Python that runs it (``datetime.UTC``: 3.11). pip must
    # refuse the wheel on a compute whose Python is older (DBR 14.3, serverless environment 1: 3.10).
    import tomllib

    from packaging.specifiers import SpecifierSet

    vermin = Path(sys.executable).with_name("vermin")
    found = subprocess.run(
        [str(vermin), "--no-tips", "--eval-annotations", str(REPO / "spark_jobs")], capture_output=True, text=True
    )
    minimum = re.search(r"Minimum required versions: (3\.\d+)", found.stdout)
    assert minimum, found.stdout + found.stderr
    needed = minimum.group(1)
    declared = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    older = f"3.{int(needed.split('.')[1]) - 1}"
    assert needed in declared, f"the code needs Python {needed}; the wheel says {declared}"
    assert older not in declared, f"the code needs Python {needed}, but the wheel installs on {older} ({declared})"
