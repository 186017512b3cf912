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
from collections.abc import Callable
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


Columns = tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...]


def rows_table(columns: Columns, items: list[dict[str, Any]]) -> str:
    """A Markdown table with one row per item: each column is a header and how to read the cell from an item."""
    return table([header for header, _ in columns], [[cell(item) for _, cell in columns] for item in items])


SCALING_COLUMNS: Columns = (
    ("N", lambda s: millions(s["target_rows"])),
    ("staged rows", lambda s: s["rows_staged"]),
    ("ours: job s", lambda s: s["ours_median_s"]),
    ("ours: MERGE s", lambda s: s["ours_target_merge_median_s"]),
    ("baseline s", lambda s: s["baseline_median_s"]),
    (
        "files (scanned ours / baseline)",
        lambda s: f"{s['target_files']} ({s['files_scanned_ours']} / {s['files_scanned_baseline']})",
    ),
    ("files rewritten ours / baseline", lambda s: _pair(s, "numTargetFilesRemoved")),
    ("DVs written (ours)", lambda s: s["ours_metrics"]["numTargetDeletionVectorsAdded"]),
    ("rows copied ours / baseline", lambda s: _pair(s, "numTargetRowsCopied")),
    (
        "write ampl. ours / baseline",
        lambda s: f"{s['write_amplification_ours']} / {s['write_amplification_baseline']}",
    ),
)
LOCAL_BATCH_COLUMNS: Columns = (
    ("N", lambda s: millions(s["target_rows"])),
    ("job s", lambda s: s["local_batch"]["median_s"]),
    ("MERGE s", lambda s: s["local_batch"]["target_merge_median_s"]),
    ("files scanned", lambda s: f"{s['local_batch']['files_scanned']} of {s['target_files']}"),
    ("DVs written", lambda s: s["local_batch"]["metrics"]["numTargetDeletionVectorsAdded"]),
    ("rows written", lambda s: s["local_batch"]["metrics"]["numOutputRows"]),
)
PEER_COLUMNS: Columns = (
    ("N", lambda s: millions(s["target_rows"])),
    ("history rows", lambda s: millions(s["history_rows"])),
    ("job s", lambda s: s["ours_median_s"]),
    ("job / its MERGE", lambda s: s["job_to_target_merge"]),
    ("delta-rs MERGE s", lambda s: s["delta_rs"]["median_s"]),
    ("job / delta-rs", lambda s: round(s["ours_median_s"] / s["delta_rs"]["median_s"], 2)),
    ("delta-rs rows copied", lambda s: s["delta_rs"]["metrics"]["num_target_rows_copied"]),
    ("ours end to end s", lambda s: s["versus_original"]["ours_median_s"]),
    ("notebooks s", lambda s: s["versus_original"]["original_median_s"]),
    ("notebooks / ours", lambda s: s["versus_original"]["speedup"]),
)
EXPERIMENT_COLUMNS: Columns = (
    ("variant", lambda run: run["name"]),
    ("note", lambda run: run["note"]),
    ("job median s", lambda run: run["median_s"]),
    ("job runs s", lambda run: seconds(run["seconds"])),
    ("its MERGE s", lambda run: round(run["metrics"]["executionTimeMs"] / 1000, 2)),
    ("files rewritten", lambda run: run["metrics"]["numTargetFilesRemoved"]),
    ("rows copied", lambda run: run["metrics"]["numTargetRowsCopied"]),
    ("rows written", lambda run: run["metrics"]["numOutputRows"]),
)
DAMAGE_COLUMNS = ("rows", "keys", "duplicate_rows", "keys_gone_back_in_time")


def _pair(scaling: dict[str, Any], metric: str) -> str:
    return f"{scaling['ours_metrics'][metric]} / {scaling['baseline_metrics'][metric]}"


def _damage(results: dict[str, Any], who: str) -> list[Any]:
    return [results[f"{who}_damage"][name] for name in DAMAGE_COLUMNS]


