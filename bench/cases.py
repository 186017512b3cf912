"""The benchmark's measurements. Each returns plain dicts (seconds, counts, Delta operation metrics).

Every timed run starts from the same table state: tables are built once per size and put back with
``RESTORE`` (untimed) between runs, so repeats measure the same work.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from bench.original import damage, original_load, original_target
from bench.workload import HEADER, BatchShape, delta_sql, table_version, target_frame, write_csv_files
from spark_jobs.merge_orders import merge_orders
from spark_jobs.schema import (
    BATCH_ID,
    EVENT_CONTENT,
    EVENT_TIME,
    INGESTED_AT,
    KEY,
    LINE_NUMBER,
    ORDER_COLUMNS,
    RESCUED_DATA,
    ROWS_COLLAPSED,
    SOURCE_FILE,
    SUPERSEDED_EVENTS,
    TARGET_COLUMNS,
)
from spark_jobs.stage_orders import stage_orders

BATCH_FILES = 8  # CSV files per batch: a few per core, as a day's drops would be
HISTORY_EVENTS = 5  # events per order in the starting history (--history-events)
DELTA_RS_METRICS = ("num_target_rows_inserted", "num_target_rows_updated", "num_target_rows_copied", "num_output_rows")
# The CSV columns with their contract types: what a plain typed read of the files gives.
FLOOR_SCHEMA = T.StructType([T.StructField(name, ORDER_COLUMNS[name]) for name in HEADER])
MERGE_METRICS = (
    "numSourceRows",
    "numTargetRowsInserted",
    "numTargetRowsUpdated",
    "numTargetRowsCopied",
    "numOutputRows",
    "numTargetFilesAdded",
    "numTargetFilesRemoved",
    "numTargetDeletionVectorsAdded",
    "numTargetDeletionVectorsUpdated",
    "scanTimeMs",
    "rewriteTimeMs",
    "executionTimeMs",
)


def median(values: list[float]) -> float:
    """The median, rounded to milliseconds."""
    return round(statistics.median(values), 3)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``action``; return its wall-clock seconds and its result."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


@dataclass(frozen=True)
class Side:
    """One side of a timed comparison: the work timed, and the untimed work around each run.

    ``prepare`` gets the run's number and puts the tables back (its result goes to ``action``);
    ``observe`` gets that and the action's result, and returns a figure to keep for the run.
    """

    name: str
    action: Callable[[Any], Any]
    prepare: Callable[[int], Any] = lambda run: run
    observe: Callable[[Any, Any], Any] | None = None


@dataclass
class Runs:
    """One side's runs: their seconds, what ``observe`` kept of each, and the last run's result."""

    seconds: list[float] = field(default_factory=list)
    observed: list[Any] = field(default_factory=list)
    last: Any = None

    @property
    def median_s(self) -> float:
        return median(self.seconds)


def side_by_side(repeats: int, *sides: Side) -> dict[str, Runs]:
    """The benchmark's one timing loop: every side once per repeat, in turn, so drift hits all sides alike."""
    runs = {side.name: Runs() for side in sides}
    for run in range(repeats):
        for side in sides:
            prepared = side.prepare(run)
            seconds, result = timed(lambda side=side, prepared=prepared: side.action(prepared))
            runs[side.name].seconds.append(seconds)
            runs[side.name].last = result
            if side.observe is not None:
                runs[side.name].observed.append(side.observe(prepared, result))
    return runs


def work_counted(spark: SparkSession, tables: Tables, names: tuple[str, ...], label: str) -> tuple[Callable, Callable]:
    """A ``prepare`` and an ``observe`` that count one run's Spark jobs and its Delta commits to ``names``."""
    context = spark.sparkContext

    def prepare(run: int) -> tuple[int, str, dict[str, int | None]]:
        group = f"bench-{label}-{run}"
        versions = {name: _version_or_none(spark, tables.path(name)) for name in names}
        context.setJobGroup(group, group)
        return run, group, versions

    def observe(prepared: tuple[int, str, dict[str, int | None]], _: Any) -> tuple[int, int]:
        _, group, versions = prepared
        context.setLocalProperty("spark.jobGroup.id", None)
        commits = sum((_version_or_none(spark, tables.path(n)) or 0) - (versions[n] or 0) for n in names)
        return len(context.statusTracker().getJobIdsForGroup(group)), commits

    return prepare, observe


