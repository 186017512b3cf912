"""Turn the benchmark's JSON results into the plot and the results tables of ``BENCHMARKS.md``.

    python -m bench.report [--results bench/results/results.json] [--markdown BENCHMARKS.md]

The tables replace the text between the ``<!-- results:start -->`` and ``<!-- results:end -->``
markers, so the prose around them is kept; the plot goes beside the results file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def millions(rows: int) -> str:
    """16000000 -> '16M', 100000 -> '100k'."""
    if rows >= 1_000_000:
        return f"{rows / 1_000_000:g}M"
    if rows >= 1_000:
        return f"{rows / 1_000:g}k"
    return str(rows)


def plot(results: dict[str, Any], out: Path) -> None:
    """Merge time against target size: our merge job, our target MERGE alone, the unpruned baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaling = results["merge_scaling"]
    sizes = [s["target_rows"] / 1_000_000 for s in scaling]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, label, style in (
        ("ours_median_s", "ours: whole merge job (history, MERGE, check, audit)", "o-"),
        ("ours_target_merge_median_s", "ours: the target MERGE alone", "s--"),
        ("baseline_median_s", "baseline: plain MERGE, unclustered, no deletion vectors", "^-"),
    ):
        axes.plot(sizes, [s[key] for s in scaling], style, label=label)
    if all("local_batch" in s for s in scaling):
        local = [s["local_batch"]["median_s"] for s in scaling]
        axes.plot(sizes, local, "d:", label="ours: whole merge job, batch of new and recent orders only")
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [millions(s["target_rows"]) for s in scaling])
    axes.set_xlabel("target rows (log scale)")
    axes.set_ylabel(f"seconds, median of {results['settings']['repeats']}")
    axes.set_title(f"Merging a {millions(results['settings']['batch_rows'])}-row batch")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def seconds(values: list[float]) -> str:
    """The runs, rounded, for the tables."""
    return ", ".join(f"{v:.1f}" for v in values)


