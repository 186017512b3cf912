"""Shared fixtures: one local Spark session with Delta, the seed files, and table paths under tmp_path."""

from __future__ import annotations

import csv
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis: ``ci`` (the default, ``make test``) draws the same examples on every run; ``fuzz`` (``make fuzz``)
# draws new ones each time and prints the seed of a failure.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("fuzz", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# py4j logs at interpreter exit, after pytest closed the captured streams; keep it quiet.
logging.getLogger("py4j").setLevel(logging.WARNING)

# Spark shows TIMESTAMP values in the session zone and PySpark converts them in the process zone: use UTC.
os.environ["TZ"] = "UTC"
time.tzset()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Set before Airflow or Spark is imported: a throw-away AIRFLOW_HOME with a SQLite metadata DB, and the
# address of the GCS emulator, which both Airflow's GCS hook and local Spark's GCS connector read.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="order-tracking-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parents[1] / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(Path(__file__).resolve().parents[1] / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}",
        # What `make deploy` prints: the databricks backend has no default wheel (none would exist).
        "ORDER_TRACKING_WHEEL_URI": "/Volumes/main/order_tracking/artifacts/"
        "order_tracking_spark_jobs-0.1.0-py3-none-any.whl",
    }
)

# What a test needs, known from the fixtures it uses (directly or through others): a marker per need, so
# that a subset is one flag. The fast lane (``make check``) runs the tests that need none of them.
NEEDS = {
    "spark": "spark: needs the JVM: the shared Spark session with Delta (tables, the jobs, the DAG runs)",
    "airflow_db": "airflow: runs the DAG or its tasks through Airflow's dag.test() on its metadata DB",
}


# Tests that start processes of their own (Airflow's services, several JVMs): under pytest-xdist (make test runs
# two workers) they run one after another on one worker, while the other worker takes the rest.
PROCESSES = "processes: starts processes of its own (several JVMs); run one at a time beside the other tests"


def pytest_configure(config: pytest.Config) -> None:
    for line in (*NEEDS.values(), PROCESSES):
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, line in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(line.split(":", 1)[0])
        if item.get_closest_marker("e2e") or item.get_closest_marker("processes"):
            item.add_marker(pytest.mark.xdist_group("processes"))


@pytest.fixture(autouse=True)
def _no_jvm_unless_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test without the ``spark`` marker starts no JVM (say, a DAG run that reached a local Spark task): the
    fast lane's promise. A test that does fails, and names the fixture to ask for."""
    before = _jvm_started()
    yield
    if request.node.get_closest_marker("spark") is None and not before and _jvm_started():
        pytest.fail("this test started a JVM: ask for the spark fixture, so that it is marked spark", pytrace=False)


def _jvm_started() -> bool:
    """True when this process holds a JVM (PySpark's gateway); it imports nothing to find out."""
    pyspark = sys.modules.get("pyspark")
    return pyspark is not None and pyspark.SparkContext._jvm is not None


REPO = Path(__file__).resolve().parents[1]
SEED_DIR = REPO / "tests" / "data" / "seed"
SEED_FILES = sorted(SEED_DIR.glob("order_tracking_*.csv"))


@pytest.fixture(scope="session")
def spark() -> Iterator:
    """The one SparkSession of the test run: local, Delta-enabled, one shuffle partition."""
    os.environ.setdefault("ORDER_TRACKING_SPARK_MASTER", "local[2]")
    os.environ.setdefault("ORDER_TRACKING_SHUFFLE_PARTITIONS", "1")
    from spark_jobs.session import build_local_session

    session = build_local_session(
        "order-tracking-tests", {"spark.sql.warehouse.dir": str(_AIRFLOW_HOME / "spark-warehouse")}
    )
    yield session
    session.stop()


@pytest.fixture
def tables(tmp_path: Path):
    """Fresh path-based tables under tmp_path, named as the local backend names them."""
    from order_tracking_load.settings import TABLE_NAMES, Tables

    return Tables(**{role: str(tmp_path / "tables" / name) for role, name in TABLE_NAMES.items()})


def seed_rows() -> list[dict]:
    """Every data row of the seed files, parsed in plain Python, with its file and line number."""
    rows = []
    for path in SEED_FILES:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, record in enumerate(csv.DictReader(handle), start=2):
                rows.append({**record, "_file": path.name, "_line": line})
    return rows


def expected_latest() -> dict[str, dict]:
    """The contract's answer for the seed data: per key, the greatest event (``tests.model``: time, then
    content), an exact repeat going to the greatest (file, line)."""
    from tests.model import Event

    def rank(row: dict) -> tuple:
        return (Event(*typed_business_row(row)).rank(), row["_file"], row["_line"])

    latest: dict[str, dict] = {}
    for row in seed_rows():
        current = latest.get(row["tracking_num"])
        if current is None or rank(row) > rank(current):
            latest[row["tracking_num"]] = row
    return latest


def typed_business_row(row: dict) -> tuple:
    """A seed row as the target's business columns, typed."""

    def day(text: str):
        return datetime.strptime(text, "%Y-%m-%d").date() if text else None

    return (
        int(row["order_num"]),
        row["tracking_num"],
        day(row["pck_recieved_date"]),
        day(row["package_deliver_date"]),
        row["status"],
        row["address"] or None,
        datetime.strptime(row["last_update_timestamp"], "%Y-%m-%d %H:%M:%S"),
    )