def markdown(results: dict[str, Any], plot_name: str) -> str:
    """The results section: goals, then one table per measurement."""
    settings, machine = results["settings"], results["machine"]
    goals = [{"label": label, **results["goals"][key]} for label, key in GOAL_LABELS if key in results["goals"]]
    parts = [
        f"Measured {results['started_at']} on {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory']} memory, Python {machine['python']}, PySpark {machine['pyspark']}, "
        f"{machine['java']}; Spark `{settings['master']}` with {settings['shuffle_partitions']} shuffle partitions. "
        f"Whole run: {results['duration_s'] / 60:.0f} min. Every figure is the median of {settings['repeats']} runs.",
        "",
        "### Goals",
        "",
        rows_table(
            (
                ("goal", lambda g: g["label"]),
                ("target", lambda g: g["goal"]),
                ("measured", lambda g: g["value"]),
                ("met", lambda g: _yes(g["met"])),
            ),
            goals,
        ),
        "",
        *merge_scaling_section(results, plot_name),
        *staging_section(results),
        *original_section(results["versus_original"]),
        *fixed_costs_section(results),
        *experiments_section(results),
    ]
    return "\n".join(parts)


def merge_scaling_section(results: dict[str, Any], plot_name: str) -> list[str]:
    """Section 1: the merge job, its MERGE and the baseline by target size; the local batch; the peers."""
    settings, scaling = results["settings"], results["merge_scaling"]
    parts = [
        f"### 1. Merge scaling (B = {millions(settings['batch_rows'])} rows, "
        f"{millions(settings['rows_per_file'])} target rows per file)",
        "",
        f"![merge time against target size]({plot_name})",
        "",
        rows_table(SCALING_COLUMNS, scaling),
        "",
        "Runs (s): "
        + "; ".join(
            f"N={millions(s['target_rows'])}: ours {seconds(s['ours_s'])}, baseline {seconds(s['baseline_s'])}"
            for s in scaling
        )
        + ". The MERGE-alone figures are Delta's own `executionTimeMs`; baseline MERGE alone: "
        + ", ".join(f"{s.get('baseline_target_merge_median_s', '-')}" for s in scaling)
        + " s.",
    ]
    if all("local_batch" in s for s in scaling):
        parts += [
            "",
            "Our merge job again, on a batch of new (10%) and recent (90%) orders only, no random older ones:",
            "",
            rows_table(LOCAL_BATCH_COLUMNS, scaling),
            *{
                f"\nFiles scanned: {s['local_batch']['files_scanned_note']}."
                for s in scaling
                if "files_scanned_note" in s["local_batch"]
            },
        ]
    peers = [s for s in scaling if "versus_original" in s]
    if peers:
        parts += [
            "",
            "The merge job beside its peers on the same batch: its time beyond its own target MERGE, "
            "delta-rs merging the same staged rows (latest wins) into the baseline's plain copy of the target, "
            "and the batch end to end (stage + merge) by us and by the original notebooks:",
            "",
            rows_table(PEER_COLUMNS, peers),
            "",
            table(
                ["N", "load", *DAMAGE_COLUMNS],
                [
                    [millions(s["target_rows"]), who, *_damage(s["versus_original"], who)]
                    for s in peers
                    for who in ("ours", "original")
                ],
            ),
        ]
    return parts


def staging_section(results: dict[str, Any]) -> list[str]:
    """Section 2: the stage job against Spark's CSV floor, the seed files warm, one large file."""
    floor, seed, merge, large = (
        results["staging_floor"],
        results["seed_stage"],
        results["seed_merge"],
        results["large_file"],
    )
    return [
        "",
        f"### 2. Staging against the floor ({floor['rows']} rows in {floor['files']} files)",
        "",
        table(
            [
                "stage job s",
                "Spark read.csv(schema).write.parquet s",
                "contract minimum s",
                "pyarrow read_csv + write_table s",
                "ratio",
                "minimum / floor",
            ],
            [
                [
                    floor["ours_median_s"],
                    floor["spark_floor_median_s"],
                    floor["contract_minimum_median_s"],
                    floor["pyarrow_median_s"],
                    floor["ratio_ours_to_floor"],
                    floor["ratio_minimum_to_floor"],
                ]
            ],
        ),
        "",
        "The contract minimum reads the files once, collapses each key with its earlier events nested and "
        "writes the batch's Delta staging partition: no validation, per-file counts, rejects or audit.",
        "",
        f"Stage job on the {seed['files']} seed files in a warm session (runs after the tables exist): "
        f"{seconds(seed['seconds'])} s; Spark jobs per run {seed['spark_jobs']}; "
        f"Delta commits per run {seed['delta_commits']}.",
        "",
        f"Merge job on the staged seed batch in a warm session (into the empty target and history): "
        f"{seconds(merge['seconds'])} s; Spark jobs per run {merge['spark_jobs']}; "
        f"Delta commits per run {merge['delta_commits']}.",
        "",
        f"One {large['bytes'] / 1e6:.0f} MB file of {large['rows']} rows: stage job {large['ours_median_s']} s, "
        f"floor {large['spark_floor_median_s']} s, ratio {large['ratio_ours_to_floor']}.",
    ]


