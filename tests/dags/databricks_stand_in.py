"""A loopback stand-in of the Databricks Jobs API (2.x runs endpoints): the only fake in the test suite.

It records every ``runs/submit`` payload, honours idempotency tokens as Databricks does (the same token
returns the same run), reports RUNNING once so the operator defers, and ends each run in a scripted
state. A run scripted to succeed really executes: the stand-in calls the spec's wheel entry point with
its named parameters, as a Databricks python_wheel_task would (the local backend's own executor), and
serves the printed output as the task's ``logs``.

Besides the end states, a script may say ``RESULT_FAILED`` (the run ends SUCCESS, but the job prints
a failed result) or ``UNREACHABLE`` (the run succeeds, but ``runs/get`` answers 503 to its first
``unreachable_gets`` calls, as in an API outage while the run goes on). ``throttle_submits`` answers
that many next ``runs/submit`` calls with 429 before accepting one.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from order_tracking_load.spark_backends import run_entry_point

TERMINAL_STATES = {
    "SUCCESS": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS", "state_message": ""},
    "FAILED": {"life_cycle_state": "TERMINATED", "result_state": "FAILED", "state_message": "Task failed"},
    "CANCELED": {"life_cycle_state": "TERMINATED", "result_state": "CANCELED", "state_message": "Run cancelled"},
    "INTERNAL_ERROR": {
        "life_cycle_state": "INTERNAL_ERROR",
        "result_state": "FAILED",
        "state_message": "Cluster terminated unexpectedly",
    },
}
RUNNING = {"life_cycle_state": "RUNNING", "state_message": "In run"}


class JobsApiStandIn:
    """The stand-in server; ``script[task_key]`` lists the end states of that task's next runs."""

    def __init__(self) -> None:
        self.submissions: list[dict] = []
        self.runs: dict[int, dict] = {}
        self.tokens: dict[str, int] = {}
        self.cancelled: list[int] = []
        self.authorizations: set[str] = set()  # Authorization headers received
        self.script: dict[str, list[str]] = defaultdict(list)
        self.throttle_submits = 0
        self.throttled = 0  # runs/submit calls answered 429
        self.unreachable_gets = 3
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JobsApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def connection_json(self, token: str = "dapi-stand-in-token") -> str:
        """An Airflow connection (JSON form) pointing the Databricks hook at this server over http."""
        return json.dumps(
            {"conn_type": "databricks", "host": "127.0.0.1", "port": self.port, "schema": "http", "password": token}
        )

    def submitted(self, task_key: str) -> list[dict]:
        """The payloads submitted for one task key, in order."""
        return [payload for payload in self.submissions if payload["tasks"][0]["task_key"] == task_key]

    def _submit(self, payload: dict) -> dict:
        with self._lock:
            self.submissions.append(payload)
            token = payload.get("idempotency_token")
            if token in self.tokens:
                return {"run_id": self.tokens[token]}
            run_id = len(self.runs) + 1
            if token:
                self.tokens[token] = run_id
            task_key = payload["tasks"][0]["task_key"]
            outcome = self.script[task_key].pop(0) if self.script[task_key] else "SUCCESS"
            self.runs[run_id] = {
                "task_key": task_key,
                "outcome": "SUCCESS" if outcome in ("UNREACHABLE", "RESULT_FAILED") else outcome,
                "polls": 0,
                "logs": "",
                "error": None,
                "unreachable": self.unreachable_gets if outcome == "UNREACHABLE" else 0,
            }
        run = self.runs[run_id]
        if outcome == "RESULT_FAILED":
            run["logs"] = json.dumps({"result": "failed", "error": "injected: the job reports a failure"}) + "\n"
        elif run["outcome"] == "SUCCESS":
            code, logs = run_entry_point(payload)
            run["logs"] = logs
            if code != 0:
                run["outcome"] = "FAILED"
                run["error"] = logs.strip().splitlines()[-1] if logs.strip() else "job failed"
        return {"run_id": run_id}

    def _throttle(self) -> bool:
        with self._lock:
            if self.throttle_submits:
                self.throttle_submits -= 1
                self.throttled += 1
                return True
        return False

    def _unreachable(self, run_id: int) -> bool:
        with self._lock:
            run = self.runs.get(run_id)
            if run and run["unreachable"]:
                run["unreachable"] -= 1
                return True
        return False

    def _run_json(self, run_id: int) -> dict:
        run = self.runs[run_id]
        run["polls"] += 1
        state = RUNNING if run["polls"] == 1 else TERMINAL_STATES[run["outcome"]]
        task_state = dict(state)
        return {
            "job_id": 1000 + run_id,
            "run_id": run_id,
            "run_page_url": f"http://127.0.0.1:{self.port}/#job/{1000 + run_id}/run/{run_id}",
            "state": state,
            "tasks": [{"run_id": 100 * run_id, "task_key": run["task_key"], "state": task_state, "attempt_number": 0}],
        }

    def _output_json(self, task_run_id: int) -> dict:
        run = self.runs[task_run_id // 100]
        output = {"logs": run["logs"], "metadata": {"run_id": task_run_id}}
        if run["outcome"] != "SUCCESS":
            output["error"] = run["error"] or TERMINAL_STATES[run["outcome"]]["state_message"]
        return output

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output readable
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[str, dict]:
                stand_in.authorizations.add(self.headers.get("Authorization", ""))
                url = urlparse(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    query.update(json.loads(self.rfile.read(length)))
                return url.path.split("/jobs/", 1)[-1], query

            def do_GET(self) -> None:
                endpoint, query = self._route()
                run_id = int(query.get("run_id", 0))
                if endpoint == "runs/get" and stand_in._unreachable(run_id):
                    self._reply(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected outage"})
                elif endpoint == "runs/get" and run_id in stand_in.runs:
                    self._reply(200, stand_in._run_json(run_id))
                elif endpoint == "runs/get-output" and run_id // 100 in stand_in.runs:
                    self._reply(200, stand_in._output_json(run_id))
                else:
                    self._reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": self.path})

            def do_POST(self) -> None:
                endpoint, body = self._route()
                if endpoint == "runs/submit" and stand_in._throttle():
                    self._reply(429, {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "injected rate limit"})
                elif endpoint == "runs/submit":
                    self._reply(200, stand_in._submit(body))
                elif endpoint == "runs/cancel":
                    stand_in.cancelled.append(int(body["run_id"]))
                    self._reply(200, {})
                else:
                    self._reply(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": self.path})

        return Handler