def restore(spark: SparkSession, path: str, to_version: int) -> None:
    """Put the table back to ``to_version`` unless it is there already."""
    if table_version(spark, path) != to_version:
        spark.sql(f"RESTORE TABLE {delta_sql(path)} TO VERSION AS OF {to_version}")


def last_merge_metrics(spark: SparkSession, path: str) -> dict[str, int]:
    """The operation metrics of the table's newest MERGE commit."""
    row = (
        spark.sql(f"DESCRIBE HISTORY {delta_sql(path)}").where("operation = 'MERGE'").orderBy(F.desc("version")).first()
    )
    metrics = row["operationMetrics"]
    return {name: int(metrics.get(name, 0)) for name in MERGE_METRICS}


def merge_metrics_of(spark: SparkSession, path: str) -> Callable[[Any, Any], dict[str, int]]:
    """An ``observe`` that keeps the table's newest MERGE metrics after each run."""
    return lambda prepared, result: last_merge_metrics(spark, path)


def restore_all(spark: SparkSession, tables: Tables, versions: dict[str, int]) -> None:
    """Put each named table of ``tables`` back to its version."""
    for name, version in versions.items():
        restore(spark, tables.path(name), version)


def data_files(spark: SparkSession, path: str, key_range: tuple[str, str] | None = None) -> int:
    """Data files of the table's current snapshot; with ``key_range``, those whose keys' span overlaps it.

    A file's key span is what its Delta min/max statistics hold, so the second figure is the set of
    files data skipping leaves a MERGE to scan when its condition bounds the key to ``key_range``.
    """
    files = (
        spark.read.format("delta")
        .load(path)
        .groupBy(F.col("_metadata.file_path"))
        .agg(F.min(KEY).alias("low"), F.max(KEY).alias("high"))
    )
    if key_range is not None:
        low, high = key_range
        files = files.where((F.col("high") >= low) & (F.col("low") <= high))
    return files.count()


@dataclass(frozen=True)
class Tables:
    """The tables of one measurement, under ``root``."""

    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)


def build_ours(
    spark: SparkSession, tables: Tables, rows: int, rows_per_file: int, history_events: int = HISTORY_EVENTS
) -> dict[str, int]:
    """Our target (clustered by key, deletion vectors) holding ``rows`` orders, and their history.

    The history holds ``history_events`` events per order, as production's does after a few status
    changes: each order's latest (the target's row) and older ones a day apart, appended one
    generation after another as batches append them.
    """
    target, history = tables.path("target"), tables.path("history")
    create_tables(spark, tables)
    frame = target_frame(spark, rows, math.ceil(rows / rows_per_file))
    for older in range(history_events - 1, 0, -1):
        earlier = F.col(EVENT_TIME) - F.make_dt_interval(F.lit(older))
        frame.withColumn(EVENT_TIME, earlier).write.format("delta").mode("append").save(history)
    for path in (target, history):
        frame.write.format("delta").mode("append").save(path)
    return {"target": table_version(spark, target), "history": table_version(spark, history)}


def create_tables(spark: SparkSession, tables: Tables) -> None:
    """Our tables as the jobs create them: an empty batch (a header-only file) staged and merged."""
    empty = tables.root / "empty" / "header_only.csv"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_text(",".join(HEADER) + "\n", encoding="utf-8")
    stage(spark, tables, [str(empty)], "create-tables")
    merge(spark, tables, "create-tables")


def build_baseline(spark: SparkSession, path: str, rows: int, rows_per_file: int) -> int:
    """A plain Delta table as ``saveAsTable`` makes it: no clustering, no deletion vectors."""
    target_frame(spark, rows, math.ceil(rows / rows_per_file)).write.format("delta").save(path)
    return table_version(spark, path)


def write_batch(root: Path, shape: BatchShape, files: int = BATCH_FILES) -> list[str]:
    """The batch's CSV files (written once per shape)."""
    directory = root / f"csv_{shape.target_rows}_{shape.rows}_{files}_{shape.recent_fraction}"
    done = directory / "_done"
    if not done.exists():
        write_csv_files(shape.events(), directory, files)
        done.touch()
    return [str(path) for path in sorted(directory.glob("*.csv"))]


