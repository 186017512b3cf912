"""The seed data, loaded in different orders and batchings, gives the contract's 23-row target."""

from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs.schema import TARGET_SCHEMA
from tests.conftest import SEED_FILES, expected_latest, seed_rows, typed_business_row
from tests.spark_jobs.helpers import BUSINESS, load_batch, read


def expected_target(spark):
    schema = TARGET_SCHEMA.__class__([TARGET_SCHEMA[name] for name in BUSINESS])
    return spark.createDataFrame([typed_business_row(row) for row in expected_latest().values()], schema)


def assert_seed_target(spark, tables) -> None:
    target = read(spark, tables.target)
    assert_df_equality(target.select(*BUSINESS), expected_target(spark), ignore_row_order=True, ignore_nullable=True)
    rows = {row["tracking_num"]: row for row in target.collect()}
    assert len(rows) == 23
    assert (rows["TRK1019"]["status"], rows["TRK1019"]["last_update_timestamp"]) == (
        "Delivered",
        dt.datetime(2023, 1, 4, 14, 0, 58),
    )
    assert (rows["TRK1017"]["status"], rows["TRK1017"]["last_update_timestamp"]) == (
        "Returned",
        dt.datetime(2023, 1, 5, 23, 17, 40),
    )


def distinct_seed_events() -> set[tuple[str, dt.datetime]]:
    return {
        (row["tracking_num"], dt.datetime.strptime(row["last_update_timestamp"], "%Y-%m-%d %H:%M:%S"))
        for row in seed_rows()
    }


def assert_history_complete(spark, tables) -> None:
    history = read(spark, tables.history)
    events = [(row["tracking_num"], row["last_update_timestamp"]) for row in history.collect()]
    assert len(events) == len(set(events)), "history holds a duplicate event"
    assert set(events) == distinct_seed_events()


def test_one_file_per_batch_newest_first_gives_the_latest_state(spark, tables):
    """Newest first is the order in which stale events meet a newer target. Oldest first, and any other
    order and batching, is ``test_properties``' on generated histories checked against the model."""
    merged = [load_batch(spark, tables, [path], f"newest-first-{i}")[1] for i, path in enumerate(reversed(SEED_FILES))]

    assert_seed_target(spark, tables)
    assert_history_complete(spark, tables)
    # The 2023-01-04 file arrives after the 2023-01-05 one: every key it shares is older and skipped.
    assert merged[1]["rows_updated"] == 0
    assert merged[1]["rows_skipped_stale"] > 0
    audit = read(spark, tables.audit)
    assert audit.count() == 5
    assert audit.where("status = 'merged'").count() == 5


def test_all_seed_files_in_one_batch(spark, tables):
    staged, merged = load_batch(spark, tables, SEED_FILES, "all-at-once")

    assert_seed_target(spark, tables)
    assert_history_complete(spark, tables)
    assert (staged["rows_read"], staged["rows_rejected"], staged["rows_staged"], staged["rows_collapsed"]) == (
        94,
        0,
        23,
        71,
    )
    assert (merged["rows_inserted"], merged["rows_updated"], merged["rows_skipped_stale"]) == (23, 0, 0)
    # A tie on the latest timestamp goes to the greatest (file, line): TRK1018's event is in files 04 and 05.
    trk1018 = read(spark, tables.target).where(F.col("tracking_num") == "TRK1018").first()
    assert trk1018["_source_file"].endswith("order_tracking_2023_01_05.csv")
    assert trk1018["_line_number"] == 3


def test_in_file_duplicates_collapse_to_the_latest(spark, tables):
    file_04 = SEED_FILES[3]
    staged, _ = load_batch(spark, tables, [file_04], "file-04")

    assert (staged["rows_read"], staged["rows_staged"], staged["rows_collapsed"]) == (23, 22, 1)
    staging = read(spark, tables.staging).where(F.col("tracking_num") == "TRK1019").collect()
    assert len(staging) == 1
    assert staging[0]["last_update_timestamp"] == dt.datetime(2023, 1, 4, 14, 0, 58)
    assert staging[0]["_line_number"] == 24
    assert [event["last_update_timestamp"] for event in staging[0]["_superseded_events"]] == [
        dt.datetime(2023, 1, 3, 20, 29, 3)
    ]
    # Both TRK1019 events reach the history.
    history = read(spark, tables.history).where(F.col("tracking_num") == "TRK1019")
    assert sorted(row["status"] for row in history.collect()) == ["Delivered", "Out for Delivery"]


def test_rerun_and_replay_change_nothing(spark, tables):
    load_batch(spark, tables, SEED_FILES, "first")
    before_target = sorted(read(spark, tables.target).collect())
    before_history = sorted(read(spark, tables.history).collect())

    # Re-run the batch under its own id; replay every file under a new id; replay the oldest file alone.
    staged, rerun = load_batch(spark, tables, SEED_FILES, "first")
    _, replay_all = load_batch(spark, tables, list(reversed(SEED_FILES)), "replay-all")
    _, replay_oldest = load_batch(spark, tables, SEED_FILES[:1], "replay-oldest")

    assert sorted(read(spark, tables.target).collect()) == before_target
    assert sorted(read(spark, tables.history).collect()) == before_history
    assert (rerun["rows_inserted"], rerun["rows_updated"], rerun["rows_unchanged"]) == (0, 0, 23)
    assert (replay_all["rows_inserted"], replay_all["rows_updated"], replay_all["rows_unchanged"]) == (0, 0, 23)
    assert (replay_oldest["rows_updated"], replay_oldest["rows_skipped_stale"]) == (0, 20)
    assert rerun["history_rows_inserted"] == replay_all["history_rows_inserted"] == 0
    # Staging replaced the re-run batch's rows instead of adding to them; the audit keeps one record per batch.
    assert read(spark, tables.staging).where(F.col("_batch_id") == "first").count() == staged["rows_staged"] == 23
    audit = read(spark, tables.audit)
    assert sorted(row["batch_id"] for row in audit.collect()) == ["first", "replay-all", "replay-oldest"]


def test_an_event_of_the_same_time_and_greater_content_in_a_later_batch_replaces_the_earlier(spark, tables, tmp_path):
    """The loads in the other order (skipped as stale), and every order at random: ``test_properties.py``."""
    from tests.spark_jobs.helpers import HEADER, write_csv

    delayed = write_csv(tmp_path, "a.csv", HEADER + "1,TRK1,,,Delayed,1 Elm St,2023-01-05 00:00:00\n")
    returned = write_csv(tmp_path, "b.csv", HEADER + "1,TRK1,,,Returned,1 Elm St,2023-01-05 00:00:00\n")

    load_batch(spark, tables, [delayed], "first")
    _, merged = load_batch(spark, tables, [returned], "second")

    # The greater content wins a tie on time (status first: Returned > Delayed); the earlier load once kept it.
    assert [row["status"] for row in read(spark, tables.target).collect()] == ["Returned"]
    assert sorted(row["status"] for row in read(spark, tables.history).collect()) == ["Delayed", "Returned"]
    assert (merged["rows_updated"], merged["rows_skipped_stale"]) == (1, 0)
