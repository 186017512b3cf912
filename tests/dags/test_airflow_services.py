"""Airflow's own services on loopback (PostgreSQL metadata DB): a backfill created through the REST API.

api-server, scheduler (LocalExecutor), dag-processor and triggerer run as real processes; the tasks run
the Databricks operators against the stand-in: the backfill's runs run the real jobs, the Clear's the stub
jobs. A run triggered through the REST API, with the compose file's own parts and the local backend, is
``test_compose_parity.py``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import SEED_FILES, free_port
from tests.dags.airflow_services import AirflowServices
from tests.dags.compose_stack import PostgresServer, compose_file, missing_postgres, require
from tests.dags.conftest import DAG_ID, GCP_CONNECTION, upload_seed
from tests.dags.databricks_stand_in import JobsApiStandIn
from tests.dags.stub_jobs import StubJobs

pytestmark = pytest.mark.e2e


def postgres_services(
    postgres: PostgresServer, home: Path, tables: Path, settings: dict[str, str] | None = None
) -> AirflowServices:
    """The services on the compose file's PostgreSQL metadata DB, with the simple auth manager and the local backend.

    Not SQLite: Airflow's api-server answers a backfill request with 503 when the scheduler holds SQLite's
    lock ("Backfill creation is not supported on SQLite under concurrent access").
    """
    port = free_port()
    passwords = home / "passwords.json"
    home.mkdir(parents=True)
    passwords.write_text('{"admin": "e2e-admin-password"}')
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg2://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/{postgres.database}"
        ),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-only-jwt-secret-not-used-anywhere-else",
        "AIRFLOW__API__HOST": "127.0.0.1",
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
    return AirflowServices(home, env, port, ("admin", "e2e-admin-password"))


def dialog_payload(from_date: str, to_date: str, conf: dict | None, max_active_runs: int) -> dict:
    """What Airflow 3.3's Backfill dialog posts: ``dag_run_conf`` is its Run Parameters only when
    "Override parameters on existing runs" is ticked, else null (apache/airflow#64939)."""
    return {
        "dag_id": DAG_ID,
        "dag_run_conf": conf,
        "from_date": from_date,
        "max_active_runs": max_active_runs,
        "reprocess_behavior": "none",
        "run_backwards": False,
        "run_on_latest_version": True,
        "to_date": to_date,
    }


def last_visible_line(records: list[dict]) -> str:
    """The last line of a task log above Airflow's collapsed "Post Execute" group."""
    events = [record.get("event", "") for record in records]
    return events[events.index("::group::Post Execute") - 1]


def test_backfills_from_the_dialog_keep_their_parameters_run_at_once_and_replay_each_file_once(spark, gcs, tmp_path):
    """Two backfills, posted as the UI's Backfill dialog posts them.

    - Unticked override (the dialog's default) over a date with nothing archived: Airflow gives the runs
      none of the dialog's parameters, and the run is skipped with its reason as the log's last line.
    - Ticked override, Max Active Runs typed 10: the parameters reach each run's tasks, two runs go at
      once, each replays its own archive hours once, and nothing in the target moves.

    The real jobs run as Databricks runs of the stand-in, in this process's warm Spark session (a task
    process of the local backend starts a JVM of its own: the compose parity test runs that path).
    """
    from order_tracking_load.layout import batch_key
    from order_tracking_load.settings import TABLE_NAMES, Tables
    from tests.spark_jobs.helpers import load_batch

    schema = f"spark_catalog.order_tracking_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE SCHEMA {schema}")
    tables = Tables(**{role: f"{schema}.{name}" for role, name in TABLE_NAMES.items()})
    # The archive as two earlier days' runs left it, and their loads in the tables.
    earlier = {"2026-11-20/10/scheduled_a": SEED_FILES[:3], "2026-11-21/10/scheduled_b": SEED_FILES[3:]}
    for folder, files in earlier.items():
        upload_seed(gcs, files, prefix=f"archive/{folder}/")
        load_batch(spark, tables, files, folder.rsplit("/", 1)[1])
    target_before = sorted(spark.table(tables.target).collect())
    history_before = sorted(spark.table(tables.history).collect())
    archive_before = gcs.names("archive/")
    conf = {"max_reject_fraction": 0.5, "replay_date": None}

    require(missing_postgres(), "Airflow's backfill database is")
    postgres = PostgresServer(compose_file()["services"]["postgres"], free_port()).start()
    with JobsApiStandIn() as databricks:
        services = postgres_services(
            postgres,
            tmp_path / "airflow-home",
            tmp_path / "tables",
            {
                "ORDER_TRACKING_SCHEDULE": "@daily",
                "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "5",
                **databricks.settings(schema),
            },
        )

        def backfill_runs(*dates: str) -> list[dict]:
            """The backfill runs of these logical dates (the API does not say which backfill made a run)."""
            runs = services.api("GET", f"dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
            of_dates = (run for run in runs if run["logical_date"][:10] in dates)
            return sorted(of_dates, key=lambda run: run["logical_date"])

        def finished(*dates: str) -> bool:
            runs = backfill_runs(*dates)
            return len(runs) == len(dates) and all(run["state"] in ("success", "failed") for run in runs)

        try:
            services.start()
            services.unpause_when_parsed()
            # The trigger refuses a reject limit outside 0 to 1, with the reason (the form no longer clamps it).
            refused = services.session.post(
                f"{services.base}/api/v2/dags/{DAG_ID}/dagRuns",
                json={"logical_date": None, "conf": {"max_reject_fraction": 10}},
                timeout=30,
            )
            unticked = services.api(
                "POST", "backfills", json=dialog_payload("2026-11-18T00:00:00Z", "2026-11-18T00:00:00Z", None, 1)
            )
            services.wait(lambda: finished("2026-11-18"), "the unticked backfill", 300)
            [skipped_run] = backfill_runs("2026-11-18")
            skipped_states = services.task_states(skipped_run["dag_run_id"])
            skipped_log = services.task_log(skipped_run["dag_run_id"], "wait_for_new_files")
            # One backfill at a time per DAG: the scheduler marks this one complete after its runs end.
            completed = lambda: services.api("GET", f"backfills/{unticked['id']}")["completed_at"] is not None  # noqa: E731
            services.wait(completed, "the unticked backfill's completion", 120)

            ticked = services.api(
                "POST", "backfills", json=dialog_payload("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", conf, 10)
            )
            services.wait(lambda: finished("2026-11-20", "2026-11-21"), "the ticked backfill", 600)
            runs = backfill_runs("2026-11-20", "2026-11-21")
            states = {run["dag_run_id"]: services.task_states(run["dag_run_id"]) for run in runs}
            stage_specs = [
                services.api("GET", f"dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/stage_orders")[
                    "rendered_fields"
                ]["json"]
                for run in runs
            ]
        finally:
            services.stop()
            postgres.stop()

    assert (refused.status_code, "10 is greater than the maximum of 1" in refused.text) == (400, True), refused.text
    # Unticked: stored as null, and the run gets none of the dialog's parameters (Airflow's; the workaround
    # in docs/OPERATIONS.md is to tick). When this fails, Airflow has fixed it, and that note can go.
    assert (unticked["dag_run_conf"], skipped_run["conf"]) == (None, {})
    assert skipped_states["wait_for_new_files"] == "skipped"
    assert last_visible_line(skipped_log) == (
        "skipped: nothing to replay: no archived files in gs://order-tracking/archive/<date>/<hour>/ "
        "from 2026-11-18/01 to 2026-11-19/00"
    )
    # Ticked: stored with the backfill, given to each run, rendered into the stage job's arguments.
    assert (ticked["dag_run_conf"], ticked["max_active_runs"]) == (conf, 10)
    assert [run["conf"] for run in runs] == [conf, conf]
    limits = [spec["tasks"][0]["python_wheel_task"]["named_parameters"]["max-reject-fraction"] for spec in stage_specs]
    assert limits == ["0.5", "0.5"]
    assert [(run["logical_date"][:10], run["state"]) for run in runs] == [
        ("2026-11-20", "success"),
        ("2026-11-21", "success"),
    ], states
    assert all(set(tasks.values()) == {"success"} for tasks in states.values()), states
    # The two runs were active at once: each started before the other ended.
    first, second = runs
    assert first["start_date"] < second["end_date"]
    assert second["start_date"] < first["end_date"]
    assert [run["task_key"] for run in databricks.runs.values()] == 2 * ["stage_orders"] + 2 * ["merge_orders"]
    assert sorted(spark.table(tables.target).collect()) == target_before
    assert sorted(spark.table(tables.history).collect()) == history_before
    audit = {row["batch_id"]: row for row in spark.table(tables.audit).collect()}
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


def ui_clear_payload(run_id: str, task_id: str) -> dict:
    """What Airflow 3.3's Clear Task Instance dialog posts for one task of a run, with its default options
    (Downstream ticked: the task and everything after it)."""
    return {
        "dag_run_id": run_id,
        "dry_run": False,
        "include_downstream": True,
        "include_future": False,
        "include_past": False,
        "include_upstream": False,
        "only_failed": False,
        "task_ids": [task_id],
        "note": None,
    }


def test_fix_the_file_then_clear_the_stage_says_to_trigger_a_new_run_which_loads_it(gcs, tmp_path):
    """An operator's first recovery: the stage refused a file; they fix it in input/ and clear the stage in
    the UI. The cleared try reads the run's own list, so it fails again: it said '0 of 0 rows rejected
    (100.0%) ... changed since it was listed', and nothing of what to do. Its message now says to trigger a
    new run, and that run loads the fixed file.

    Airflow's side is the subject (the Clear dialog's payload, the cleared try reading the run's manifest, a
    new run listing afresh), so the tasks run the Databricks operators against the stand-in with the stub jobs
    (the real reject-limit message; its wording and the real stage's check are proven in tests/spark_jobs)."""
    from tests.spark_jobs.helpers import HEADER

    row = "1,FIX1,2023-01-01,,In Transit,1 Elm St,2023-01-01 10:00:00\n"
    gcs.upload("input/orders.csv", HEADER.replace("status", "state") + row)  # an upstream rename: refused
    stubs = StubJobs()
    stubs.refuse["stage_orders"] = "1 of 1 rows rejected (100.0%): missing required columns: status"

    require(missing_postgres(), "Airflow's metadata database is")
    postgres = PostgresServer(compose_file()["services"]["postgres"], free_port()).start()
    with JobsApiStandIn(jobs=stubs.entry_points) as databricks:
        settings = databricks.settings("main.order_tracking_e2e")
        services = postgres_services(postgres, tmp_path / "airflow-home", tmp_path / "tables", settings)
        try:
            services.start()
            services.unpause_when_parsed()
            post = {"logical_date": None, "conf": {}}
            run_id = services.api("POST", f"dags/{DAG_ID}/dagRuns", json=post)["dag_run_id"]
            first = services.wait_for_run(run_id)
            gcs.upload("input/orders.csv", HEADER + row)  # the fix, under the same name
            services.api("POST", f"dags/{DAG_ID}/clearTaskInstances", json=ui_clear_payload(run_id, "stage_orders"))
            cleared = services.wait_for_run(run_id)
            cleared_states = services.task_states(run_id)
            # As the UI shows it: the failure's text is in the record of "Task failed with exception".
            cleared_log = json.dumps(services.task_log(run_id, "stage_orders", 2), ensure_ascii=False)
            new_run = services.api("POST", f"dags/{DAG_ID}/dagRuns", json=post)["dag_run_id"]
            loaded = services.wait_for_run(new_run)
        finally:
            services.stop()
            postgres.stop()

    assert (first, cleared, cleared_states["stage_orders"], loaded) == ("failed", "failed", "failed", "success")
    assert stubs.ran == ["stage_orders", "stage_orders", "stage_orders", "merge_orders"]
    assert "1 of 1 rows rejected (100.0%)" in cleared_log, cleared_log[-2000:]
    assert (
        "1 file was replaced after the run listed it (gs://order-tracking/input/orders.csv). A run loads the "
        "versions it listed: a retry, or a Clear of any of its tasks, reads the same list and fails the same way. "
        "To load the version in the input folder, where it stays, trigger a new run"
    ) in cleared_log, cleared_log[-2000:]
    (merged,) = stubs.merged()
    assert [(f.uri, f.rows, str(f.status)) for f in merged.files] == [
        ("gs://order-tracking/input/orders.csv", 1, "loaded")
    ]
    assert gcs.names("input/") == []
    assert [name.rsplit("/", 1)[-1] for name in gcs.names("archive/")] == ["orders.csv"]
