"""Fixtures of the DAG tests: Airflow's metadata DB, the GCS emulator, the pipeline's environment, a runner."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import SEED_FILES
from tests.dags.gcs_emulator import GcsEmulator

DAG_ID = "order_tracking_incremental_load"
BUCKET = "order-tracking"
GCP_CONNECTION = json.dumps({"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "test"}})
_LOGICAL_DATES = (datetime(2026, 11, 26, tzinfo=UTC) + timedelta(minutes=i) for i in itertools.count())


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create the SQLite metadata DB of the test run's AIRFLOW_HOME."""
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    """The emulator, for the whole session (local Spark's GCS connector is bound to its address)."""
    emulator = GcsEmulator(BUCKET).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs(gcs_emulator: GcsEmulator) -> GcsEmulator:
    """The emulator with an empty bucket."""
    gcs_emulator.wipe()
    return gcs_emulator


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings of a local-backend pipeline whose tables live in tmp_path; returns the table folder."""
    tables = tmp_path / "tables"
    for name, value in {
        "ORDER_TRACKING_SPARK_BACKEND": "local",
        "ORDER_TRACKING_LOCAL_TABLE_ROOT": str(tables),
        "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "3",
        "ORDER_TRACKING_SENSOR_POKE_SECONDS": "1",
        "ORDER_TRACKING_RETRIES": "0",
        "ORDER_TRACKING_RETRY_DELAY_SECONDS": "0",
        "ORDER_TRACKING_DATABRICKS_POLL_SECONDS": "1",
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": GCP_CONNECTION,
    }.items():
        monkeypatch.setenv(name, value)
    return tables


@dataclass
class Outcome:
    """A finished DAG run: its state, each task's state and how many tries each task took."""

    state: str
    tasks: dict[str, str]
    run_id: str
    tries: dict[str, int]


def run_dag(conf: dict | None = None) -> Outcome:
    """Parse the DAG afresh (so it sees the current environment) and run it once with ``dag.test()``."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags[DAG_ID]
    moment = next(_LOGICAL_DATES)
    dag_run = dag.test(logical_date=moment, run_after=moment, run_conf=conf)
    instances = dag_run.get_task_instances()
    return Outcome(
        state=str(dag_run.state),
        tasks={ti.task_id: str(ti.state) for ti in instances},
        run_id=dag_run.run_id,
        tries={ti.task_id: ti.try_number for ti in instances},
    )


def upload_seed(gcs: GcsEmulator, files: list[Path] = SEED_FILES, prefix: str = "input/") -> None:
    """Put seed files into the bucket."""
    for path in files:
        gcs.upload(prefix + path.name, path.read_bytes())