def stage(spark: SparkSession, tables: Tables, paths: list[str], batch_id: str) -> dict:
    """Run our stage job on ``paths``."""
    return stage_orders(
        spark,
        [{"uri": p} for p in paths],
        batch_id,
        tables.path("staging"),
        tables.path("rejects"),
        tables.path("audit"),
    )


def merge(spark: SparkSession, tables: Tables, batch_id: str) -> dict:
    """Run our merge job for ``batch_id``."""
    return merge_orders(
        spark,
        batch_id,
        tables.path("staging"),
        tables.path("target"),
        tables.path("history"),
        tables.path("audit"),
    )


def baseline_merge(spark: SparkSession, staging: str, batch_id: str, target: str) -> None:
    """A plain key-equality MERGE of the staged batch: no key-range predicate, no newer-only guard."""
    spark.sql(f"SELECT * FROM {delta_sql(staging)}").where(F.col("_batch_id") == batch_id).select(
        *TARGET_COLUMNS
    ).createOrReplaceTempView("bench_source")
    spark.sql(
        f"MERGE INTO {delta_sql(target)} AS t USING bench_source AS s ON t.{KEY} = s.{KEY} "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
    )


def merge_scaling(
    spark: SparkSession,
    root: Path,
    rows: int,
    batch_rows: int,
    repeats: int,
    rows_per_file: int,
    history_events: int = HISTORY_EVENTS,
    peers: bool = False,
) -> dict:
    """Merge one staged batch of ``batch_rows`` into targets of ``rows``: our merge job against the baseline.

    Then our merge job once more with a batch of new and recent orders only (no random older ones),
    the case where the key-range predicate can skip most of the target. With ``peers``, the same
    batch end to end against the original notebooks, and delta-rs's MERGE of the same staged rows.
    """
    tables = Tables(root / f"scaling_{rows}")
    built = build_ours(spark, tables, rows, rows_per_file, history_events)
    baseline = tables.path("baseline")
    baseline_version = build_baseline(spark, baseline, rows, rows_per_file)
    paths = write_batch(root, BatchShape(rows, batch_rows))
    batch_id = f"bench-{rows}"
    staged = stage(spark, tables, paths, batch_id)
    result: dict[str, Any] = {
        "target_rows": rows,
        "batch_rows": batch_rows,
        "rows_staged": staged["rows_staged"],
        "target_files": data_files(spark, tables.path("target")),
        "files_scanned_ours": data_files(spark, tables.path("target"), staged_key_range(spark, tables, batch_id)),
        "files_scanned_baseline": data_files(spark, baseline),
    }
    ours = Side(
        "ours",
        lambda _: merge(spark, tables, batch_id),
        lambda run: restore_all(spark, tables, built),
        merge_metrics_of(spark, tables.path("target")),
    )
    runs = side_by_side(
        repeats,
        ours,
        Side(
            "baseline",
            lambda _: baseline_merge(spark, tables.path("staging"), batch_id, baseline),
            lambda run: restore(spark, baseline, baseline_version),
            merge_metrics_of(spark, baseline),
        ),
    )
    for side in ("ours", "baseline"):
        result[f"{side}_s"] = runs[side].seconds
        result[f"{side}_target_merge_s"] = [metrics["executionTimeMs"] / 1000 for metrics in runs[side].observed]
        result[f"{side}_metrics"] = runs[side].observed[-1]
    result.update(
        merge_job=runs["ours"].last,
        write_amplification_ours=round(result["ours_metrics"]["numOutputRows"] / batch_rows, 3),
        write_amplification_baseline=round(result["baseline_metrics"]["numOutputRows"] / batch_rows, 3),
    )
    for name in ("ours_s", "ours_target_merge_s", "baseline_s", "baseline_target_merge_s"):
        result[name.replace("_s", "_median_s")] = median(result[name])

    local_id = f"bench-{rows}-local"
    stage(spark, tables, write_batch(root, BatchShape(rows, batch_rows, recent_fraction=0.90)), local_id)
    restore(spark, tables.path("target"), built["target"])  # count the files the merge will meet
    files_scanned = data_files(spark, tables.path("target"), staged_key_range(spark, tables, local_id))
    local_runs = side_by_side(repeats, replace(ours, action=lambda _: merge(spark, tables, local_id)))["ours"]
    local_merge_s = [metrics["executionTimeMs"] / 1000 for metrics in local_runs.observed]
    result["local_batch"] = {
        "files_scanned": files_scanned,
        "seconds": local_runs.seconds,
        "target_merge_s": local_merge_s,
        "metrics": local_runs.observed[-1],
        "median_s": local_runs.median_s,
        "target_merge_median_s": median(local_merge_s),
    }
    result["history_rows"] = rows * history_events
    result["job_to_target_merge"] = round(result["ours_median_s"] / result["ours_target_merge_median_s"], 2)
    if peers:
        result["delta_rs"] = delta_rs_merge(spark, tables, baseline, baseline_version, batch_id, repeats)
        result["versus_original"] = notebooks_on_batch(spark, tables, built, paths, rows, repeats, rows_per_file)
    return result


