"""GCS unreachable while sensing or listing: bounded retries with backoff, a clear error, no manifest."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import pytest

from order_tracking_load import layout, sensing, storage
from tests.conftest import SEED_FILES
from tests.dags.conftest import BUCKET, run_dag, upload_seed

SEED_INPUT = [f"input/{path.name}" for path in SEED_FILES]


@pytest.fixture
def dead_endpoint() -> str:
    """A loopback address where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def outage_settings(pipeline_env, monkeypatch):
    """Each GCS call retries for 2 s; each task gets one Airflow retry."""
    monkeypatch.setenv("ORDER_TRACKING_GCS_RETRY_SECONDS", "2")
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "1")
    monkeypatch.setenv("ORDER_TRACKING_RETRY_DELAY_SECONDS", "1")
    return pipeline_env


def test_gcs_down_while_sensing_fails_the_run_clearly_after_retries(
    airflow_db, gcs, outage_settings, dead_endpoint, monkeypatch, capfd
):
    upload_seed(gcs)
    with monkeypatch.context() as outage:
        outage.setenv("STORAGE_EMULATOR_HOST", dead_endpoint)
        outcome = run_dag()

    assert outcome.tasks["wait_for_new_files"] == "failed"
    assert set(outcome.tasks.values()) - {"failed"} == {"upstream_failed"}
    message = f"GCS unreachable or refusing: could not list gs://{BUCKET}/input/ after retrying for 2 s"
    assert _task_output(capfd).count(message) == 2  # the first try and its retry
    assert gcs.names("manifests/") == []
    assert gcs.names("input/") == SEED_INPUT


def test_gcs_down_while_listing_leaves_no_manifest_and_every_file_in_input(
    airflow_db, gcs, outage_settings, dead_endpoint, monkeypatch, capfd
):
    upload_seed(gcs)
    real_bucket, calls = storage.bucket, []

    def bucket_down_after_sensing(settings):
        calls.append(settings.bucket)
        if len(calls) == 1:  # the sensor's poke sees the files
            return real_bucket(settings)
        with monkeypatch.context() as outage:
            outage.setenv("STORAGE_EMULATOR_HOST", dead_endpoint)
            return real_bucket(settings)

    monkeypatch.setattr(storage, "bucket", bucket_down_after_sensing)
    outcome = run_dag()

    assert outcome.tasks["wait_for_new_files"] == "success"
    assert outcome.tasks["list_new_files"] == "failed"
    assert {outcome.tasks[t] for t in ("stage_orders", "merge_orders", "archive_loaded_files")} == {"upstream_failed"}
    # The listing task's first call reads the run's manifest of an earlier try, if any.
    manifest = f"gs://{BUCKET}/manifests/{layout.batch_key(outcome.run_id)}.json"
    assert _task_output(capfd).count(f"could not read {manifest} after retrying for 2 s") == 2
    assert gcs.names("manifests/") == []
    assert gcs.names("input/") == SEED_INPUT
    assert not (outage_settings / "orders").exists()


def test_the_deferred_trigger_reports_an_outage_as_an_error_event(dead_endpoint, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", dead_endpoint)
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true, "project": "test"}}',
    )
    trigger = sensing.NewFilesTrigger(
        bucket=BUCKET,
        prefix="input/",
        poke_interval=1,
        google_cloud_conn_id="google_cloud_default",
        hook_params={},
        deadline=time.time() + 60,
    )

    async def first_event():
        return await asyncio.wait_for(anext(trigger.run()), timeout=120)

    event = asyncio.run(first_event())
    assert event.payload["status"] == "error"
    assert event.payload["message"].startswith(f"listing gs://{BUCKET}/input/ failed: ")


def _task_output(capfd: pytest.CaptureFixture) -> str:
    """What the tasks printed (the task runner logs a failure's exception to the console)."""
    out, err = capfd.readouterr()
    return out + err


def test_each_gcs_call_backs_off_exponentially_for_the_configured_time_then_fails_clearly(pipeline_env, monkeypatch):
    """Measured, not read from the setting: how many attempts one listing makes, and when."""
    import http.server
    import threading

    from airflow.providers.common.compat.sdk import AirflowException

    from order_tracking_load.settings import load_settings

    attempts: list[float] = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if "/o?" in self.path:  # a listing request (the client also reads the bucket's metadata)
                attempts.append(time.monotonic())
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"code": 503, "message": "injected: backend unavailable"}}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ORDER_TRACKING_GCS_RETRY_SECONDS", "6")
    try:
        began = time.monotonic()
        with pytest.raises(AirflowException, match=r"could not list gs://order-tracking/input/ after retrying for 6 s"):
            storage.list_objects(load_settings(), "input/")
        elapsed = time.monotonic() - began
    finally:
        server.shutdown()

    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # google-api-core's truncated exponential backoff: each sleep drawn from [0, 1 s], [0, 2 s], [0, 4 s] ...
    # until the next would pass the 6 s budget.
    assert len(attempts) >= 3, gaps
    assert sum(gaps) > 0.1, gaps  # it waited between attempts
    assert elapsed <= 6 + 1, (elapsed, gaps)  # and gave up within the budget
