"""Airflow's own services on loopback: the DAG triggered through the REST API, as the UI does it.

api-server, scheduler (LocalExecutor), dag-processor and triggerer run as real processes; the sensor
defers to the triggerer before the files arrive; the Spark jobs run on the local backend.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, SEED_FILES
from tests.dags.conftest import DAG_ID, GCP_CONNECTION, upload_seed
from tests.spark_jobs.helpers import read

pytestmark = pytest.mark.e2e
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
# No log server on 0.0.0.0:8793/8794: the api-server reads task logs from the shared AIRFLOW_HOME, and two
# test runs at once cannot collide on those ports.
SERVICE_ARGUMENTS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AirflowServices:
    """The four services, with their own AIRFLOW_HOME, and an authenticated REST client."""

    def __init__(self, home: Path, tables: Path, settings: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        passwords = home / "passwords.json"
        home.mkdir(parents=True)
        passwords.write_text(json.dumps({"admin": "e2e-admin-password"}))
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-only-jwt-secret-not-used-anywhere-else",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": GCP_CONNECTION,
            "ORDER_TRACKING_SPARK_BACKEND": "local",
            "ORDER_TRACKING_LOCAL_TABLE_ROOT": str(tables),
            "ORDER_TRACKING_SCHEDULE": "none",
            "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "300",
            "ORDER_TRACKING_SENSOR_POKE_SECONDS": "2",
            "ORDER_TRACKING_RETRIES": "0",
            "ORDER_TRACKING_SHUFFLE_PARTITIONS": "1",
            "ORDER_TRACKING_SPARK_MASTER": "local[1]",
            "ORDER_TRACKING_SPARK_DRIVER_MEMORY": "1g",
            **(settings or {}),
        }
        self.home = home
        self.processes: list[subprocess.Popen] = []
        self.session = requests.Session()

    def start(self) -> AirflowServices:
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, capture_output=True)
        for service in SERVICES:
            log = (self.home / f"{service}.log").open("w")
            command = [airflow, service, *SERVICE_ARGUMENTS.get(service, [])]
            if service == "api-server":
                command += ["--port", str(self.port)]
            self.processes.append(
                subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
        self._wait(lambda: requests.get(f"{self.base}/api/v2/monitor/health", timeout=5).ok, "the api-server", 120)
        token = requests.post(
            f"{self.base}/auth/token", json={"username": "admin", "password": "e2e-admin-password"}, timeout=10
        )
        token.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def api(self, method: str, path: str, **kwargs: object) -> dict:
        response = self.session.request(method, f"{self.base}/api/v2/{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def _wait(self, ready, what: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (requests.RequestException, KeyError):
                pass
            if any(process.poll() is not None for process in self.processes):
                break
            time.sleep(1)
        logs = {path.name: path.read_text()[-3000:] for path in self.home.glob("*.log")}
        raise AssertionError(f"{what} not ready in {seconds} s; service logs: {json.dumps(logs, indent=1)}")

    def task_state(self, run_id: str, task_id: str) -> str | None:
        return self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")["state"]

    def task_states(self, run_id: str) -> dict[str, str]:
        listed = self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in listed}

    def unpause_when_parsed(self) -> None:
        self._wait(lambda: self.api("GET", f"dags/{DAG_ID}")["dag_id"] == DAG_ID, "the DAG", 180)
        self.api("PATCH", f"dags/{DAG_ID}", json={"is_paused": False})


@pytest.fixture
def airflow_services(tmp_path: Path, gcs_emulator) -> Iterator[AirflowServices]:
    services = AirflowServices(tmp_path / "airflow-home", tmp_path / "tables").start()
    yield services
    services.stop()


def test_a_run_triggered_through_the_rest_api_loads_the_files(spark, gcs, airflow_services):
    services = airflow_services
    services.unpause_when_parsed()

    run = services.api("POST", f"dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    run_id = run["dag_run_id"]
    # The sensor finds nothing and hands the wait to the triggerer; the files arrive afterwards.
    services._wait(lambda: services.task_state(run_id, "wait_for_new_files") == "deferred", "a deferred sensor", 120)
    upload_seed(gcs)
    services._wait(
        lambda: services.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")["state"] in ("success", "failed"),
        "the DAG run",
        600,
    )

    states = services.task_states(run_id)
    assert services.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")["state"] == "success", states
    assert set(states.values()) == {"success"}
    assert read(spark, str(services.home.parent / "tables" / "orders")).count() == 23
    assert gcs.names("input/") == []
    assert len(gcs.names("archive/")) == len(SEED_FILES)
    merge_metrics = services.api(
        "GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/merge_orders/xcomEntries/return_value"
    )
    assert '"rows_inserted": 23' in json.dumps(merge_metrics) or "'rows_inserted': 23" in str(merge_metrics)
    assert REPO.exists()


def test_a_backfill_over_two_dates_replays_each_archived_file_once_with_runs_at_once(spark, gcs, tmp_path):
    """Two backfill runs at once (the default allows 10): both succeed, and nothing in the target moves."""
    from order_tracking_load.gcs_files import batch_key
    from order_tracking_load.settings import TABLE_NAMES, Tables
    from tests.spark_jobs.helpers import load_batch

    table_root = tmp_path / "tables"
    tables = Tables(**{role: str(table_root / name) for role, name in TABLE_NAMES.items()})
    # The archive as two earlier days' runs left it, and their loads in the tables.
    earlier = {"2026-11-20/10/scheduled_a": SEED_FILES[:3], "2026-11-21/00/scheduled_b": SEED_FILES[3:]}
    for folder, files in earlier.items():
        upload_seed(gcs, files, prefix=f"archive/{folder}/")
        load_batch(spark, tables, files, folder.rsplit("/", 1)[1])
    target_before = sorted(read(spark, tables.target).collect())
    history_before = sorted(read(spark, tables.history).collect())
    archive_before = gcs.names("archive/")

    services = AirflowServices(
        tmp_path / "airflow-home",
        table_root,
        {"ORDER_TRACKING_SCHEDULE": "@daily", "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "5"},
    ).start()
    try:
        services.unpause_when_parsed()
        backfill = services.api(
            "POST",
            "backfills",
            json={"dag_id": DAG_ID, "from_date": "2026-11-20T00:00:00Z", "to_date": "2026-11-21T00:00:00Z"},
        )
        assert backfill["max_active_runs"] == 10

        def backfill_runs() -> list[dict]:
            runs = services.api("GET", f"dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
            return sorted(runs, key=lambda run: run["logical_date"])

        services._wait(
            lambda: len(backfill_runs()) == 2 and all(r["state"] in ("success", "failed") for r in backfill_runs()),
            "the backfill runs",
            600,
        )
        runs = backfill_runs()
        states = {run["dag_run_id"]: services.task_states(run["dag_run_id"]) for run in runs}
    finally:
        services.stop()

    assert [(run["logical_date"][:10], run["state"]) for run in runs] == [
        ("2026-11-20", "success"),
        ("2026-11-21", "success"),
    ], states
    assert all(set(tasks.values()) == {"success"} for tasks in states.values()), states
    # The two runs were active at once: each started before the other ended.
    first, second = runs
    assert first["start_date"] < second["end_date"]
    assert second["start_date"] < first["end_date"]
    assert sorted(read(spark, tables.target).collect()) == target_before
    assert sorted(read(spark, tables.history).collect()) == history_before
    audit = {row["batch_id"]: row for row in read(spark, tables.audit).collect()}
    replayed = {
        run["logical_date"][:10]: sorted(
            f["uri"].rsplit("/", 1)[1] for f in audit[batch_key(run["dag_run_id"])]["files"]
        )
        for run in runs
    }
    assert replayed == {
        "2026-11-20": sorted(path.name for path in SEED_FILES[:3]),
        "2026-11-21": sorted(path.name for path in SEED_FILES[3:]),
    }
    assert [audit[batch_key(run["dag_run_id"])]["rows_inserted"] for run in runs] == [0, 0]
    assert [audit[batch_key(run["dag_run_id"])]["status"] for run in runs] == ["merged", "merged"]
    assert gcs.names("archive/") == archive_before  # a replay moves nothing