def delta_rs_merge(
    spark: SparkSession, tables: Tables, baseline: str, baseline_version: int, batch_id: str, repeats: int
) -> dict:
    """delta-rs (``deltalake``) merging the same staged rows into the baseline's copy of the target, latest wins.

    The baseline is a plain Delta table (no deletion vectors, no clustering), which delta-rs writes; its
    MERGE is copy-on-write. Timed from a pyarrow table of the staged rows already in memory.
    """
    from deltalake import DeltaTable

    source = (
        spark.read.format("delta").load(tables.path("staging")).where(F.col("_batch_id") == batch_id)
        .select(*TARGET_COLUMNS).toArrow()
    )  # fmt: skip

    def opened(run: int) -> DeltaTable:
        restore(spark, baseline, baseline_version)
        return DeltaTable(baseline)

    def latest_wins(table: DeltaTable) -> dict:
        return (
            table.merge(source, predicate=f"t.{KEY} = s.{KEY}", source_alias="s", target_alias="t")
            .when_matched_update_all(predicate=f"s.{EVENT_TIME} > t.{EVENT_TIME}")
            .when_not_matched_insert_all()
            .execute()
        )

    runs = side_by_side(repeats, Side("delta-rs", latest_wins, opened))["delta-rs"]
    restore(spark, baseline, baseline_version)
    metrics = {name: runs.last.get(name) for name in DELTA_RS_METRICS}
    return {"seconds": runs.seconds, "metrics": metrics, "median_s": runs.median_s}


def notebooks_on_batch(
    spark: SparkSession,
    tables: Tables,
    built: dict[str, int],
    paths: list[str],
    rows: int,
    repeats: int,
    rows_per_file: int,
    prefix: str = "e2e",
) -> dict:
    """The batch end to end (stage and merge) by us and by the original notebooks, into the same target rows.

    Ours loads into ``tables`` (put back to ``built`` before each run); the notebooks into a copy of the
    same ``rows`` target rows in their own shape. Batch ids are ``<prefix>-<run>``.
    """
    original = tables.path("original_target")
    original_target(target_frame(spark, rows, math.ceil(rows / rows_per_file))).write.format("delta").save(original)
    original_version = table_version(spark, original)

    def put_back(run: int) -> str:
        restore_all(spark, tables, built)
        return f"{prefix}-{run}"

    runs = side_by_side(
        repeats,
        Side("ours", lambda batch: (stage(spark, tables, paths, batch), merge(spark, tables, batch)), put_back),
        Side(
            "original",
            lambda _: original_load(spark, paths, tables.path("original_staging"), original),
            lambda run: restore(spark, original, original_version),
        ),
    )
    result: dict[str, Any] = {f"{side}_s": runs[side].seconds for side in ("ours", "original")}
    result["ours_damage"] = damage(spark, tables.path("target"), built["target"])
    result["original_damage"] = damage(spark, original, original_version)
    result["ours_median_s"] = runs["ours"].median_s
    result["original_median_s"] = runs["original"].median_s
    result["speedup"] = round(result["original_median_s"] / result["ours_median_s"], 2)
    return result