def markdown(results: dict[str, Any], plot_name: str) -> str:
    """The results section: goals, then one table per measurement."""
    goals = results["goals"]
    settings = results["settings"]
    machine = results["machine"]
    parts = [
        f"Measured {results['started_at']} on {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory']} memory, Python {machine['python']}, PySpark {machine['pyspark']}, "
        f"{machine['java']}; Spark `{settings['master']}` with {settings['shuffle_partitions']} shuffle partitions. "
        f"Whole run: {results['duration_s'] / 60:.0f} min. Every figure is the median of {settings['repeats']} runs.",
        "",
        "### Goals",
        "",
        table(
            ["goal", "target", "measured", "met"],
            [
                [label, goals[key]["goal"], goals[key]["value"], _yes(goals[key]["met"])]
                for label, key in GOAL_LABELS
                if key in goals
            ],
        ),
        "",
        f"### 1. Merge scaling (B = {millions(settings['batch_rows'])} rows, "
        f"{millions(settings['rows_per_file'])} target rows per file)",
        "",
        f"![merge time against target size]({plot_name})",
        "",
        table(
            [
                "N",
                "staged rows",
                "ours: job s",
                "ours: MERGE s",
                "baseline s",
                "files (scanned ours / baseline)",
                "files rewritten ours / baseline",
                "DVs written (ours)",
                "rows copied ours / baseline",
                "write ampl. ours / baseline",
            ],
            [
                [
                    millions(s["target_rows"]),
                    s["rows_staged"],
                    s["ours_median_s"],
                    s["ours_target_merge_median_s"],
                    s["baseline_median_s"],
                    f"{s['target_files']} ({s['files_scanned_ours']} / {s['files_scanned_baseline']})",
                    f"{s['ours_metrics']['numTargetFilesRemoved']} / {s['baseline_metrics']['numTargetFilesRemoved']}",
                    s["ours_metrics"]["numTargetDeletionVectorsAdded"],
                    f"{s['ours_metrics']['numTargetRowsCopied']} / {s['baseline_metrics']['numTargetRowsCopied']}",
                    f"{s['write_amplification_ours']} / {s['write_amplification_baseline']}",
                ]
                for s in results["merge_scaling"]
            ],
        ),
        "",
        "Runs (s): "
        + "; ".join(
            f"N={millions(s['target_rows'])}: ours {seconds(s['ours_s'])}, baseline {seconds(s['baseline_s'])}"
            for s in results["merge_scaling"]
        )
        + ". The MERGE-alone figures are Delta's own `executionTimeMs`; baseline MERGE alone: "
        + ", ".join(f"{s.get('baseline_target_merge_median_s', '-')}" for s in results["merge_scaling"])
        + " s.",
    ]
    if all("local_batch" in s for s in results["merge_scaling"]):
        parts += [
            "",
            "Our merge job again, on a batch of new (10%) and recent (90%) orders only, no random older ones:",
            "",
            table(
                ["N", "job s", "MERGE s", "files scanned", "DVs written", "rows written"],
                [
                    [
                        millions(s["target_rows"]),
                        s["local_batch"]["median_s"],
                        s["local_batch"]["target_merge_median_s"],
                        f"{s['local_batch']['files_scanned']} of {s['target_files']}",
                        s["local_batch"]["metrics"]["numTargetDeletionVectorsAdded"],
                        s["local_batch"]["metrics"]["numOutputRows"],
                    ]
                    for s in results["merge_scaling"]
                ],
            ),
            *{
                f"\nFiles scanned: {s['local_batch']['files_scanned_note']}."
                for s in results["merge_scaling"]
                if "files_scanned_note" in s["local_batch"]
            },
        ]
    peers = [s for s in results["merge_scaling"] if "versus_original" in s]
    if peers:
        parts += [
            "",
            "The merge job beside its peers on the same batch: its time beyond its own target MERGE, "
            "delta-rs merging the same staged rows (latest wins) into the baseline's plain copy of the target, "
            "and the batch end to end (stage + merge) by us and by the original notebooks:",
            "",
            table(
                [
                    "N",
                    "history rows",
                    "job s",
                    "job / its MERGE",
                    "delta-rs MERGE s",
                    "job / delta-rs",
                    "delta-rs rows copied",
                    "ours end to end s",
                    "notebooks s",
                    "notebooks / ours",
                ],
                [
                    [
                        millions(s["target_rows"]),
                        millions(s["history_rows"]),
                        s["ours_median_s"],
                        s["job_to_target_merge"],
                        s["delta_rs"]["median_s"],
                        round(s["ours_median_s"] / s["delta_rs"]["median_s"], 2),
                        s["delta_rs"]["metrics"]["num_target_rows_copied"],
                        s["versus_original"]["ours_median_s"],
                        s["versus_original"]["original_median_s"],
                        s["versus_original"]["speedup"],
                    ]
                    for s in peers
                ],
            ),
            "",
            table(
                ["N", "load", *_DAMAGE],
                [
                    [millions(s["target_rows"]), who, *(s["versus_original"][f"{who}_damage"][k] for k in _DAMAGE)]
                    for s in peers
                    for who in ("ours", "original")
                ],
            ),
        ]
    floor = results["staging_floor"]
    parts += [
        "",
        f"### 2. Staging against the floor ({floor['rows']} rows in {floor['files']} files)",
        "",
        table(
            ["stage job s", "Spark read.csv(schema).write.parquet s", "pyarrow read_csv + write_table s", "ratio"],
            [
                [
                    floor["ours_median_s"],
                    floor["spark_floor_median_s"],
                    floor["pyarrow_median_s"],
                    floor["ratio_ours_to_floor"],
                ]
            ],
        ),
    ]
    seed, large = results["seed_stage"], results["large_file"]
    parts += [
        "",
        f"Stage job on the {seed['files']} seed files in a warm session (runs after the tables exist): "
        f"{seconds(seed['seconds'])} s; Spark jobs per run {seed['spark_jobs']}; "
        f"Delta commits per run {seed['delta_commits']}.",
        "",
        f"Merge job on the staged seed batch in a warm session (into the empty target and history): "
        f"{seconds(results['seed_merge']['seconds'])} s; Spark jobs per run {results['seed_merge']['spark_jobs']}; "
        f"Delta commits per run {results['seed_merge']['delta_commits']}.",
        "",
        f"One {large['bytes'] / 1e6:.0f} MB file of {large['rows']} rows: stage job {large['ours_median_s']} s, "
        f"floor {large['spark_floor_median_s']} s, ratio {large['ratio_ours_to_floor']}.",
    ]
    versus = results["versus_original"]
    parts += [
        "",
        f"### 3. Ours against the original notebooks ({millions(versus['batch_rows'])}-row batch, "
        f"{millions(versus['target_rows'])}-row target)",
        "",
        table(
            ["load", "end to end s", "target rows", "keys", "duplicate rows", "keys gone back in time"],
            [
                [name, versus[f"{key}_median_s"], *[versus[f"{key}_damage"][k] for k in _DAMAGE]]
                for name, key in (("ours (stage + merge)", "ours"), ("original notebooks", "original"))
            ],
        ),
        "",
        f"Speed-up: {versus['speedup']}x (original time / ours).",
    ]
    fixed = results["fixed_costs"]
    session, parse = fixed["session_start"], fixed["dag_parse"]
    small = results["small_files"]
    parts += [
        "",
        "### 4. Fixed costs",
        "",
        table(
            ["cost", "median"],
            [
                [
                    "Spark session start, cold (new JVM, Delta jars cached)",
                    f"{session['cold_median_s']} s",
                ],
                ["Spark session start, warm (same JVM)", f"{session['warm_median_s']} s"],
                [
                    f"stage job, {small['files']} files of {small['rows'] // small['files']} rows",
                    f"{small['many_median_s']} s",
                ],
                [f"stage job, 1 file of {small['rows']} rows", f"{small['one_median_s']} s"],
                ["per extra file", f"{small['per_file_ms']} ms"],
                [
                    "provider imports (Airflow SDK, Databricks, Google)",
                    f"{parse['provider_imports_median_s']} s",
                ],
                ["DAG file parse beyond those imports", f"{parse['dag_parse_beyond_imports_median_s']} s"],
            ],
        ),
    ]
    if "experiments" in results:
        experiments = results["experiments"]
        parts += [
            "",
            f"### 5. Experiments: the target MERGE alone, N = {millions(experiments['target_rows'])}",
            "",
            table(
                ["variant", "note", "median s", "runs s", "files rewritten", "rows copied", "rows written"],
                [
                    [
                        run["name"],
                        run["note"],
                        run["median_s"],
                        seconds(run["seconds"]),
                        run["metrics"]["numTargetFilesRemoved"],
                        run["metrics"]["numTargetRowsCopied"],
                        run["metrics"]["numOutputRows"],
                    ]
                    for run in experiments["runs"]
                ],
            ),
        ]
    return "\n".join(parts)


