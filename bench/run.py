"""Run the benchmark and write its JSON results: ``make bench`` (full) or ``make bench-smoke`` (tiny, CI).

    python -m bench.run [--sizes 1M,4M,16M] [--batch-rows 100000] [--repeats 3] [--out FILE]

Everything runs in one process and one Spark session, so the ratios compare runs made side by side.
Session start and DAG parsing are measured in fresh child processes, as they happen in production.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "order_tracking_incremental_load.py"
SEED_FILES = sorted((REPO / "tests" / "data" / "seed").glob("order_tracking_*.csv"))
# The modules the DAG file and its plugin import from Airflow and the providers.
PROVIDER_MODULES = (
    "airflow.sdk",
    "airflow.providers.databricks.operators.databricks",
    "airflow.providers.google.cloud.hooks.gcs",
    "airflow.providers.google.cloud.sensors.gcs",
    "airflow.providers.google.cloud.triggers.gcs",
)


def size(text: str) -> int:
    """``16M`` -> 16000000, ``250k`` -> 250000, ``1000`` -> 1000."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def session_start_probe() -> dict[str, float]:
    """In this fresh process: a cold session (JVM start, Delta jars resolved) and a warm one (same JVM)."""
    from spark_jobs.session import build_local_session

    def start() -> float:
        started = time.perf_counter()
        spark = build_local_session("bench-session-start")
        spark.sql("SELECT 1").collect()
        seconds = time.perf_counter() - started
        spark.stop()
        return seconds

    return {"cold_s": start(), "warm_s": start()}


def dag_parse_probe() -> dict[str, float]:
    """In this fresh process: the provider imports, then parsing the DAG file on top of them."""
    import importlib

    started = time.perf_counter()
    for module in PROVIDER_MODULES:
        importlib.import_module(module)
    imports = time.perf_counter() - started
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(DAG_FILE))
    parse = time.perf_counter() - started
    if bag.import_errors or not bag.dags:
        raise RuntimeError(f"the DAG file did not parse: {bag.import_errors}")
    return {"provider_imports_s": imports, "dag_parse_beyond_imports_s": parse}