def staged_key_range(spark: SparkSession, tables: Tables, batch_id: str) -> tuple[str, str]:
    """The smallest and greatest key of a staged batch: the range the merge's predicate bounds."""
    staging = spark.read.format("delta").load(tables.path("staging")).where(F.col("_batch_id") == batch_id)
    low, high = staging.agg(F.min(KEY), F.max(KEY)).collect()[0]
    return low, high


def staging_floor(spark: SparkSession, root: Path, paths: list[str], repeats: int) -> dict:
    """Our stage job against a plain typed ``read.csv().write.parquet()`` and pyarrow, on the same files."""
    tables = Tables(root / "staging_floor")
    runs = side_by_side(
        repeats,
        Side("ours", lambda run: stage(spark, tables, paths, f"floor-{run}")),
        Side("spark_floor", lambda _: spark_floor(spark, paths, str(tables.root / "floor.parquet"))),
        Side("contract_minimum", lambda run: contract_minimum(spark, paths, tables.path("minimum"), f"floor-{run}")),
        Side("pyarrow", lambda _: pyarrow_csv_to_parquet(paths, tables.root / "pyarrow.parquet")),
    )
    result: dict[str, Any] = {"rows": runs["ours"].last["rows_read"], "files": len(paths)}
    for side, side_runs in runs.items():
        result[f"{side}_s"] = side_runs.seconds
        result[f"{side}_median_s"] = side_runs.median_s
    result["ratio_ours_to_floor"] = round(result["ours_median_s"] / result["spark_floor_median_s"], 2)
    result["ratio_minimum_to_floor"] = round(result["contract_minimum_median_s"] / result["spark_floor_median_s"], 2)
    return result


def contract_minimum(spark: SparkSession, paths: list[str], staging: str, batch_id: str) -> None:
    """The least any stage job under the contract does: no validation, no per-file counts, rejects or audit.

    It reads the files once as the stage job must (typed, quoted line breaks allowed, so a file is not
    split), keeps each key's latest event (time, then content) with all its events nested, and replaces
    the batch's partition of a Delta staging table. Written here with plain Spark, in one aggregation:
    not the stage job's own code.
    """
    event = F.struct(*TARGET_COLUMNS)
    collapsed = (
        spark.read.schema(FLOOR_SCHEMA)
        .options(header=True, multiLine=True)
        .csv(paths)
        .select(
            *ORDER_COLUMNS,
            F.lit(None).cast("string").alias(RESCUED_DATA),
            F.col("_metadata.file_path").alias(SOURCE_FILE),
            F.monotonically_increasing_id().alias(LINE_NUMBER),
            F.lit(batch_id).alias(BATCH_ID),
            F.current_timestamp().alias(INGESTED_AT),
        )
        .groupBy(KEY)
        .agg(
            F.max_by(event, F.struct(EVENT_TIME, *EVENT_CONTENT)).alias("latest"),
            F.collect_list(event).alias(SUPERSEDED_EVENTS),
            (F.count(F.lit(1)) - 1).cast("int").alias(ROWS_COLLAPSED),
        )
        .select("latest.*", SUPERSEDED_EVENTS, ROWS_COLLAPSED)
    )
    writer = collapsed.write.format("delta").mode("overwrite").option("replaceWhere", f"{BATCH_ID} = '{batch_id}'")
    if not Path(staging).exists():
        writer = writer.partitionBy(BATCH_ID).option("delta.dataSkippingNumIndexedCols", "0")
    writer.save(staging)


def spark_floor(spark: SparkSession, paths: list[str], out: str) -> None:
    """Spark's plain typed CSV to Parquet: the floor any staging of these files stands on."""
    spark.read.schema(FLOOR_SCHEMA).option("header", True).csv(paths).write.mode("overwrite").parquet(out)


def seed_stage(spark: SparkSession, root: Path, seed_files: list[str], repeats: int) -> dict:
    """The stage job on the five seed files in a warm session: seconds, Spark jobs and Delta commits per run."""
    tables = Tables(root / "seed_stage")
    names = ("staging", "rejects", "audit")
    stage(spark, tables, seed_files, "seed-warm-up")  # creates the tables: later runs meet them as production does
    prepare, observe = work_counted(spark, tables, names, "seed-stage")
    staging = Side("stage", lambda prepared: stage(spark, tables, seed_files, f"seed-{prepared[0]}"), prepare, observe)
    return counted_result(len(seed_files), side_by_side(repeats, staging)["stage"])


