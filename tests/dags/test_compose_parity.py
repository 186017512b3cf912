"""The compose stack's own parts, run natively (no Docker engine runs here), used as a user uses them.

PostgreSQL is the metadata database of the LocalExecutor; fake-gcs-server, built from the compose file's
tag, is the bucket, preloaded from the compose file's volume; airflow-init's steps run, then api-server,
scheduler, dag-processor and triggerer with the compose file's environment (``compose_stack``). Through
the REST API, as the UI does it:

1. unpausing the DAG starts its scheduled run, which loads the five preloaded seed files;
2. a manual run's sensor defers to the triggerer; a new file arrives; the run loads it, updating a key.

Every task log of both runs is read back through the API: no ERROR record, and the load summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.conftest import SEED_FILES
from tests.dags.compose_stack import ComposeStack, missing_parts, require
from tests.dags.conftest import BUCKET, DAG_ID
from tests.spark_jobs.helpers import read

pytestmark = pytest.mark.e2e

# Not in the compose file, and not about its behaviour: a quicker scheduler and sensor for a test, and a
# schedule whose next tick cannot fall within the test (with the default @hourly, a test that crosses the
# hour gets a second scheduled run, and the manual run queues behind it).
SPEED_UPS = {
    "ORDER_TRACKING_SCHEDULE": "@yearly",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "ORDER_TRACKING_SENSOR_POKE_SECONDS": "2",
    "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "300",
    "ORDER_TRACKING_RETRIES": "0",
}
# A later status for a key of the seed files, arriving after the first load.
LATE_FILE = (
    "order_num,tracking_num,pck_recieved_date,package_deliver_date,status,address,last_update_timestamp\n"
    "9001,{key},2023-01-01,2023-01-09,Delivered,1 Test Street,2023-02-01 09:30:00\n"
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ComposeStack]:
    require(missing_parts(), "the compose stack's parts are")
    stack = ComposeStack(tmp_path, SPEED_UPS)
    try:
        yield stack.start()
    finally:
        stack.stop()


def error_records(stack: ComposeStack, run_id: str) -> dict[str, list[str]]:
    """Per task of a run, the log records at ERROR or above, as the UI shows them."""
    errors = {}
    for task_id in stack.airflow.task_states(run_id):
        records = stack.airflow.task_log(run_id, task_id)
        assert records, f"{task_id} has no log"
        errors[task_id] = [r["event"] for r in records if r.get("level") in ("error", "critical", "fatal")]
    return errors


def test_the_compose_stack_loads_scheduled_and_manual_runs_with_clean_logs(spark, stack):
    airflow = stack.airflow
    assert set(stack.service_commands().values()) >= {"api-server", "scheduler", "dag-processor", "triggerer"}
    bucket = storage.Client(
        project="local", credentials=AnonymousCredentials(), client_options={"api_endpoint": stack.fake_gcs.endpoint}
    ).bucket(BUCKET)
    assert sorted(blob.name for blob in bucket.list_blobs()) == [f"input/{path.name}" for path in SEED_FILES]

    # The compose file's health checks pass against the running parts.
    health = {name: stack.healthcheck(name) for name in ("postgres", "fake-gcs", "airflow-apiserver")}
    assert {name: done.returncode for name, done in health.items()} == dict.fromkeys(health, 0), health

    # 1. Unpausing starts the schedule's latest run, which finds the preloaded files at once.
    airflow.unpause_when_parsed()
    airflow.wait(
        lambda: airflow.api("GET", f"dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})["total_entries"] == 1,
        "the scheduled run",
        120,
    )
    scheduled = airflow.api("GET", f"dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})["dag_runs"][0]
    assert airflow.wait_for_run(scheduled["dag_run_id"]) == "success", airflow.task_states(scheduled["dag_run_id"])
    target = read(spark, str(stack.tables / "orders"))
    assert target.count() == 23
    assert [blob.name for blob in bucket.list_blobs(prefix="input/")] == []
    archived = sorted(blob.name.rsplit("/", 1)[1] for blob in bucket.list_blobs(prefix="archive/"))
    assert archived == [path.name for path in SEED_FILES]
    # From the run to its files without arithmetic: the folder is the date and hour its run id carries.
    run_id = scheduled["dag_run_id"]
    date, hour = run_id.removeprefix("scheduled__")[:13].split("T")
    assert {blob.name.rsplit("/", 1)[0] for blob in bucket.list_blobs(prefix="archive/")} == {
        f"archive/{date}/{hour}/{run_id}"
    }
    after_health = {name: stack.healthcheck(name) for name in ("airflow-scheduler", "airflow-dag-processor")}
    assert {name: done.returncode for name, done in after_health.items()} == dict.fromkeys(after_health, 0), (
        after_health
    )

    # 2. A manual run waits in the triggerer until a file arrives, then loads it.
    key = target.orderBy("tracking_num").first()["tracking_num"]
    manual = airflow.api("POST", f"dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})["dag_run_id"]
    airflow.wait(lambda: airflow.task_state(manual, "wait_for_new_files") == "deferred", "a deferred sensor", 120)
    # Files arrive minutes later in life. Here, let the scheduler first take in the deferring process's exit:
    # when a trigger fires before that, Airflow 3.3 takes the exit for a task changed externally and fails it.
    exited = f"Received executor event with state success for task instance TaskInstanceKey(dag_id='{DAG_ID}', "
    exited += f"task_id='wait_for_new_files', run_id='{manual}'"
    airflow.wait(lambda: exited in (stack.home / "scheduler.log").read_text(), "the deferral's executor event", 60)
    assert stack.healthcheck("airflow-triggerer").returncode == 0
    bucket.blob("input/order_tracking_2023_02_01.csv").upload_from_string(LATE_FILE.format(key=key))
    assert airflow.wait_for_run(manual) == "success", airflow.task_states(manual)
    updated = read(spark, str(stack.tables / "orders")).where(f"tracking_num = '{key}'").first()
    assert (updated["status"], str(updated["last_update_timestamp"])) == ("Delivered", "2023-02-01 09:30:00")
    merged = airflow.api("GET", f"dags/{DAG_ID}/dagRuns/{manual}/taskInstances/merge_orders/xcomEntries/return_value")
    assert '"rows_updated": 1' in str(merged["value"]).replace("'", '"'), merged

    # Task logs as the UI shows them: no ERROR record in a successful task, and the load summary.
    for run_id in (scheduled["dag_run_id"], manual):
        assert error_records(stack, run_id) == {task_id: [] for task_id in airflow.task_states(run_id)}, run_id
    for task_id in ("stage_orders", "merge_orders"):
        events = [record["event"] for record in airflow.task_log(manual, task_id)]
        assert [event for event in events if "Closing down clientserver connection" in event] == [], task_id
    merge_log = [record["event"] for record in airflow.task_log(manual, "merge_orders")]
    summaries = [event for event in merge_log if event.startswith("merge_orders loaded batch")]
    assert len(summaries) == 1, merge_log
    assert "inserted 0, updated 1" in summaries[0], summaries
