"""A loopback stand-in of the Databricks REST API: the only fake in the test suite.

It refuses what Databricks refuses: every request body is checked against the Databricks SDK's own
types (``tests.dags.databricks_api``), and a body with an unknown, deprecated or mistyped field, or
without a required one, gets a 400 as a malformed request does. It honours idempotency tokens as
Databricks does (the same token returns the same run).

A run scripted to succeed really runs, in the background, while the operator polls it: the stand-in
calls the spec's wheel entry point with its named parameters, as a Databricks python_wheel_task would,
and serves what it printed as the task's ``logs``. With ``jobs``, it calls those entry points instead
(``tests.dags.stub_jobs``: the real result line without Spark). ``runs/get`` reports PENDING, then RUNNING until
the job returns, then TERMINATED.

``script[task_key]`` lists the end states of that task's next runs: ``SUCCESS``, ``FAILED``, ``CANCELED``,
``INTERNAL_ERROR``, or
- ``RESULT_FAILED``: the run ends SUCCESS, but the job prints a failed result;
- ``UNREACHABLE``: the run goes on, but ``runs/get`` answers 503 to its first ``unreachable_gets`` calls,
  and RUNNING to the first call after them (however soon its job returned);
- ``GONE``: as UNREACHABLE, then the run no longer exists (``runs/get`` answers ``gone_status``: 400
  "Run … does not exist", or 404);
- ``EMPTY_LOGS``: the run succeeds, but ``runs/get-output`` returns no logs;
- ``LONG``: the run stays RUNNING until it is cancelled, then ends CANCELED.
``throttle_submits`` answers that many next ``runs/submit`` calls with 429 before accepting one.

With ``tls=True`` it serves HTTPS with a certificate made for 127.0.0.1 (``ca_file``), and the OAuth
machine-to-machine token endpoint ``/oidc/v1/token``: a service principal's client id and secret get
an access token, which every later call must carry. It also serves the Files API and the Unity Catalog
schema and volume endpoints that ``make deploy`` uses.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import io
import json
import secrets
import ssl
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from databricks.sdk.service.catalog import SchemasAPI, VolumesAPI
from databricks.sdk.service.jobs import JobsAPI

from order_tracking_load.spark_backends import entry_point
from tests.dags.databricks_api import refusals, submit_cross_field_refusals

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
PENDING = {"life_cycle_state": "PENDING", "state_message": "Waiting for compute"}
RUNNING = {"life_cycle_state": "RUNNING", "state_message": "In run"}
_SUCCEEDING = ("SUCCESS", "UNREACHABLE", "GONE", "EMPTY_LOGS", "NO_OUTPUT")


class _ThreadOutput(io.TextIOBase):
    """``sys.stdout`` while runs go on: what a run's thread prints goes to its own buffer, the rest through."""

    def __init__(self, through) -> None:
        self.through = through
        self.buffers: dict[int, io.StringIO] = {}

    def write(self, text: str) -> int:
        buffer = self.buffers.get(threading.get_ident())
        return (buffer or self.through).write(text)

    def flush(self) -> None:
        self.through.flush()


def _check_package(wheel_task: dict) -> None:
    """Fail as Databricks does when the wheel task's package is not the installed wheel's, or lacks the entry point."""
    try:
        entry_points = {
            point.name for point in importlib.metadata.distribution(wheel_task["package_name"]).entry_points
        }
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"package {wheel_task['package_name']!r} is not installed on the compute") from None
    if wheel_task["entry_point"] not in entry_points:
        raise RuntimeError(f"package {wheel_task['package_name']!r} has no entry point {wheel_task['entry_point']!r}")


