"""What the merge job works out before writing: the batch's profile, and the event-time bands that let the
history insert skip history files."""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import functions as F

from spark_jobs.merge_plan import TimeBands, profile_batch
from spark_jobs.session import spark_conf
from spark_jobs.stage_orders import stage_orders
from tests.conftest import SEED_FILES, seed_rows
from tests.spark_jobs.helpers import read


def micros(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() * 1_000_000)


def test_bands_join_overlapping_spans_and_close_the_smallest_gaps_first():
    buckets = [(50, 60), (0, 10), (5, 12), (100, 110), (13, 20)]
    assert TimeBands.covering(buckets, max_bands=8).spans == ((0, 12), (13, 20), (50, 60), (100, 110))
    assert TimeBands.covering(buckets, max_bands=3).spans == ((0, 20), (50, 60), (100, 110))
    assert TimeBands.covering(buckets, max_bands=2).spans == ((0, 60), (100, 110))
    assert TimeBands.covering(buckets, max_bands=1).spans == ((0, 110),)
    assert TimeBands.covering([], max_bands=8).spans == ()


def test_the_band_condition_keeps_instants_within_a_band_edges_included(spark):
    noon = micros("2024-06-01 12:00:00")
    bands = TimeBands(((micros("2023-01-01 00:00:00"), micros("2023-01-01 01:00:00")), (noon, noon)))
    times = ["2022-12-31 23:59:59", "2023-01-01 00:00:00", "2023-01-01 01:00:00", "2023-01-01 01:00:01",
             "2024-06-01 12:00:00", "2024-06-01 12:00:01"]  # fmt: skip
    frame = spark.createDataFrame([(t,) for t in times], "t string").select(
        F.to_timestamp("t").alias("last_update_timestamp")
    )
    kept = frame.alias("h").where(bands.condition("h")).collect()
    in_sql = frame.alias("h").where(F.expr(bands.sql("h"))).collect()  # the MERGE's text form, in another zone
    with spark_conf(spark, {"spark.sql.session.timeZone": "America/New_York"}):
        in_sql_elsewhere = frame.alias("h").where(F.expr(bands.sql("h"))).count()
    assert sorted(str(row[0]) for row in kept) == ["2023-01-01 00:00:00", "2023-01-01 01:00:00", "2024-06-01 12:00:00"]
    assert sorted(in_sql) == sorted(kept)
    assert in_sql_elsewhere == 3
    assert frame.alias("h").where(TimeBands(()).condition("h")).count() == 0
    assert frame.alias("h").where(F.expr(TimeBands(()).sql("h"))).count() == 0


def test_the_profile_of_the_staged_seed_batch(spark, tables):
    stage_orders(
        spark, [{"uri": str(path)} for path in SEED_FILES], "seed", tables.staging, tables.rejects, tables.audit
    )
    profile = profile_batch(read(spark, tables.staging).where(F.col("_batch_id") == "seed"))

    rows = seed_rows()
    keys = sorted({row["tracking_num"] for row in rows})
    assert (profile.staged, profile.collapsed) == (len(keys), len(rows) - len(keys))
    assert (profile.key_range.low, profile.key_range.high) == (keys[0], keys[-1])
    # Every event of the batch lies in a band, so the history insert can find each one it already holds.
    event_times = {micros(row["last_update_timestamp"]) for row in rows}
    assert all(any(low <= t <= high for low, high in profile.bands.spans) for t in event_times)
    assert 1 <= len(profile.bands.spans) <= 8
    assert profile.bands.spans[0][0] == min(event_times)
    assert profile.bands.spans[-1][1] == max(event_times)