def seed_merge(spark: SparkSession, root: Path, seed_files: list[str], repeats: int) -> dict:
    """The merge job on the five seed files in a warm session: seconds, Spark jobs and Delta commits per run.

    Each run loads the staged seed batch into the empty target and history (put back between runs).
    """
    tables = Tables(root / "seed_merge")
    names = ("target", "history", "audit")
    stage(spark, tables, seed_files, "seed-warm-up")
    merge(spark, tables, "seed-warm-up")  # creates the tables and warms the session
    empty = {name: 0 for name in ("target", "history")}  # version 0: created, no rows
    start_counting, observe = work_counted(spark, tables, names, "seed-merge")

    def prepare(run: int) -> tuple:
        stage(spark, tables, seed_files, f"seed-{run}")
        restore_all(spark, tables, empty)
        return start_counting(run)

    merging = Side("merge", lambda prepared: merge(spark, tables, f"seed-{prepared[0]}"), prepare, observe)
    runs = side_by_side(repeats, merging)["merge"]
    return {**counted_result(len(seed_files), runs), "rows_inserted": runs.last["rows_inserted"]}


def counted_result(files: int, runs: Runs) -> dict[str, Any]:
    """A warm-session run's figures: seconds, and the Spark jobs and Delta commits of each run."""
    return {
        "files": files,
        "seconds": runs.seconds,
        "spark_jobs": [jobs for jobs, _ in runs.observed],
        "delta_commits": [commits for _, commits in runs.observed],
        "median_s": runs.median_s,
    }


def _version_or_none(spark: SparkSession, path: str) -> int | None:
    return table_version(spark, path) if Path(path).exists() else None


def large_file(spark: SparkSession, root: Path, rows: int, repeats: int) -> dict:
    """One large file (wide rows, as a day's single export would be) against the floor on the same file.

    A file that may hold quoted line breaks cannot be split, so the stage job reads it in one task
    while the floor, which assumes none, splits it across cores.
    """
    tables = Tables(root / "large_file")
    directory = root / f"large_{rows}"
    if not (directory / "_done").exists():
        events = ((*row[:5], f"{row[5]} {'x' * 760}", row[6]) for row in BatchShape(1_000_000, rows, seed=11).events())
        write_csv_files(events, directory, files=1, stem="large")
        (directory / "_done").touch()
    paths = [str(path) for path in sorted(directory.glob("*.csv"))]
    runs = side_by_side(
        repeats,
        Side("ours", lambda run: stage(spark, tables, paths, f"large-{run}")),
        Side("spark_floor", lambda _: spark_floor(spark, paths, str(tables.root / "floor"))),
    )
    result: dict[str, Any] = {"bytes": Path(paths[0]).stat().st_size, "rows": rows}
    for side, side_runs in runs.items():
        result[f"{side}_s"] = side_runs.seconds
        result[f"{side}_median_s"] = side_runs.median_s
    result["ratio_ours_to_floor"] = round(result["ours_median_s"] / result["spark_floor_median_s"], 2)
    return result


def pyarrow_csv_to_parquet(paths: list[str], out: Path) -> int:
    """Read the CSV files with their contract types and write one Parquet file; return the rows."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    types = {
        "order_num": pa.int64(),
        "pck_recieved_date": pa.date32(),
        "package_deliver_date": pa.date32(),
        "last_update_timestamp": pa.timestamp("us"),
    }
    options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    table = pa.concat_tables([pacsv.read_csv(path, convert_options=options) for path in paths])
    pq.write_table(table, out)
    return table.num_rows


def versus_original(
    spark: SparkSession, root: Path, rows: int, batch_rows: int, repeats: int, rows_per_file: int
) -> dict:
    """Our stage and merge against the notebooks' load, on the same batch and the same target."""
    tables = Tables(root / "versus_original")
    built = build_ours(spark, tables, rows, rows_per_file)
    paths = write_batch(root, BatchShape(rows, batch_rows))
    measured = notebooks_on_batch(spark, tables, built, paths, rows, repeats, rows_per_file, prefix="vs")
    return {"target_rows": rows, "batch_rows": batch_rows, **measured}


