"""Jobs of different batches at once on the same tables, as overlapping backfill runs start them; odd keys."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyspark.sql import functions as F

from spark_jobs.load import TABLE_PROPERTIES
from spark_jobs.merge_plan import KeyRange
from spark_jobs.schema import BATCH_ID, TARGET_SCHEMA
from spark_jobs.session import conf_get
from spark_jobs.tables import (
    COMMIT_ATTEMPTS,
    TableNotCreated,
    _is_conflict,
    create_table_if_absent,
    error_condition,
    retry_on_conflict,
)
from tests.conftest import REPO, SEED_FILES, expected_latest, seed_rows, typed_business_row
from tests.spark_jobs.helpers import BUSINESS, HEADER, load_batch, read, write_csv
from tests.spark_jobs.test_cli import OPENLINEAGE_CONTEXT, run_cli

BARRIER = Path(__file__).parent / "barrier"  # its sitecustomize holds each job at a commit until all arrive


def _start(module: str, *args: str, barrier: dict[str, str] | None = None) -> subprocess.Popen:
    """One job in its own process and JVM, as a separate Databricks run would be."""
    env = {**os.environ, "ORDER_TRACKING_SPARK_MASTER": "local[1]", "ORDER_TRACKING_SPARK_DRIVER_MEMORY": "1g"}
    if barrier:
        env |= {"PYTHONPATH": os.pathsep.join([str(BARRIER), str(REPO)]), **barrier}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.processes
def test_two_stage_and_two_merge_jobs_of_different_batches_run_at_once(spark, tables, tmp_path):
    """Four command-line jobs, as Databricks or the local backend run them: fresh processes, JSON out.

    Each stage job reads a manifest; merge batch-c carries the OpenLineage context the provider injects.
    Each job waits at its main commit (the staging write, the target MERGE) until all four are there
    (``barrier/sitecustomize.py``): the four are certain to overlap, and the two MERGEs, released
    together onto the same target version, are certain to conflict, on any machine.
    """
    from spark_jobs.stage_orders import stage_orders

    # Batches C and D are staged first; the target and history do not exist yet, so the two merges
    # also race to create them.
    for batch, path in (("batch-c", SEED_FILES[3]), ("batch-d", SEED_FILES[4])):
        stage_orders(spark, [{"uri": str(path)}], batch, tables.staging, tables.rejects, tables.audit, 0.1)
    manifests = {batch: tmp_path / f"{batch}.json" for batch in ("batch-a", "batch-b")}
    for batch, paths in (("batch-a", SEED_FILES[:2]), ("batch-b", SEED_FILES[2:3])):
        listed = [{"uri": str(path), "size": path.stat().st_size} for path in paths]
        manifests[batch].write_text(json.dumps({"batch_id": batch, "files": listed}))
    common = ("--staging-table", tables.staging, "--audit-table", tables.audit)
    stage = ("--rejects-table", tables.rejects, *common)
    merge = ("--target-table", tables.target, "--history-table", tables.history, *common)
    met = tmp_path / "barrier"
    met.mkdir()
    barrier = {
        "ORDER_TRACKING_TEST_BARRIER": str(met),
        "ORDER_TRACKING_TEST_BARRIER_AT": f"^(MERGE into |replacing batch batch-[ab] in {re.escape(tables.staging)}$)",
        "ORDER_TRACKING_TEST_BARRIER_PARTIES": "4",
    }
    jobs = {
        "stage batch-a": _start(
            "spark_jobs.stage_orders",
            "--batch-id",
            "batch-a",
            *stage,
            "--manifest",
            str(manifests["batch-a"]),
            barrier=barrier,
        ),
        "stage batch-b": _start(
            "spark_jobs.stage_orders",
            "--batch-id",
            "batch-b",
            *stage,
            "--manifest",
            str(manifests["batch-b"]),
            barrier=barrier,
        ),
        "merge batch-c": _start(
            "spark_jobs.merge_orders",
            "--batch-id",
            "batch-c",
            *merge,
            f"--OPENLINEAGE_CONTEXT={OPENLINEAGE_CONTEXT}",
            barrier=barrier,
        ),
        "merge batch-d": _start("spark_jobs.merge_orders", "--batch-id", "batch-d", *merge, barrier=barrier),
    }
    outputs = {name: job.communicate(timeout=900) for name, job in jobs.items()}
    finished = {name: (jobs[name].returncode, *output) for name, output in outputs.items()}

    failures = {name: err.decode()[-3000:] for name, (code, _, err) in finished.items() if code != 0}
    assert failures == {}
    # All four were at their commit at once; at least one MERGE met the other's commit and was tried again.
    assert sorted(entry.split(" ", 1)[1].split(" ")[0:2] for entry in os.listdir(met)) == [
        ["MERGE", "into"],
        ["MERGE", "into"],
        ["replacing", "batch"],
        ["replacing", "batch"],
    ]
    retried = [
        name
        for name in ("merge batch-c", "merge batch-d")
        if f"MERGE into {tables.target} met a concurrent commit" in finished[name][2].decode()
    ]
    assert len(retried) >= 1
    results = {name: json.loads(out.decode().strip().splitlines()[-1]) for name, (_, out, _) in finished.items()}
    assert {name: result["result"] for name, result in results.items()} == dict.fromkeys(jobs, "succeeded")
    stage_a = results["stage batch-a"]
    rows_a = sum(1 for row in seed_rows() if row["_file"] in {path.name for path in SEED_FILES[:2]})
    assert (stage_a["status"], stage_a["rows_read"], stage_a["rows_rejected"]) == ("staged", rows_a, 0)
    assert [f["size"] for f in stage_a["files"]] == [path.stat().st_size for path in SEED_FILES[:2]]
    assert "OPENLINEAGE_CONTEXT from the submitting task: airflow/dag.merge_orders run 01a2" in (
        finished["merge batch-c"][2].decode()
    )
    staged = read(spark, tables.staging)
    staged_rows = {batch: staged.where(F.col(BATCH_ID) == f"batch-{batch}").count() for batch in "ab"}
    assert staged_rows == {"a": results["stage batch-a"]["rows_staged"], "b": results["stage batch-b"]["rows_staged"]}
    # Each merge accounted for every staged row against the target version its own MERGE wrote.
    for name, staged_batch in (("merge batch-c", "batch-c"), ("merge batch-d", "batch-d")):
        merged = results[name]
        parts = ("rows_inserted", "rows_updated", "rows_skipped_stale", "rows_unchanged")
        assert sum(merged[part] for part in parts) == merged["rows_staged"] > 0
        assert merged["rows_staged"] == staged.where(F.col(BATCH_ID) == staged_batch).count()

    # What Airflow runs when a run's output lost its metrics line: the same figures, from the audit record.
    code, reported, report_log = run_cli(
        "spark_jobs.batch_report", "--job=merge_orders", "--batch-id=batch-c", f"--audit-table={tables.audit}"
    )
    assert code == 0, report_log
    assert {key: value for key, value in reported.items() if key != "top_reject_reasons"} == {
        key: value for key, value in results["merge batch-c"].items() if key != "top_reject_reasons"
    }

    for batch in ("batch-a", "batch-b"):
        from spark_jobs.merge_orders import merge_orders

        merge_orders(spark, batch, tables.staging, tables.target, tables.history, tables.audit)

    # All five files are in, whatever order the batches committed in: the contract's latest per key.
    expected = sorted(typed_business_row(row) for row in expected_latest().values())
    assert sorted(tuple(row) for row in read(spark, tables.target).select(*BUSINESS).collect()) == expected
    events = {(row["tracking_num"], row["last_update_timestamp"]) for row in seed_rows()}
    assert read(spark, tables.history).count() == len(events)
    audit = {row["batch_id"]: row["status"] for row in read(spark, tables.audit).collect()}
    assert audit == dict.fromkeys(["batch-a", "batch-b", "batch-c", "batch-d"], "merged")


def test_keys_holding_quotes_and_backslashes_at_both_ends_of_the_range(spark, tables, tmp_path):
    low, high = "!'\\low\\'", "~\\'high'\\"
    rows = [(low, "In Transit"), ("M-1", "In Transit"), (high, "In Transit")]

    def batch(name: str, status: str, hour: int) -> Path:
        lines = [f'1,"{key}",2023-01-01,,{status},Somewhere,2023-01-01 {hour:02d}:00:00\n' for key, _ in rows]
        return write_csv(tmp_path, f"{name}.csv", HEADER + "".join(lines))

    spark.conf.set("spark.sql.parser.escapedStringLiterals", "true")
    try:
        load_batch(spark, tables, [batch("first", "In Transit", 9)], "quotes-1")
        _, merged = load_batch(spark, tables, [batch("second", "Delivered", 10)], "quotes-2")
    finally:
        spark.conf.unset("spark.sql.parser.escapedStringLiterals")

    assert (merged["rows_inserted"], merged["rows_updated"], merged["rows_staged"]) == (0, 3, 3)
    target = {row["tracking_num"]: row["status"] for row in read(spark, tables.target).collect()}
    assert target == {low: "Delivered", "M-1": "Delivered", high: "Delivered"}
    assert read(spark, tables.history).count() == 6


def test_key_range_bounds_are_values_not_sql_text(spark):
    frame = spark.createDataFrame([("a'b\\",), ("z",)], ["tracking_num"]).alias("t")

    inside = frame.where(KeyRange("a'b\\", "a'b\\").condition("t")).collect()
    inside_sql = frame.where(F.expr(KeyRange("a'b\\", "a'b\\").sql("t"))).collect()  # as the MERGEs write it

    assert [row["tracking_num"] for row in inside] == ["a'b\\"]
    assert [row["tracking_num"] for row in inside_sql] == ["a'b\\"]


def test_a_conflicting_commit_is_tried_again_up_to_the_bound(spark, monkeypatch):  # PySpark 3.5 needs the JVM
    from delta.exceptions import ConcurrentAppendException

    monkeypatch.setattr("spark_jobs.tables.time", SimpleNamespace(sleep=lambda seconds: None))
    calls = []

    def conflicts_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("[DELTA_CONCURRENT_APPEND] injected", "no JVM stack: raised by the test")
        return "committed"

    assert retry_on_conflict(conflicts_twice, "test commit") == "committed"
    assert len(calls) == 3

    def always_conflicts() -> str:
        calls.append(1)
        raise ConcurrentAppendException("[DELTA_CONCURRENT_APPEND] injected", "no JVM stack: raised by the test")

    calls.clear()
    with pytest.raises(ConcurrentAppendException):
        retry_on_conflict(always_conflicts, "test commit")
    assert len(calls) == COMMIT_ATTEMPTS


def test_a_merge_is_found_by_the_marker_in_its_condition_under_later_commits(spark, tmp_path):
    from spark_jobs.tables import merge_into, version_of_merge

    target = str(tmp_path / "t")
    spark.createDataFrame([(1, "a")], "id long, v string").write.format("delta").save(target)  # version 0

    def merge(marker: str, rows: list[tuple]) -> None:
        source = spark.createDataFrame(rows, "id long, v string").withColumn("_m", F.lit(marker))
        clauses = f"ON t.id = s.id AND s._m = '{marker}' WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)"
        merge_into(target, source, clauses)

    merge("0f1e2d3c", [(2, "b")])  # version 1
    merge("4b5a6978", [(3, "c")])  # version 2: the same shape of MERGE, another marker
    spark.createDataFrame([(4, "d")], "id long, v string").write.format("delta").mode("append").save(target)  # 3

    assert version_of_merge(spark, target, "0f1e2d3c") == (1, 3)
    assert version_of_merge(spark, target, "4b5a6978") == (2, 3)
    assert version_of_merge(spark, target, "4b5a6978", search=1) == (None, 3)
    assert version_of_merge(spark, target, "absent") == (None, 3)


def test_creating_a_path_table_whose_folder_another_creator_has_begun_is_tried_again(spark, tmp_path, monkeypatch):
    """The race the two merges above run into, made certain: the folder has a data file but no log yet.

    Delta takes the existing folder for an existing table and its CREATE TABLE IF NOT EXISTS does
    nothing; the job finds no table there and tries again after the pause (in which the other creator commits).
    """

    target = tmp_path / "orders"
    target.mkdir()
    (target / "part-00000-begun.parquet").write_bytes(b"written by the other creator before its first commit")
    pauses = []

    def other_creator_commits(seconds: float) -> None:
        pauses.append(seconds)
        (target / "part-00000-begun.parquet").unlink()
        spark.createDataFrame([], TARGET_SCHEMA).write.format("delta").save(str(target))

    # The job's own pauses only: py4j's threads sleep too.
    monkeypatch.setattr("spark_jobs.tables.time", SimpleNamespace(sleep=other_creator_commits))

    create_table_if_absent(spark, str(target), TARGET_SCHEMA, TABLE_PROPERTIES)

    assert len(pauses) == 1
    assert spark.read.format("delta").load(str(target)).columns == TARGET_SCHEMA.fieldNames()


def test_a_folder_that_never_becomes_a_delta_table_fails_the_creation_with_its_path(spark, tmp_path, monkeypatch):

    monkeypatch.setattr("spark_jobs.tables.time", SimpleNamespace(sleep=lambda seconds: None))
    target = tmp_path / "orders"
    target.mkdir()
    (target / "notes.txt").write_text("not a table")

    with pytest.raises(TableNotCreated, match=f"{target} holds files but no Delta table"):
        create_table_if_absent(spark, str(target), TARGET_SCHEMA, TABLE_PROPERTIES)


def test_the_creation_race_delta_reports_is_recognised_on_each_pyspark(spark, monkeypatch):
    """A managed table's non-empty folder raises the race's own condition (its message is the same), tried
    again until the tries are spent."""
    pauses = []
    monkeypatch.setattr("spark_jobs.tables.time", SimpleNamespace(sleep=pauses.append))

    name = f"begun_{uuid.uuid4().hex[:8]}"
    folder = Path(conf_get(spark, "spark.sql.warehouse.dir").removeprefix("file:")) / name
    folder.mkdir(parents=True)
    (folder / "part-00000-begun.parquet").write_bytes(b"written by the other creator before its first commit")
    try:
        with pytest.raises(Exception, match="is not empty and also not a Delta table") as raised:
            create_table_if_absent(spark, f"default.{name}", TARGET_SCHEMA, TABLE_PROPERTIES)
    finally:
        shutil.rmtree(folder)
    assert len(pauses) == COMMIT_ATTEMPTS - 1

    assert error_condition(raised.value) == "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION"
    assert _is_conflict(raised.value)


def test_ten_batches_write_their_audit_records_at_once(spark, tables, caplog):
    """The audit table is one unpartitioned table every batch of every run writes: ten writers at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from spark_jobs.contracts import BatchStatus, JobMetrics, Result
    from spark_jobs.load import AuditRecord, ensure_audit_table, upsert_audit

    def record(batch_id: str, status: BatchStatus, rows_read: int) -> AuditRecord:
        return AuditRecord(JobMetrics(Result.SUCCEEDED, batch_id, status=status, rows_read=rows_read))

    ensure_audit_table(spark, tables.audit)
    upsert_audit(spark, record("earlier", BatchStatus.MERGED, 1), tables.audit)
    ready = threading.Barrier(10)
    written: dict[str, tuple[float, float]] = {}

    def write(n: int) -> None:
        ready.wait()
        began = time.monotonic()
        upsert_audit(spark, record(f"batch-{n}", BatchStatus.STAGED, n), tables.audit)
        written[f"batch-{n}"] = (began, time.monotonic())

    with caplog.at_level("INFO", logger="order_tracking"), ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(write, range(10)))

    records = sorted((r["batch_id"], r["status"], r["rows_read"]) for r in read(spark, tables.audit).collect())
    assert records == sorted([("earlier", "merged", 1)] + [(f"batch-{n}", "staged", n) for n in range(10)])
    # They overlapped: every write began before any ended.
    assert max(began for began, _ in written.values()) < min(ended for _, ended in written.values())
    # Each record is replaced in its batch's own partition: no writer conflicted with another. On the
    # unpartitioned table the same ten writes conflicted 35-37 times, one of them up to its 8th and last try.
    assert [r.getMessage() for r in caplog.records if "met a concurrent commit" in r.getMessage()] == []
