"""Faults injected into the real DAG (local backend, GCS emulator): nothing is lost, nothing is duplicated."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from order_tracking_load import archive, layout
from tests.conftest import SEED_FILES, seed_rows
from tests.dags.conftest import run_dag, upload_seed
from tests.spark_jobs.helpers import HEADER, read
from tests.spark_jobs.test_seed_load import distinct_seed_events

SEED_INPUT = [f"input/{path.name}" for path in SEED_FILES]


def test_a_failed_merge_then_a_failed_archive_load_each_file_exactly_once(
    spark, airflow_db, gcs, pipeline_env, monkeypatch
):
    upload_seed(gcs)

    # 1. The merge dies after its target MERGE and its history insert committed: every file stays in input.
    from spark_jobs import load as load_module

    real_insert = load_module.insert_new_history

    def dies_after_the_history_insert(*args: object, **kwargs: object) -> int:
        real_insert(*args, **kwargs)
        raise RuntimeError("injected: the merge died after its commits")

    with monkeypatch.context() as patch:
        patch.setattr(load_module, "insert_new_history", dies_after_the_history_insert)
        failed_merge = run_dag()
    assert failed_merge.tasks["merge_orders"] == "failed"
    assert failed_merge.tasks["archive_loaded_files"] == "upstream_failed"
    assert gcs.names("input/") == SEED_INPUT
    assert gcs.names("archive/") == []
    assert read(spark, str(pipeline_env / "orders")).count() == 23  # committed, though the task failed

    # 2. The next run merges, then archiving fails: the data is loaded, the files are still in input.
    def move_breaks(*args: object, **kwargs: object) -> bool:
        raise AirflowException("injected: GCS refused the copy")

    with monkeypatch.context() as patch:
        patch.setattr(archive, "_move", move_breaks)
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
    assert audit[layout.batch_key(failed_merge.run_id)]["status"] == "staged"
    assert audit[layout.batch_key(clean.run_id)]["rows_inserted"] == 0
    assert audit[layout.batch_key(clean.run_id)]["rows_unchanged"] == 23


def test_a_redelivered_file_duplicates_nothing_and_the_audit_records_it(spark, airflow_db, gcs, pipeline_env):
    upload_seed(gcs)
    first = run_dag()
    assert first.state == "success", first.tasks
    target_before = sorted(read(spark, str(pipeline_env / "orders")).collect())
    history_before = read(spark, str(pipeline_env / "orders_history")).count()

    # The same content under another name, and the same name again after it was archived.
    copy_name, resent = f"input/copy of {SEED_FILES[0].name}", SEED_FILES[1]
    gcs.upload(copy_name, SEED_FILES[0].read_bytes())
    gcs.upload(f"input/{resent.name}", resent.read_bytes())
    second = run_dag()

    assert second.state == "success", second.tasks
    assert sorted(read(spark, str(pipeline_env / "orders")).collect()) == target_before
    assert read(spark, str(pipeline_env / "orders_history")).count() == history_before
    audit = {r["batch_id"]: r for r in read(spark, str(pipeline_env / "orders_load_audit")).collect()}
    first_batch, record = layout.batch_key(first.run_id), audit[layout.batch_key(second.run_id)]
    assert (record["files_redelivered"], record["rows_inserted"], record["rows_updated"]) == (2, 0, 0)
    assert {f["uri"]: f["redelivery_of"] for f in record["files"]} == {
        f"gs://order-tracking/{copy_name}": (
            f"same content as gs://order-tracking/input/{SEED_FILES[0].name} in batch {first_batch}"
        ),
        f"gs://order-tracking/input/{resent.name}": (
            f"same content as gs://order-tracking/input/{resent.name} in batch {first_batch}"
        ),
    }
    assert audit[first_batch]["files_redelivered"] == 0
    assert gcs.names("input/") == []


def test_a_bad_file_is_quarantined_while_good_files_load_and_a_batch_bad_as_a_whole_fails_at_once(
    spark, airflow_db, gcs, pipeline_env, caplog, capfd, monkeypatch
):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "2")  # none is used: a retry would fail the same way
    bad_rows = "".join(f"{i},TRK-BAD-{i},2023-01-01,,In Transit,x,yesterday\n" for i in range(10))
    gcs.upload("input/bad.csv", HEADER + bad_rows + "11,,2023-01-01,,In Transit,x,2023-01-01 10:00:00\n")
    no_status = HEADER.replace(",status", "")
    gcs.upload("input/no_status.csv", no_status + "1,TRK-NS,2023-01-01,,x,2023-01-01 10:00:00\n")

    # Bad as a whole (no file of it loads): the stage fails at once, names the files, keeps the rejects,
    # and moves nothing.
    failed = run_dag()

    assert (failed.tasks["stage_orders"], failed.tasks["merge_orders"]) == ("failed", "upstream_failed")
    assert failed.tries["stage_orders"] == 1
    out, err = capfd.readouterr()  # where Airflow writes the task's failure
    assert "stage_orders failed, and a retry would fail the same way (not retried): batch " in out + err
    failure = out + err + caplog.text
    # Once: the job logged it and the task's failure said it again.
    assert failure.count("12 of 12 rows rejected (100.0%), above the limit of 10.0%, and no file of it loads.") == 1
    assert (
        "Reject reasons, all 3: last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp (10 rows); "
        "file rejected: missing required columns: status (1 row); tracking_num is empty (1 row). "
        "Files rejected whole: gs://order-tracking/input/no_status.csv (missing required columns: status). "
        "Most rows rejected: gs://order-tracking/input/bad.csv (11 of 11)." in failure
    )
    assert gcs.names("input/") == ["input/bad.csv", "input/no_status.csv"]
    assert gcs.names("archive/") == gcs.names("rejected/") == []
    batch = layout.batch_key(failed.run_id)
    rejects = read(spark, str(pipeline_env / "orders_rejects")).where(f"batch_id = '{batch}'")
    assert rejects.count() == 12
    audit = read(spark, str(pipeline_env / "orders_load_audit")).where(f"batch_id = '{batch}'").collect()
    assert [(r["status"], r["rows_rejected"]) for r in audit] == [("stage_failed", 12)]
    assert not (pipeline_env / "orders").exists()

    # A good file arrives: the bad ones no longer hold it hostage. They are quarantined (rejected/), the good
    # one loads and archives, and the run's last task fails it, naming the quarantined files and why.
    upload_seed(gcs, SEED_FILES[:1])
    mixed = run_dag()

    assert mixed.state == "failed", mixed.tasks
    assert {task for task, state in mixed.tasks.items() if state != "success"} == {"report_quarantined_files"}
    seed_keys = {r["tracking_num"] for r in seed_rows() if r["_file"] == SEED_FILES[0].name}
    assert {r["tracking_num"] for r in read(spark, str(pipeline_env / "orders")).collect()} == seed_keys
    assert gcs.names("input/") == []
    assert len(gcs.names("archive/")) == 1
    mixed_batch = layout.batch_key(mixed.run_id)
    assert gcs.names("rejected/") == [
        f"rejected/2026-11-26/{mixed_batch}/bad.csv",
        f"rejected/2026-11-26/{mixed_batch}/no_status.csv",
    ]
    failure = "".join(capfd.readouterr())
    assert "2 of 3 files quarantined; the other files loaded and are archived. Quarantined: " in failure
    assert (
        "gs://order-tracking/input/bad.csv (11 of 11 rows rejected (100.0%), above the limit of 10.0%, 11 rows)"
        in failure
    )


def test_two_overlapping_runs_load_and_archive_each_file_once(spark, airflow_db, gcs, pipeline_env, monkeypatch):
    """Run A lists, stages and merges, then stalls before archiving; run B does all of it; then A archives.

    The scheduler never lets this happen (max_active_runs=1); this is the interleaving it would take if
    two runs did overlap, for instance a DAG copy deployed twice.
    """
    upload_seed(gcs)
    stalled: list[tuple] = []

    def stall(settings, listing, stage_result, context):
        stalled.append((settings, listing, stage_result, context))
        raise RuntimeError("injected: run A stalls before archiving")

    with monkeypatch.context() as patch:
        patch.setattr(archive, "archive_loaded_files", stall)
        run_a = run_dag()
    assert run_a.tasks["merge_orders"] == "success"
    run_b = run_dag()  # lists the same files, since they are still in input
    assert run_b.state == "success", run_b.tasks

    settings, listing_a, stage_a, context_a = stalled[0]
    late = archive.archive_loaded_files(settings, listing_a, stage_a, context_a)

    assert late == {
        **{"archived": [], "rejected": [], "left_in_input": [], "already_gone": SEED_INPUT},
        **{"files": len(SEED_INPUT), "quarantined": []},
    }
    batch_a, batch_b = layout.batch_key(run_a.run_id), layout.batch_key(run_b.run_id)
    assert gcs.names("archive/") == [f"archive/2026-11-26/00/{batch_b}/{path.name}" for path in SEED_FILES]
    assert gcs.names("input/") == []
    target = read(spark, str(pipeline_env / "orders"))
    assert target.count() == target.select("tracking_num").distinct().count() == 23
    history = read(spark, str(pipeline_env / "orders_history"))
    assert {(r["tracking_num"], r["last_update_timestamp"]) for r in history.collect()} == distinct_seed_events()
    assert history.count() == len(distinct_seed_events())
    audit = {r["batch_id"]: r for r in read(spark, str(pipeline_env / "orders_load_audit")).collect()}
    assert (audit[batch_a]["rows_inserted"], audit[batch_b]["rows_inserted"]) == (23, 0)
    assert audit[batch_b]["files_redelivered"] == len(SEED_FILES)


@pytest.fixture(autouse=True)
def _no_retries(monkeypatch):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "0")