def original_section(versus: dict[str, Any]) -> list[str]:
    """Section 3: ours end to end against the original notebooks, with what each leaves behind."""
    return [
        "",
        f"### 3. Ours against the original notebooks ({millions(versus['batch_rows'])}-row batch, "
        f"{millions(versus['target_rows'])}-row target)",
        "",
        table(
            ["load", "end to end s", "target rows", "keys", "duplicate rows", "keys gone back in time"],
            [
                [name, versus[f"{key}_median_s"], *_damage(versus, key)]
                for name, key in (("ours (stage + merge)", "ours"), ("original notebooks", "original"))
            ],
        ),
        "",
        f"Speed-up: {versus['speedup']}x (original time / ours).",
    ]


def fixed_costs_section(results: dict[str, Any]) -> list[str]:
    """Section 4: session start, per-file cost, imports and DAG parse."""
    fixed, small = results["fixed_costs"], results["small_files"]
    session, parse = fixed["session_start"], fixed["dag_parse"]
    costs = [
        ("Spark session start, cold (new JVM, Delta jars cached)", f"{session['cold_median_s']} s"),
        ("Spark session start, warm (same JVM)", f"{session['warm_median_s']} s"),
        (f"stage job, {small['files']} files of {small['rows'] // small['files']} rows", f"{small['many_median_s']} s"),
        (f"stage job, 1 file of {small['rows']} rows", f"{small['one_median_s']} s"),
        ("per extra file", f"{small['per_file_ms']} ms"),
        ("provider imports (Airflow SDK, Databricks, Google)", f"{parse['provider_imports_median_s']} s"),
        ("DAG file parse beyond those imports", f"{parse['dag_parse_beyond_imports_median_s']} s"),
    ]
    return ["", "### 4. Fixed costs", "", table(["cost", "median"], [list(cost) for cost in costs])]


def experiments_section(results: dict[str, Any]) -> list[str]:
    """Section 5, when run: the merge job under variants of layout and settings."""
    if "experiments" not in results:
        return []
    experiments = results["experiments"]
    return [
        "",
        f"### 5. Experiments: the merge job in other layouts and settings, N = {millions(experiments['target_rows'])}",
        "",
        rows_table(EXPERIMENT_COLUMNS, experiments["runs"]),
    ]


GOAL_LABELS = (
    ("merge job: t(N=max) / t(N=min)", "merge_scaling_ratio"),
    ("target MERGE alone: t(N=max) / t(N=min)", "target_merge_scaling_ratio"),
    ("baseline: t(N=max) / t(N=min)", "baseline_scaling_ratio"),
    ("merge job, batch of new and recent orders only: t(N=max) / t(N=min), history 5N", "local_batch_scaling_ratio"),
    ("write amplification (rows written / B), worst size", "write_amplification"),
    ("stage job / Spark CSV-to-Parquet floor", "staging_to_floor"),
    ("contract minimum / the same floor (read, collapse, Delta write only)", "minimum_to_floor"),
    ("original notebooks / ours, end to end", "speedup_over_original"),
    ("stage job on the five seed files, warm session", "seed_stage_s"),
    ("stage job / floor on one ~200 MB file", "large_file_to_floor"),
    ("merge job / its target MERGE, N=min", "job_to_target_merge_smallest"),
    ("merge job / its target MERGE, N=max", "job_to_target_merge_largest"),
    ("original notebooks / ours, 100k batch end to end, N=max", "notebooks_to_ours_largest"),
    ("our merge job / delta-rs MERGE, N=max", "ours_to_delta_rs_largest"),
    ("merge job on the five seed files, warm session", "seed_merge_s"),
)


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
