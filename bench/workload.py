"""Deterministic order-tracking workloads in the seed files' schema: a target of N orders and CSV batches.

Keys are ``TRK`` and ten digits, so their text order is their number order and a batch's new keys sit
above the target's. Target order ``i`` last changed at ``BASE_TIME + i`` seconds; a batch's updates are
later than any target event, its stale events earlier.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

HEADER = (
    "order_num",
    "tracking_num",
    "pck_recieved_date",
    "package_deliver_date",
    "status",
    "address",
    "last_update_timestamp",
)
STATUSES = ("In Transit", "Out for Delivery", "Delivered", "Delayed", "Returned")
STREETS = ("Elm St", "Oak Ave", "Maple Rd", "Cedar Ln", "Pine Ct", "Birch Way", "Willow Dr")
BASE_TIME = datetime(2023, 1, 1)
UPDATE_TIME = BASE_TIME + timedelta(days=400)  # after every target event (N < 34M)
STALE_TIME = BASE_TIME - timedelta(days=1)  # before every target event


def key(number: int) -> str:
    """The tracking number of order ``number`` (1-based)."""
    return f"TRK{number:010d}"


@dataclass(frozen=True)
class BatchShape:
    """How a batch of ``rows`` events against a target of ``target_rows`` orders is made up."""

    target_rows: int
    rows: int
    seed: int = 7
    new_fraction: float = 0.10
    recent_fraction: float = 0.85  # updates to the most recent 5% of orders; the rest update older ones
    recent_window: float = 0.05
    exact_duplicates: int = 0  # rows repeated verbatim; default: one per thousand
    stale_events: int = 0  # events older than the target's; default: one per thousand

    def events(self) -> Iterator[tuple[str, ...]]:
        """The batch's rows, in file order (deterministic for a given shape)."""
        rng = random.Random(self.seed)
        n = self.target_rows
        per_mille = max(1, self.rows // 1000)
        duplicates = self.exact_duplicates or per_mille
        stale = self.stale_events or per_mille
        body = self.rows - duplicates - stale
        new = int(body * self.new_fraction)
        recent = int(body * self.recent_fraction) if n else 0
        older = body - new - recent if n else 0
        if self.new_fraction + self.recent_fraction >= 1:  # no older updates, not even a rounding leftover
            recent, older = recent + older, 0
        new = body - recent - older
        recent_low = max(1, n - int(n * self.recent_window) + 1)
        numbers = [n + 1 + i for i in range(new)]
        numbers += [rng.randint(recent_low, n) for _ in range(recent)]
        numbers += [rng.randint(1, max(1, recent_low - 1)) for _ in range(older)]
        rng.shuffle(numbers)
        rows = [_row(number, UPDATE_TIME + timedelta(seconds=i), rng) for i, number in enumerate(numbers)]
        # Late events of orders the batch may touch: anywhere, unless the batch has no older updates.
        stale_low = 1 if older else recent_low
        rows += [_row(rng.randint(stale_low, max(n, 1)), STALE_TIME, rng) for _ in range(stale)]
        rows += [rows[rng.randrange(body)] for _ in range(duplicates)]
        rng.shuffle(rows)
        return iter(rows)


def _row(number: int, when: datetime, rng: random.Random) -> tuple[str, ...]:
    received = (BASE_TIME + timedelta(days=number % 365)).strftime("%Y-%m-%d")
    status = STATUSES[rng.randrange(len(STATUSES))]
    delivered = (when + timedelta(hours=1)).strftime("%Y-%m-%d") if status == "Delivered" else ""
    address = f"{rng.randint(1, 9999)} {STREETS[number % len(STREETS)]}, Apt {number % 97}"
    return (str(number), key(number), received, delivered, status, address, when.strftime("%Y-%m-%d %H:%M:%S"))


def write_csv_files(rows: Iterator[tuple[str, ...]], directory: Path, files: int, stem: str = "batch") -> list[Path]:
    """Write rows round-robin into ``files`` CSV files with the seed header; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}_{i:04d}.csv" for i in range(files)]
    handles = [path.open("w", newline="", encoding="utf-8") for path in paths]
    try:
        writers = [csv.writer(handle, lineterminator="\n") for handle in handles]
        for writer in writers:
            writer.writerow(HEADER)
        for i, row in enumerate(rows):
            writers[i % files].writerow(row)
    finally:
        for handle in handles:
            handle.close()
    return paths


def target_frame(spark: SparkSession, rows: int, files: int) -> DataFrame:
    """The target's ``rows`` orders, made by Spark (not Python) so that 16M rows take seconds.

    Order ``i`` has key ``key(i)`` and last changed at ``BASE_TIME + i`` seconds, as the batches
    assume. ``files`` partitions of consecutive orders become ``files`` key-sorted data files.
    """
    from pyspark.sql import functions as F

    i = F.col("id")
    base = int(BASE_TIME.replace(tzinfo=UTC).timestamp())
    status = F.element_at(F.array(*[F.lit(s) for s in STATUSES]), (i % len(STATUSES) + 1).cast("int"))
    street = F.element_at(F.array(*[F.lit(s) for s in STREETS]), (i % len(STREETS) + 1).cast("int"))
    when = F.timestamp_seconds(F.lit(base) + i)
    return spark.range(1, rows + 1, numPartitions=max(1, files)).select(
        i.alias("order_num"),
        F.concat(F.lit("TRK"), F.lpad(i.cast("string"), 10, "0")).alias("tracking_num"),
        F.date_add(F.lit(BASE_TIME.date()), (i % 365).cast("int")).alias("pck_recieved_date"),
        F.when(status == "Delivered", F.to_date(when)).alias("package_deliver_date"),
        status.alias("status"),
        F.format_string("%d %s, Apt %d", (i * 7919) % 9999 + 1, street, i % 97).alias("address"),
        when.alias("last_update_timestamp"),
        F.lit(None).cast("string").alias("_rescued_data"),
        F.lit("bench://target").alias("_source_file"),
        i.alias("_line_number"),
        F.lit("bench-target").alias("_batch_id"),
        F.lit(BASE_TIME).cast("timestamp").alias("_ingested_at"),
    )


def delta_sql(path: str) -> str:
    """A path-based Delta table as SQL names it."""
    return "delta.`" + path.replace("`", "``") + "`"


def table_version(spark: SparkSession, path: str) -> int:
    """A Delta table's current version."""
    return int(spark.sql(f"DESCRIBE HISTORY {delta_sql(path)} LIMIT 1").first()["version"])
