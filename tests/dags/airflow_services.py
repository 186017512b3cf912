"""Airflow's own services as real processes on loopback, and an authenticated REST client.

api-server, scheduler, dag-processor and triggerer run with their own AIRFLOW_HOME; the environment
decides the rest (metadata database, executor, auth manager). Used by the REST, backfill and compose
parity tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from tests.dags.conftest import DAG_ID

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
# No log server on 0.0.0.0:8793/8794: the api-server reads task logs from the shared AIRFLOW_HOME, and two
# test runs at once cannot collide on those ports.
SERVICE_ARGUMENTS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


class AirflowServices:
    """The four services, started after ``init`` commands (``airflow db migrate`` by default)."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str],
        port: int,
        credentials: tuple[str, str],
        init: Sequence[Sequence[str]] = (("db", "migrate"),),
    ) -> None:
        self.home = home
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env, "AIRFLOW_HOME": str(home)}
        self.credentials = credentials
        self.init = init
        self.processes: list[subprocess.Popen] = []
        self.session = requests.Session()

    def start(self) -> AirflowServices:
        self.home.mkdir(parents=True, exist_ok=True)
        for command in self.init:
            done = subprocess.run([AIRFLOW, *command], env=self.env, capture_output=True, text=True)
            assert done.returncode == 0, f"airflow {' '.join(command)} failed: {done.stderr[-3000:]}"
        for service in SERVICES:
            log = (self.home / f"{service}.log").open("w")
            command = [AIRFLOW, service, *SERVICE_ARGUMENTS.get(service, [])]
            if service == "api-server":
                command += ["--port", str(self.port)]
            self.processes.append(
                subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
        self.wait(lambda: requests.get(f"{self.base}/api/v2/monitor/health", timeout=5).ok, "the api-server", 120)
        username, password = self.credentials
        token = requests.post(f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=10)
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

    def wait(self, ready: Callable[[], bool], what: str, seconds: float) -> None:
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

    def run_state(self, run_id: str) -> str:
        return self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, run_id: str, seconds: float = 600) -> str:
        self.wait(lambda: self.run_state(run_id) in ("success", "failed"), f"DAG run {run_id}", seconds)
        return self.run_state(run_id)

    def task_state(self, run_id: str, task_id: str) -> str | None:
        return self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")["state"]

    def task_states(self, run_id: str) -> dict[str, str]:
        listed = self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in listed}

    def task_log(self, run_id: str, task_id: str, try_number: int = 1) -> list[dict]:
        """A task try's log records, as the UI shows them (each with ``event`` and ``level``)."""
        path = f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        response = self.session.get(
            f"{self.base}/api/v2/{path}", params={"full_content": "true"}, headers={"Accept": "application/json"}
        )
        response.raise_for_status()
        return [record for record in response.json()["content"] if isinstance(record, dict)]

    def unpause_when_parsed(self) -> None:
        self.wait(lambda: self.api("GET", f"dags/{DAG_ID}")["dag_id"] == DAG_ID, "the DAG", 180)
        self.api("PATCH", f"dags/{DAG_ID}", json={"is_paused": False})
