"""Airflow's own services on loopback (PostgreSQL metadata DB): a backfill created through the REST API.

api-server, scheduler (LocalExecutor), dag-processor and triggerer run as real processes; the Spark jobs
run on the local backend. A run triggered through the REST API, with the compose file's own parts, is
``test_compose_parity.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SEED_FILES, free_port
from tests.dags.airflow_services import AirflowServices
from tests.dags.compose_stack import PostgresServer, compose_file, missing_postgres, require
from tests.dags.conftest import DAG_ID, GCP_CONNECTION, upload_seed
from tests.spark_jobs.helpers import read

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

    require(missing_postgres(), "Airflow's backfill database is")
    postgres = PostgresServer(compose_file()["services"]["postgres"], free_port()).start()
    services = postgres_services(
        postgres,
        tmp_path / "airflow-home",
        table_root,
        {"ORDER_TRACKING_SCHEDULE": "@daily", "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "5"},
    )
    try:
        services.start()
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

        services.wait(
            lambda: len(backfill_runs()) == 2 and all(r["state"] in ("success", "failed") for r in backfill_runs()),
            "the backfill runs",
            600,
        )
        runs = backfill_runs()
        states = {run["dag_run_id"]: services.task_states(run["dag_run_id"]) for run in runs}
    finally:
        services.stop()
        postgres.stop()

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