def in_child(probe: str, repeats: int, env: dict[str, str] | None = None) -> list[dict[str, float]]:
    """Run ``probe`` in ``repeats`` fresh Python processes; return each one's figures."""
    runs = []
    for _ in range(repeats):
        output = subprocess.run(
            [sys.executable, "-m", "bench.run", "--probe", probe],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    return runs


def fixed_costs(repeats: int) -> dict[str, Any]:
    """Session start (cold, warm) and DAG parse time, each the median over fresh processes."""
    from bench.cases import median

    sessions = in_child("session-start", repeats)
    airflow_home = tempfile.mkdtemp(prefix="bench-airflow-")
    parses = in_child(
        "dag-parse",
        repeats,
        {
            "AIRFLOW_HOME": airflow_home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins"), os.environ.get("PYTHONPATH")])),
            # The databricks backend (the default) has no default wheel: a path as make deploy prints it.
            "ORDER_TRACKING_WHEEL_URI": "/Volumes/main/order_tracking/artifacts/"
            "order_tracking_spark_jobs-0.1.0-py3-none-any.whl",
        },
    )
    shutil.rmtree(airflow_home, ignore_errors=True)
    return {
        "session_start": {
            "runs": sessions,
            "cold_median_s": median([r["cold_s"] for r in sessions]),
            "warm_median_s": median([r["warm_s"] for r in sessions]),
        },
        "dag_parse": {
            "runs": parses,
            "provider_imports_median_s": median([r["provider_imports_s"] for r in parses]),
            "dag_parse_beyond_imports_median_s": median([r["dag_parse_beyond_imports_s"] for r in parses]),
        },
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    from pyspark import __version__ as pyspark_version

    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = meminfo.read_text().splitlines()[0].split(":")[1].strip()
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line.split(":")[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = models[0] if models else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "pyspark": pyspark_version,
        "java": subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0],
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace, session: Any = None) -> dict[str, Any]:
    """Every measurement, in one session (``session``, else one built here and stopped at the end), in a fixed
    order."""
    from bench import cases
    from spark_jobs.session import build_local_session

    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "sizes": args.sizes,
            "batch_rows": args.batch_rows,
            "original_batch_rows": args.original_batch_rows,
            "rows_per_file": args.rows_per_file,
            "history_events": args.history_events,
            "repeats": args.repeats,
        },
    }
    results["fixed_costs"] = fixed_costs(args.repeats)
    spark = session or build_local_session("order-tracking-bench", {"spark.sql.warehouse.dir": str(work / "warehouse")})
    results["settings"]["shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
    results["settings"]["master"] = spark.sparkContext.master

    def done(what: str) -> None:
        print(f"{time.perf_counter() - started:.0f} s: {what} done", file=sys.stderr, flush=True)

    results["merge_scaling"] = []
    for i, rows in enumerate(args.sizes):
        peers = i in (0, len(args.sizes) - 1)  # the notebooks and delta-rs at the smallest and largest size
        results["merge_scaling"].append(
            cases.merge_scaling(
                spark, work, rows, args.batch_rows, args.repeats, args.rows_per_file, args.history_events, peers
            )
        )
        done(f"merge scaling N={rows}")
    original_paths = cases.write_batch(work, cases.BatchShape(args.sizes[0], args.original_batch_rows))
    results["staging_floor"] = cases.staging_floor(spark, work, original_paths, args.repeats)
    done("staging versus floor")
    results["versus_original"] = cases.versus_original(
        spark, work, args.sizes[0], args.original_batch_rows, args.repeats, args.rows_per_file
    )
    done("versus the original notebooks")
    results["seed_stage"] = cases.seed_stage(spark, work, [str(p) for p in SEED_FILES], max(args.repeats, 3))
    results["seed_merge"] = cases.seed_merge(spark, work, [str(p) for p in SEED_FILES], max(args.repeats, 3))
    done("seed files, warm")
    results["large_file"] = cases.large_file(spark, work, args.large_file_rows, args.repeats)
    done("one large file")
    results["small_files"] = cases.small_files(spark, work, args.small_files_rows, args.small_files, args.repeats)
    done("small files")
    if not args.skip_experiments:
        experiment_rows = args.sizes[min(1, len(args.sizes) - 1)]
        results["experiments"] = {
            "target_rows": experiment_rows,
            "runs": cases.experiments(spark, work, experiment_rows, args.batch_rows, args.repeats, args.rows_per_file),
        }
        done("experiments")
    if session is None:
        spark.stop()
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["goals"] = goals(results)
    return results


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """Each goal of the benchmark with its measured value."""
    scaling = results["merge_scaling"]
    smallest, largest = scaling[0], scaling[-1]
    worst_amplification = max(s["write_amplification_ours"] for s in scaling)
    scaling_ratio = round(largest["ours_median_s"] / smallest["ours_median_s"], 2)
    target_merge_ratio = round(largest["ours_target_merge_median_s"] / smallest["ours_target_merge_median_s"], 2)
    baseline_ratio = round(largest["baseline_median_s"] / smallest["baseline_median_s"], 2)
    local = {}
    if "local_batch" in largest:
        value = round(largest["local_batch"]["median_s"] / smallest["local_batch"]["median_s"], 2)
        local = {"local_batch_scaling_ratio": {"value": value, "goal": "<= 1.5", "met": value <= 1.5}}
    return {
        **local,
        "merge_scaling_ratio": {"value": scaling_ratio, "goal": "<= 1.5", "met": scaling_ratio <= 1.5},
        "target_merge_scaling_ratio": {"value": target_merge_ratio, "goal": "<= 1.5", "met": target_merge_ratio <= 1.5},
        "baseline_scaling_ratio": {"value": baseline_ratio, "goal": "contrast", "met": None},
        "write_amplification": {"value": worst_amplification, "goal": "<= 3", "met": worst_amplification <= 3},
        "staging_to_floor": {
            "value": results["staging_floor"]["ratio_ours_to_floor"],
            "goal": "<= 4.0",
            "met": results["staging_floor"]["ratio_ours_to_floor"] <= 4.0,
        },
        "minimum_to_floor": {
            "value": results["staging_floor"]["ratio_minimum_to_floor"],
            "goal": "report",
            "met": None,
        },
        "speedup_over_original": {
            "value": results["versus_original"]["speedup"],
            "goal": ">= 0.6",
            "met": results["versus_original"]["speedup"] >= 0.6,
        },
        "seed_stage_s": {
            "value": results["seed_stage"]["median_s"],
            "goal": "<= 3 s",
            "met": results["seed_stage"]["median_s"] <= 3,
        },
        "seed_merge_s": {
            "value": results["seed_merge"]["median_s"],
            "goal": "<= 3 s",
            "met": results["seed_merge"]["median_s"] <= 3,
        },
        **{
            f"job_to_target_merge_{size}": {
                "value": case["job_to_target_merge"],
                "goal": "<= 2.0",
                "met": case["job_to_target_merge"] <= 2.0,
            }
            for size, case in (("smallest", smallest), ("largest", largest))
        },
        **peer_goals(largest),
        "large_file_to_floor": {"value": results["large_file"]["ratio_ours_to_floor"], "goal": "report", "met": None},
    }


def peer_goals(largest: dict[str, Any]) -> dict[str, Any]:
    """The notebooks and delta-rs against our merge at the largest size, when they were measured."""
    if "versus_original" not in largest:
        return {}
    speedup = largest["versus_original"]["speedup"]
    to_delta_rs = round(largest["ours_median_s"] / largest["delta_rs"]["median_s"], 2)
    return {
        "notebooks_to_ours_largest": {"value": speedup, "goal": ">= 2.0", "met": speedup >= 2.0},
        "ours_to_delta_rs_largest": {"value": to_delta_rs, "goal": "<= 2.0", "met": to_delta_rs <= 2.0},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda text: [size(t) for t in text.split(",")], default="1M,4M,16M")
    parser.add_argument("--batch-rows", type=size, default="100k")
    parser.add_argument("--original-batch-rows", type=size, default="1M")
    parser.add_argument("--rows-per-file", type=size, default="1M", help="target rows per data file")
    parser.add_argument("--large-file-rows", type=size, default="250k", help="rows of the ~200 MB single file")
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--small-files-rows", type=size, default="100k")
    parser.add_argument("--history-events", type=int, default=5, help="events per order in the starting history")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-experiments", action="store_true")
    parser.add_argument("--work", default=str(REPO / ".local" / "bench"), help="scratch tables and files")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "results.json"))
    parser.add_argument("--probe", choices=("session-start", "dag-parse"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if args.probe:
        figures = session_start_probe() if args.probe == "session-start" else dag_parse_probe()
        print(json.dumps(figures))
        return 0
    results = run(args)
    from bench.cases import to_json

    to_json(results, Path(args.out))
    print(json.dumps(results["goals"], indent=2))
    print(f"benchmark finished in {results['duration_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
