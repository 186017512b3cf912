"""The benchmark at tiny sizes, for correctness only: what it measures and reports, never how fast."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from bench import cases, report
from bench.run import parse_args, run, size
from bench.workload import BatchShape


def test_sizes_parse_as_the_command_line_writes_them() -> None:
    assert [size(text) for text in ("16M", "250k", "1000", "1.5M")] == [16_000_000, 250_000, 1_000, 1_500_000]


def test_the_batch_shape_is_the_issues_mix() -> None:
    events = list(BatchShape(target_rows=20_000, rows=2_000).events())
    numbers = [int(event[0]) for event in events]
    assert len(events) == 2_000
    assert sum(n > 20_000 for n in numbers) == 199  # 10% of the 1,996 non-duplicate, non-stale rows are new
    assert sum(19_001 <= n <= 20_000 for n in numbers) >= 1_696  # 85% update the most recent 5%
    assert len(events) - len(set(events)) == 2  # one exact duplicate per thousand
    assert events == list(BatchShape(target_rows=20_000, rows=2_000).events())  # seeded


def test_the_timing_loop_runs_each_side_in_turn_with_its_set_up_untimed() -> None:
    calls: list[str] = []

    def side(name: str) -> cases.Side:
        return cases.Side(
            name,
            action=lambda prepared: calls.append(f"{name} run {prepared}") or f"{name} result {prepared}",
            prepare=lambda run: calls.append(f"{name} prepare {run}") or run * 10,
            observe=lambda prepared, result: (prepared, result),
        )

    runs = cases.side_by_side(2, side("a"), side("b"))

    assert calls == [
        "a prepare 0", "a run 0", "b prepare 0", "b run 0",
        "a prepare 1", "a run 10", "b prepare 1", "b run 10",
    ]  # fmt: skip
    assert runs["a"].observed == [(0, "a result 0"), (10, "a result 10")]
    assert runs["b"].last == "b result 10"
    assert runs["a"].median_s == cases.median(runs["a"].seconds)


def test_the_timing_loop_leaves_the_set_up_out_of_the_time() -> None:
    slow_set_up = cases.Side("a", action=lambda _: None, prepare=lambda run: time.sleep(0.5))

    runs = cases.side_by_side(1, slow_set_up)

    assert len(runs["a"].seconds) == 1
    assert runs["a"].seconds[0] < 0.5  # the half second of set-up is not in it


# The sizes make bench-smoke ran the command line with: one run of the benchmark is its smoke test.
TINY = shlex.split(
    "--sizes 20k,40k --batch-rows 2k --original-batch-rows 10k --rows-per-file 5k --small-files 20 "
    "--small-files-rows 2k --large-file-rows 2k --repeats 1 --skip-experiments"
)


@pytest.mark.bench  # about 6 min: make bench-smoke runs it (once, in CI), make test does not
def test_the_benchmark_at_tiny_sizes_measures_the_real_jobs_and_reports_them(spark, tmp_path) -> None:
    work = tmp_path / "work"
    args = parse_args([*TINY, "--work", str(work), "--out", str(tmp_path / "results.json")])
    results = run(args, spark)
    cases.to_json(results, tmp_path / "results.json")

    scaling = results["merge_scaling"][0]
    assert [case["target_rows"] for case in results["merge_scaling"]] == [20_000, 40_000]
    ours, baseline = scaling["ours_metrics"], scaling["baseline_metrics"]
    assert scaling["merge_job"]["rows_inserted"] == 199
    # The starting history: five events per order, each order's latest the target's row.
    history = spark.read.format("delta").load(str(work / "scaling_20000" / "history"))
    built = history.where("_batch_id = 'bench-target'")
    assert (built.count(), built.select("tracking_num").distinct().count()) == (100_000, 20_000)
    assert scaling["history_rows"] == 100_000
    # delta-rs, with the same latest-wins condition on the same staged rows, changes the same rows.
    assert scaling["delta_rs"]["metrics"]["num_target_rows_inserted"] == 199
    assert scaling["delta_rs"]["metrics"]["num_target_rows_updated"] == scaling["merge_job"]["rows_updated"]
    # The notebooks on the same batch: our load is clean; theirs keeps every in-batch duplicate.
    batch_keys = {event[1] for event in BatchShape(20_000, 2_000).events()}
    assert len(batch_keys) == 20_199 - 20_000 + scaling["merge_job"]["rows_updated"] + sum(
        scaling["merge_job"][name] for name in ("rows_skipped_stale", "rows_unchanged")
    )
    versus_batch = scaling["versus_original"]
    clean = {"rows": 20_199, "keys": 20_199, "duplicate_rows": 0, "keys_gone_back_in_time": 0}
    assert versus_batch["ours_damage"] == clean
    assert versus_batch["original_damage"]["keys"] == 20_199
    assert versus_batch["original_damage"]["duplicate_rows"] == 2_000 - len(batch_keys)
    assert scaling["target_files"] == scaling["files_scanned_baseline"] == 4
    # Deletion vectors: touched files are marked, not rewritten; the baseline copies every touched file.
    assert (ours["numTargetFilesRemoved"], ours["numTargetRowsCopied"]) == (0, 0)
    assert ours["numTargetDeletionVectorsAdded"] == 4
    assert baseline["numTargetFilesRemoved"] == 4
    assert baseline["numTargetRowsCopied"] == 20_000 - baseline["numTargetRowsUpdated"]
    assert scaling["write_amplification_ours"] == round(ours["numOutputRows"] / 2_000, 3) < 1
    assert scaling["write_amplification_baseline"] > 10
    # New and recent orders only: the key-range predicate leaves one of the four files to scan.
    assert scaling["local_batch"]["files_scanned"] == 1
    assert scaling["local_batch"]["metrics"]["numTargetDeletionVectorsAdded"] == 1

    versus = results["versus_original"]
    assert versus["ours_damage"] == {"rows": 20_998, "keys": 20_998, "duplicate_rows": 0, "keys_gone_back_in_time": 0}
    assert versus["original_damage"] == {
        "rows": 28_498,
        "keys": 20_998,
        "duplicate_rows": 7_500,
        "keys_gone_back_in_time": 10,
    }

    floor = results["staging_floor"]
    assert floor["rows"] == 10_000
    assert spark.read.parquet(str(work / "staging_floor" / "floor.parquet")).count() == 10_000
    assert floor["ratio_ours_to_floor"] == round(floor["ours_median_s"] / floor["spark_floor_median_s"], 2)
    # The contract minimum collapses the same rows to the same keys as the stage job (the batch has no rejects).
    root = work / "staging_floor"
    minimum, staged = (spark.read.format("delta").load(str(root / name)) for name in ("minimum", "staging"))
    assert minimum.select("tracking_num").distinct().count() == minimum.count()
    assert sorted(minimum.select("tracking_num", "last_update_timestamp").collect()) == sorted(
        staged.select("tracking_num", "last_update_timestamp").collect()
    )

    seed_merge, seed = results["seed_merge"], results["seed_stage"]
    # Per run (three at least): 23 orders inserted; one commit each to the history, the target and the audit record.
    assert (seed_merge["rows_inserted"], seed_merge["delta_commits"]) == (23, [3, 3, 3])
    # Per run: the staging commit and the audit record's commit; no rejects, and no rejects table to clear.
    assert seed["delta_commits"] == [2, 2, 2]
    assert min(seed["spark_jobs"]) >= 2  # the per-file counts and the staging write at least
    large = results["large_file"]
    assert large["bytes"] > 2_000 * 760
    assert spark.read.parquet(str(work / "large_file" / "floor")).count() == 2_000
    assert (results["small_files"]["files"], results["small_files"]["rows"]) == (20, 2_000)
    fixed = results["fixed_costs"]
    assert fixed["session_start"]["cold_median_s"] > fixed["session_start"]["warm_median_s"] > 0
    assert fixed["dag_parse"]["provider_imports_median_s"] > 0

    largest = results["merge_scaling"][-1]
    assert results["goals"]["merge_scaling_ratio"]["value"] == round(
        largest["ours_median_s"] / scaling["ours_median_s"], 2
    )
    assert results["goals"]["speedup_over_original"]["value"] == versus["speedup"]
    assert results["goals"]["seed_stage_s"]["value"] == seed["median_s"]
    assert results["goals"]["seed_merge_s"]["value"] == seed_merge["median_s"]
    assert results["goals"]["job_to_target_merge_largest"]["value"] == largest["job_to_target_merge"]
    assert results["goals"]["notebooks_to_ours_largest"]["value"] == largest["versus_original"]["speedup"]
    assert results["goals"]["ours_to_delta_rs_largest"]["value"] == round(
        largest["ours_median_s"] / largest["delta_rs"]["median_s"], 2
    )
    assert results["goals"]["large_file_to_floor"]["value"] == large["ratio_ours_to_floor"]
    assert json.loads((tmp_path / "results.json").read_text())["goals"] == json.loads(json.dumps(results["goals"]))
    section = report.markdown(results, "merge_scaling.png")
    assert "| ours (stage + merge) |" in section
    assert "| original notebooks |" in section
    assert "7500" in section
    assert f"Delta commits per run {seed['delta_commits']}" in section
    report.plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