GOAL_LABELS = (
    ("merge job: t(N=max) / t(N=min)", "merge_scaling_ratio"),
    ("target MERGE alone: t(N=max) / t(N=min)", "target_merge_scaling_ratio"),
    ("baseline: t(N=max) / t(N=min)", "baseline_scaling_ratio"),
    ("merge job, batch of new and recent orders only: t(N=max) / t(N=min), history 5N", "local_batch_scaling_ratio"),
    ("write amplification (rows written / B), worst size", "write_amplification"),
    ("stage job / Spark CSV-to-Parquet floor", "staging_to_floor"),
    ("original notebooks / ours, end to end", "speedup_over_original"),
    ("stage job on the five seed files, warm session", "seed_stage_s"),
    ("stage job / floor on one ~200 MB file", "large_file_to_floor"),
    ("merge job / its target MERGE, N=min", "job_to_target_merge_smallest"),
    ("merge job / its target MERGE, N=max", "job_to_target_merge_largest"),
    ("original notebooks / ours, 100k batch end to end, N=max", "notebooks_to_ours_largest"),
    ("our merge job / delta-rs MERGE, N=max", "ours_to_delta_rs_largest"),
    ("merge job on the five seed files, warm session", "seed_merge_s"),
)
_DAMAGE = ("rows", "keys", "duplicate_rows", "keys_gone_back_in_time")


def _yes(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def update_markdown(path: Path, section: str) -> None:
    """Replace the text between the markers with ``section``."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no {START} ... {END} section")
    path.write_text(pattern.sub(lambda _: f"{START}\n{section}\n{END}", text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "results.json"))
    parser.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    results_path = Path(args.results).resolve()
    results = json.loads(results_path.read_text(encoding="utf-8"))
    plot_path = results_path.with_name("merge_scaling.png")
    plot(results, plot_path)
    markdown_path = Path(args.markdown).resolve()
    update_markdown(markdown_path, markdown(results, plot_path.relative_to(markdown_path.parent.resolve()).as_posix()))
    print(f"wrote {plot_path} and the results section of {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