class JobsApiStandIn:
    """The stand-in server; ``script[task_key]`` lists the end states of that task's next runs."""

    def __init__(self, tls: bool = False, jobs: dict[str, Callable[[list[str]], int]] | None = None) -> None:
        # The entry points runs call instead of the wheel's, by name (``tests.dags.stub_jobs``); the rest real.
        self.jobs = jobs or {}
        self.submissions: list[dict] = []
        self.refused: list[list[str]] = []  # what each refused request body got wrong
        self.runs: dict[int, dict] = {}
        self.tokens: dict[str, int] = {}
        self.cancelled: list[int] = []
        self.authorizations: set[str] = set()  # Authorization headers received
        self.script: dict[str, list[str]] = defaultdict(list)
        # A job of another version: its result line, as a dict, rewritten by task key (fields added or dropped).
        self.versions: dict[str, Callable[[dict], dict]] = {}
        self.throttle_submits = 0
        self.throttled = 0  # runs/submit calls answered 429
        self.unreachable_gets = 3
        self.gone_status = 400
        self.get_answers: list[tuple[int, int]] = []  # (run id, status) of every runs/get
        self.files: dict[str, bytes] = {}  # the Files API's volume files, by path
        self.schemas: set[str] = set()
        self.volumes: set[str] = set()
        self.service_principal = ("sp-client-id", "sp-client-secret")
        self.access_tokens: set[str] = set()
        self._lock = threading.Lock()
        self._output = _ThreadOutput(sys.stdout)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.tls = tls
        self.ca_file: str | None = None
        if tls:
            self.ca_file = self._serve_tls()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JobsApiStandIn:
        self._stdout = sys.stdout
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        for run in self.runs.values():
            if run.get("thread"):
                run["thread"].join(timeout=600)
        if sys.stdout is self._output:
            sys.stdout = self._stdout

    @property
    def host(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def connection_json(self, token: str = "dapi-stand-in-token", **extra: object) -> str:
        """An Airflow connection (JSON form) pointing the Databricks hook at this server."""
        connection = {"conn_type": "databricks", "host": "127.0.0.1", "port": self.port, "schema": "http"}
        if self.tls:
            # As a workspace is named: an https host, here with its port (the OAuth token URL takes the host alone).
            connection = {"conn_type": "databricks", "host": f"127.0.0.1:{self.port}"}
        if extra.get("service_principal_oauth"):
            connection["login"], connection["password"] = self.service_principal
        else:
            connection["password"] = token
        if extra:
            connection["extra"] = extra
        return json.dumps(connection)

    def settings(self, schema: str, connection: str | None = None) -> dict[str, str]:
        """The pipeline's settings for the Databricks backend against this server (``connection``: another
        connection JSON than the default token's), its tables named in ``schema``."""
        return {
            "ORDER_TRACKING_SPARK_BACKEND": "databricks",
            "ORDER_TRACKING_TABLE_NAMESPACE": schema,
            "ORDER_TRACKING_DATABRICKS_POLL_SECONDS": "1",
            "AIRFLOW_CONN_DATABRICKS_DEFAULT": connection or self.connection_json(),
        }

    def submitted(self, task_key: str) -> list[dict]:
        """The payloads submitted for one task key, in order."""
        return [payload for payload in self.submissions if payload["tasks"][0]["task_key"] == task_key]

    def wait_for_runs(self) -> None:
        """Wait until every run's job has returned."""
        for run in list(self.runs.values()):
            if run.get("thread"):
                run["thread"].join(timeout=600)

    # --- runs -----------------------------------------------------------------------------------------

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
            run = {
                "id": run_id,
                "task_key": task_key,
                "outcome": outcome,
                "end": "SUCCESS" if outcome in (*_SUCCEEDING, "RESULT_FAILED") else outcome,
                "polls": 0,
                "logs": "",
                "error": None,
                "unreachable": self.unreachable_gets if outcome in ("UNREACHABLE", "GONE") else 0,
                "thread": None,
                "started": None,
                "submitted_ms": int(time.time() * 1000),
            }
            self.runs[run_id] = run
        if outcome == "RESULT_FAILED":
            run["logs"] = json.dumps({"result": "failed", "error": "injected: the job reports a failure"}) + "\n"
        elif outcome in _SUCCEEDING:
            run["thread"] = threading.Thread(target=self._execute, args=(run, payload), daemon=True)
            run["thread"].start()
        return {"run_id": run_id}

    def _execute(self, run: dict, payload: dict) -> None:
        """The run itself: the wheel's entry point with the spec's named parameters, its stdout kept."""
        run["started"] = time.monotonic()
        with self._lock:  # Airflow's task runner swaps sys.stdout as tasks start: take it back for the run
            if sys.stdout is not self._output:
                self._output.through, sys.stdout = sys.stdout, self._output
        printed = self._output.buffers[threading.get_ident()] = io.StringIO()
        # The run's error is the exception that ended the entry point, as Databricks reports a task's: its
        # type and message (a job's own failure exits with its result line as the message).
        error = None
        try:
            wheel_task = payload["tasks"][0]["python_wheel_task"]
            _check_package(wheel_task)
            main, argv = entry_point(payload)
            self.jobs.get(wheel_task["entry_point"], main)(argv)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                error = f"SystemExit: {exit_.code}"
        except Exception as raised:  # noqa: BLE001 - the run fails, as a task whose code raised
            error = f"{type(raised).__name__}: {raised}"
            print(error)
        finally:
            del self._output.buffers[threading.get_ident()]
        logs = printed.getvalue()
        if run["task_key"] in self.versions and logs.strip():
            *printed_before, line = logs.strip().splitlines()
            logs = "\n".join([*printed_before, json.dumps(self.versions[run["task_key"]](json.loads(line)))]) + "\n"
        # EMPTY_LOGS: runs/get-output's logs come back empty (cut, or lost), whatever the run's end; NO_OUTPUT:
        # its error says nothing of the job's either.
        run["logs"] = "" if run["outcome"] in ("EMPTY_LOGS", "NO_OUTPUT") else logs
        if error is not None:
            run["end"] = "FAILED"
            run["error"] = "Workload failed, see run output for details" if run["outcome"] == "NO_OUTPUT" else error

    def _state(self, run: dict) -> dict:
        run["polls"] += 1
        if run["outcome"] == "LONG":
            return TERMINAL_STATES["CANCELED"] if run["id"] in self.cancelled else RUNNING
        if run["outcome"] == "UNREACHABLE" and not run["unreachable"] and not run.get("seen_after_outage"):
            run["seen_after_outage"] = True  # the first answer after the outage: the run went on meanwhile
            return RUNNING
        if run["thread"] is not None:
            if run["started"] is None:
                return PENDING
            return RUNNING if run["thread"].is_alive() else TERMINAL_STATES[run["end"]]
        return RUNNING if run["polls"] == 1 else TERMINAL_STATES[run["end"]]

    def _run_json(self, run_id: int) -> dict:
        run = self.runs[run_id]
        state = self._state(run)
        return {
            "job_id": 1000 + run_id,
            "run_id": run_id,
            "run_page_url": f"{self.host}/#job/{1000 + run_id}/run/{run_id}",
            "state": state,
            "run_duration": 1500,
            "start_time": run["submitted_ms"],
            "tasks": [{"run_id": 100 * run_id, "task_key": run["task_key"], "state": dict(state), "attempt_number": 0}],
        }

    def _output_json(self, task_run_id: int) -> dict:
        run = self.runs[task_run_id // 100]
        output = {"logs": run["logs"], "logs_truncated": False, "metadata": {"run_id": task_run_id}}
        if run["end"] != "SUCCESS":
            output["error"] = run["error"] or TERMINAL_STATES[run["end"]]["state_message"]
        return output

    def _get_run(self, run_id: int) -> tuple[int, dict]:
        with self._lock:
            run = self.runs.get(run_id)
            if run is None:
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Run {run_id} does not exist."}
            if run["unreachable"]:
                run["unreachable"] -= 1
                return 503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected outage"}
            if run["outcome"] == "GONE":
                if self.gone_status == 404:
                    return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run {run_id} not found"}
                return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Run {run_id} does not exist."}
        return 200, self._run_json(run_id)

    def _throttle(self) -> bool:
        with self._lock:
            if self.throttle_submits:
                self.throttle_submits -= 1
                self.throttled += 1
                return True
        return False

    # --- TLS and OAuth --------------------------------------------------------------------------------

    def _serve_tls(self) -> str:
        """Wrap the server in TLS with a new certificate for 127.0.0.1; returns the CA file to trust."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        import ipaddress

        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        folder = Path(tempfile.mkdtemp(prefix="stand-in-tls-"))
        (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        # The hook's async client (the deferred task's trigger) verifies with aiohttp's default context, made
        # when aiohttp was imported: trust the certificate there too (REQUESTS_CA_BUNDLE serves requests).
        import aiohttp.connector

        aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(folder / "cert.pem")
        return str(folder / "cert.pem")

    def _oauth_token(self, authorization: str, form: dict) -> tuple[int, dict]:
        import base64

        expected = "Basic " + base64.b64encode(":".join(self.service_principal).encode()).decode()
        if authorization != expected or form.get("grant_type") != "client_credentials":
            return 401, {"error": "invalid_client", "error_description": "unknown client or secret"}
        token = "oauth-" + secrets.token_hex(8)
        self.access_tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"}

    def _authorized(self, authorization: str) -> bool:
        """With OAuth in use, only a token this server issued; otherwise any bearer token."""
        if self.access_tokens:
            return authorization.removeprefix("Bearer ") in self.access_tokens
        return authorization.startswith("Bearer ")

    # --- HTTP -----------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output readable
                pass

            def _reply(self, status: int, body: dict | bytes | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _authorize(self) -> bool:
                authorization = self.headers.get("Authorization", "")
                stand_in.authorizations.add(authorization)
                if not stand_in._authorized(authorization):
                    self._reply(401, {"error_code": "UNAUTHENTICATED", "message": "invalid access token"})
                    return False
                return True

            def _query(self) -> tuple[str, dict]:
                url = urlparse(self.path)
                return unquote(url.path), {key: values[0] for key, values in parse_qs(url.query).items()}

            def do_GET(self) -> None:
                if not self._authorize():
                    return
                path, query = self._query()
                body = self._body()
                if body:
                    query.update(json.loads(body))
                run_id = int(query.get("run_id", 0))
                if path.endswith("/jobs/runs/get"):
                    status, answer = stand_in._get_run(run_id)
                    stand_in.get_answers.append((run_id, status))
                    self._reply(status, answer)
                elif path.endswith("/jobs/runs/get-output") and run_id // 100 in stand_in.runs:
                    self._reply(200, stand_in._output_json(run_id))
                elif path.endswith("/jobs/runs/get-output") and run_id in stand_in.runs:  # a parent run: as Databricks
                    message = (
                        "Retrieving the output of runs with multiple tasks is not supported. Please retrieve the "
                        "output of each individual task run instead."
                    )
                    self._reply(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": message})
                elif path.startswith("/api/2.1/unity-catalog/schemas/"):
                    found = path.rsplit("/", 1)[1] in stand_in.schemas
                    self._reply(200 if found else 404, {"full_name": path.rsplit("/", 1)[1]} if found else None)
                elif path.startswith("/api/2.1/unity-catalog/volumes/"):
                    found = path.rsplit("/", 1)[1] in stand_in.volumes
                    self._reply(200 if found else 404, {"full_name": path.rsplit("/", 1)[1]} if found else None)
                elif path.startswith("/api/2.0/fs/files/") and path[len("/api/2.0/fs/files") :] in stand_in.files:
                    self._reply(200, stand_in.files[path[len("/api/2.0/fs/files") :]])
                else:
                    self._reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": self.path})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_PUT(self) -> None:
                if not self._authorize():
                    return
                path, query = self._query()
                file_path = path[len("/api/2.0/fs/files") :]
                if path.startswith("/api/2.0/fs/files/Volumes/") and (
                    file_path in stand_in.files and query.get("overwrite") != "true"
                ):
                    self._reply(409, {"error_code": "ALREADY_EXISTS", "message": f"{file_path} exists"})
                elif path.startswith("/api/2.0/fs/files/Volumes/"):
                    stand_in.files[file_path] = self._body()
                    self._reply(204, b"")
                elif path.startswith("/api/2.0/fs/directories/"):
                    self._reply(204, b"")
                else:
                    self._reply(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": self.path})

            def do_POST(self) -> None:
                path, _ = self._query()
                if path == "/oidc/v1/token":
                    form = {key: values[0] for key, values in parse_qs(self._body().decode()).items()}
                    self._reply(*stand_in._oauth_token(self.headers.get("Authorization", ""), form))
                    return
                if not self._authorize():
                    return
                body = json.loads(self._body() or b"{}")
                checked = {
                    "/jobs/runs/submit": JobsAPI.submit,
                    "/jobs/runs/cancel": JobsAPI.cancel_run,
                    "/unity-catalog/schemas": SchemasAPI.create,
                    "/unity-catalog/volumes": VolumesAPI.create,
                }
                method = next((m for suffix, m in checked.items() if path.endswith(suffix)), None)
                errors = refusals(method, body) if method else []
                if path.endswith("/jobs/runs/submit"):
                    errors += submit_cross_field_refusals(body)
                if errors:
                    stand_in.refused.append(errors)
                    self._reply(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "; ".join(errors)})
                elif path.endswith("/jobs/runs/submit") and stand_in._throttle():
                    self._reply(429, {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "injected rate limit"})
                elif path.endswith("/jobs/runs/submit"):
                    self._reply(200, stand_in._submit(body))
                elif path.endswith("/jobs/runs/cancel"):
                    stand_in.cancelled.append(int(body["run_id"]))
                    self._reply(200, {})
                elif path.endswith("/unity-catalog/schemas"):
                    stand_in.schemas.add(f"{body['catalog_name']}.{body['name']}")
                    self._reply(200, {"full_name": f"{body['catalog_name']}.{body['name']}"})
                elif path.endswith("/unity-catalog/volumes"):
                    full_name = f"{body['catalog_name']}.{body['schema_name']}.{body['name']}"
                    stand_in.volumes.add(full_name)
                    self._reply(200, {"full_name": full_name})
                else:
                    self._reply(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": self.path})

        return Handler
