"""Faults injected into the real DAG (local backend, GCS emulator): nothing is lost, nothing is duplicated."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from order_tracking_load import gcs_files
from tests.conftest import SEED_FILES
from tests.dags.conftest import run_dag, upload_seed
from tests.spark_jobs.helpers import read
from tests.spark_jobs.test_seed_load import distinct_seed_events

SEED_INPUT = [f"input/{path.name}" for path in SEED_FILES]


def test_a_failed_merge_then_a_failed_archive_load_each_file_exactly_once(
    spark, airflow_db, gcs, pipeline_env, monkeypatch
):
    upload_seed(gcs)

    # 1. The merge fails after staging: the target is untouched and every file stays in input.
    def merge_breaks(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: the merge died")

    with monkeypatch.context() as patch:
        patch.setattr("spark_jobs.merge_orders.merge_latest", merge_breaks)
        failed_merge = run_dag()
    assert failed_merge.tasks["merge_orders"] == "failed"
    assert failed_merge.tasks["archive_loaded_files"] == "upstream_failed"
    assert gcs.names("input/") == SEED_INPUT
    assert gcs.names("archive/") == []
    assert read(spark, str(pipeline_env / "orders")).count() == 0

    # 2. The next run merges, then archiving fails: the data is loaded, the files are still in input.
    def move_breaks(*args: object, **kwargs: object) -> bool:
        raise AirflowException("injected: GCS refused the copy")

    with monkeypatch.context() as patch:
        patch.setattr(gcs_files, "_move", move_breaks)
        failed_archive = run_dag()
    assert failed_archive.tasks["merge_orders"] == "success"
    assert failed_archive.tasks["archive_loaded_files"] == "failed"
    assert gcs.names("input/") == SEED_INPUT
    target_after_load = sorted(read(spark, str(pipeline_env / "orders")).collect())
    assert len(target_after_load) == 23

    # 3. A clean run reloads the same files: no target row changes, no history duplicate, then it archives.
    clean = run_dag()
    assert clean.state == "success", clean.tasks
    assert sorted(read(spark, str(pipeline_env / "orders")).collect()) == target_after_load
    history = [
        (r["tracking_num"], r["last_update_timestamp"])
        for r in read(spark, str(pipeline_env / "orders_history")).collect()
    ]
    assert len(history) == len(set(history))
    assert set(history) == distinct_seed_events()
    assert gcs.names("input/") == []
    assert len(gcs.names("archive/")) == len(SEED_FILES)
    audit = {r["batch_id"]: r for r in read(spark, str(pipeline_env / "orders_load_audit")).collect()}
    assert audit[gcs_files.batch_key(failed_merge.run_id)]["status"] == "staged"
    assert audit[gcs_files.batch_key(clean.run_id)]["rows_inserted"] == 0
    assert audit[gcs_files.batch_key(clean.run_id)]["rows_unchanged"] == 23


@pytest.fixture(autouse=True)
def _no_retries(monkeypatch):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "0")