def small_files(spark: SparkSession, root: Path, total_rows: int, file_count: int, repeats: int) -> dict:
    """The stage job on ``file_count`` small files against one file of the same rows."""
    tables = Tables(root / "small_files")
    shape = BatchShape(0, total_rows)
    many = write_batch(root, shape, file_count)
    one = write_batch(root, shape, 1)
    runs = side_by_side(
        repeats,
        Side("one", lambda run: stage(spark, tables, one, f"one-{run}")),
        Side("many", lambda run: stage(spark, tables, many, f"many-{run}")),
    )
    result: dict[str, Any] = {"rows": total_rows, "files": file_count}
    for side, side_runs in runs.items():
        result[f"{side}_s"] = side_runs.seconds
        result[f"{side}_median_s"] = side_runs.median_s
    result["per_file_ms"] = round((result["many_median_s"] - result["one_median_s"]) / (file_count - 1) * 1000, 1)
    return result


def experiments(
    spark: SparkSession, root: Path, rows: int, batch_rows: int, repeats: int, rows_per_file: int
) -> list[dict]:
    """The merge job under each layout and setting we tried; its target MERGE's own time is in the metrics."""
    tables = Tables(root / f"experiments_{rows}")
    built = build_ours(spark, tables, rows, rows_per_file)
    target, history = tables.path("target"), tables.path("history")
    paths = write_batch(root, BatchShape(rows, batch_rows))
    stage(spark, tables, paths, "exp")

    def run(
        name: str,
        note: str,
        conf: dict[str, str] | None = None,
        setup: str = "",
        table: str = target,
        start: int = built["target"],
    ) -> dict:

        def prepare(run: int) -> None:
            restore(spark, table, start)
            restore(spark, history, built["history"])
            if setup:
                spark.sql(setup.format(target=delta_sql(table)))

        def action(_: None) -> dict:
            with session_conf(spark, conf or {}):
                return merge_orders(spark, "exp", tables.path("staging"), table, history, tables.path("audit"))

        runs = side_by_side(repeats, Side(name, action, prepare, merge_metrics_of(spark, table)))[name]
        return {
            "name": name,
            "note": note,
            "seconds": runs.seconds,
            "median_s": runs.median_s,
            "metrics": runs.observed[-1],
        }

    dv_off = "ALTER TABLE {target} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'false')"
    results = [
        run("kept: clustered, deletion vectors, key-range predicate", "the shipped settings"),
        run("no deletion vectors", "copy-on-write rewrite of touched files", setup=dv_off),
        run(
            "optimized writes + auto-compaction",
            "delta.optimizeWrite / autoCompact session defaults",
            conf={
                "spark.databricks.delta.optimizeWrite.enabled": "true",
                "spark.databricks.delta.autoCompact.enabled": "true",
            },
        ),
    ]
    default_partitions = spark.conf.get("spark.sql.shuffle.partitions")
    for partitions in ("1", "16", "64"):
        results.append(
            run(
                f"shuffle partitions {partitions}",
                f"default in this session: {default_partitions}",
                conf={"spark.sql.shuffle.partitions": partitions},
            )
        )
    # Layout: the same rows, files not sorted by key (as appends in arrival order would leave them).
    unsorted = Tables(root / f"experiments_{rows}_unsorted")
    create_tables(spark, unsorted)
    files = math.ceil(rows / rows_per_file)
    shuffled = unsorted.path("target")
    target_frame(spark, rows, files).repartition(files).write.format("delta").mode("append").save(shuffled)
    results.append(
        run(
            "layout: files not sorted by key",
            "same rows in random file order",
            table=shuffled,
            start=table_version(spark, shuffled),
        )
    )
    # Layout: OPTIMIZE (liquid clustering by key) of the kept layout into Delta's default file size.
    spark.sql(f"OPTIMIZE {delta_sql(target)}")
    results.append(
        run(
            "layout: OPTIMIZE (liquid clustering) to default file size",
            f"{data_files(spark, target)} files after OPTIMIZE",
            start=table_version(spark, target),
        )
    )
    return results


@contextmanager
def session_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """The session's settings changed to ``conf`` for the block, then put back."""
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def to_json(results: dict, path: Path) -> None:
    """Write the results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
