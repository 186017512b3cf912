"""The real DAG, run with ``dag.test()`` on the local Spark backend against the GCS emulator."""

from __future__ import annotations

import json

import pytest
from chispa import assert_df_equality

from order_tracking_load import layout, manifests
from tests.conftest import seed_rows
from tests.dags.conftest import run_dag, upload_seed
from tests.spark_jobs.helpers import BUSINESS, read
from tests.spark_jobs.test_seed_load import expected_target

LATE_FILE = (
    "order_num,tracking_num,pck_recieved_date,package_deliver_date,status,address,last_update_timestamp\n"
    "1000,TRK1000,2023-01-05,2023-01-10,Delivered,202 Birch Rd,2023-01-06 08:00:00\n"
)


def test_runs_load_each_file_once_archive_it_and_skip_when_idle(spark, airflow_db, gcs, pipeline_env, monkeypatch):
    upload_seed(gcs)
    gcs.upload("input/readme.txt", "not a CSV")
    listed = manifests.list_and_write_manifest

    def list_then_receive_a_late_file(settings, context):
        listing = listed(settings, context)
        gcs.upload("input/late.csv", LATE_FILE)  # arrives while this run is in progress
        return listing

    monkeypatch.setattr(manifests, "list_and_write_manifest", list_then_receive_a_late_file)
    first = run_dag()
    monkeypatch.setattr(manifests, "list_and_write_manifest", listed)

    assert first.state == "success", first.tasks
    target = read(spark, str(pipeline_env / "orders"))
    assert_df_equality(target.select(*BUSINESS), expected_target(spark), ignore_row_order=True, ignore_nullable=True)
    batch = layout.batch_key(first.run_id)
    assert gcs.names("archive/") == [
        f"archive/2026-11-26/00/{batch}/{path}" for path in sorted(p.name for p in _seed())
    ]
    assert gcs.names("input/") == ["input/late.csv", "input/readme.txt"]
    manifest = json.loads(gcs.read(f"manifests/{batch}.json"))
    assert [f["name"] for f in manifest["files"]] == [f"input/{p.name}" for p in _seed()]
    assert all(
        f["generation"] and f["size"] == p.stat().st_size for f, p in zip(manifest["files"], _seed(), strict=True)
    )

    second = run_dag()
    assert second.state == "success", second.tasks
    trk1000 = read(spark, str(pipeline_env / "orders")).where("tracking_num = 'TRK1000'").first()
    assert (trk1000["status"], str(trk1000["last_update_timestamp"])) == ("Delivered", "2023-01-06 08:00:00")
    assert gcs.names("input/") == ["input/readme.txt"]
    assert f"archive/2026-11-26/00/{layout.batch_key(second.run_id)}/late.csv" in gcs.names("archive/")

    version = _target_version(spark, pipeline_env)
    only_other_files = run_dag()  # readme.txt wakes the sensor, but there is no CSV to load
    assert only_other_files.tasks == {
        "wait_for_new_files": "success",
        "list_new_files": "skipped",
        "stage_orders": "skipped",
        "merge_orders": "skipped",
        "archive_loaded_files": "skipped",
        "report_quarantined_files": "skipped",
    }
    gcs.bucket.blob("input/readme.txt").delete()
    nothing = run_dag()  # the sensor times out: the run is skipped, not failed
    assert nothing.state == "success"
    assert set(nothing.tasks.values()) == {"skipped"}
    assert _target_version(spark, pipeline_env) == version


def test_replaying_an_archived_date_leaves_the_target_identical(spark, airflow_db, gcs, pipeline_env, caplog, capfd):
    upload_seed(gcs)
    gcs.upload("input/no_status.csv", "order_num,tracking_num,last_update_timestamp\n1,TRK9,2023-01-09 10:00:00\n")
    first = run_dag()
    # The file without a status column was rejected whole: it moves to rejected/, with the reason logged, the
    # seed files load and archive, and the run's last task fails it, naming the file: someone must act.
    assert first.state == "failed", first.tasks
    assert {task for task, state in first.tasks.items() if state != "success"} == {"report_quarantined_files"}
    failure = "".join(capfd.readouterr())  # where Airflow writes the task's failure
    assert "1 of 6 files quarantined; the other files loaded and are archived. Quarantined: " in failure
    assert "no_status.csv (missing required columns: status, 1 rows)" in failure
    batch = layout.batch_key(first.run_id)
    assert gcs.names("rejected/") == [f"rejected/2026-11-26/{batch}/no_status.csv"]
    assert "no_status.csv was rejected whole (missing required columns: status)" in caplog.text
    assert gcs.names("input/") == []
    target_before = sorted(read(spark, str(pipeline_env / "orders")).collect())
    history_before = read(spark, str(pipeline_env / "orders_history")).count()
    archive_before = gcs.names("archive/")

    replay = run_dag(conf={"replay_date": "2026-11-26"})

    assert replay.state == "success", replay.tasks
    assert sorted(read(spark, str(pipeline_env / "orders")).collect()) == target_before
    history = read(spark, str(pipeline_env / "orders_history"))
    assert (
        history.count() == history_before == history.dropDuplicates(["tracking_num", "last_update_timestamp"]).count()
    )
    assert gcs.names("archive/") == archive_before  # replayed in place, nothing moved
    audit = read(spark, str(pipeline_env / "orders_load_audit")).where(
        f"batch_id = '{layout.batch_key(replay.run_id)}'"
    )
    assert [(r["rows_read"], r["rows_inserted"], r["rows_updated"], r["rows_unchanged"]) for r in audit.collect()] == [
        (94, 0, 0, 23)
    ]
    # The first load changed the target: one Asset event, with its figures. The replay changed nothing: none.
    assert _target_asset_events(pipeline_env) == [
        (
            first.run_id,
            {
                "batch_id": layout.batch_key(first.run_id),
                "rows_read": 95,
                "rows_rejected": 1,
                "files_rejected": 1,
                "files_redelivered": 0,
                "rows_collapsed": 71,
                "rows_staged": 23,
                "rows_inserted": 23,
                "rows_updated": 0,
                "rows_skipped_stale": 0,
                "rows_unchanged": 0,
                # one per distinct (key, event time) of the seed files
                "history_rows_inserted": len({(r["tracking_num"], r["last_update_timestamp"]) for r in seed_rows()}),
                "target_version": 1,
            },
        )
    ]


def _target_asset_events(tables) -> list[tuple[str, dict]]:
    """The Asset events on the target table's Asset: (source run id, extra)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == f"file://{tables / 'orders'}")
            .order_by(AssetEvent.timestamp)
            .all()
        )
        return [(event.source_run_id, event.extra) for event in events]


def _seed():
    from tests.conftest import SEED_FILES

    return SEED_FILES


def _target_version(spark, tables) -> int:
    return spark.sql(f"DESCRIBE HISTORY delta.`{tables / 'orders'}` LIMIT 1").first()["version"]


@pytest.fixture(autouse=True)
def _no_leftover_spark_state(spark):
    yield
    spark.catalog.clearCache()
