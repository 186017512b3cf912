"""Both CLIs end to end, as Databricks or the local backend run them: a fresh process, path tables, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, SEED_FILES


def run_cli(module: str, *args: str) -> tuple[int, dict, str]:
    completed = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    last_line = completed.stdout.strip().splitlines()[-1]
    return completed.returncode, json.loads(last_line), completed.stderr


def test_stage_then_merge_from_the_command_line(tables, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"batch_id": "cli", "files": [{"uri": str(p), "size": p.stat().st_size} for p in SEED_FILES]})
    )

    code, staged, stage_log = run_cli(
        "spark_jobs.stage_orders",
        *("--manifest", str(manifest), "--batch-id", "cli"),
        *("--staging-table", tables.staging, "--rejects-table", tables.rejects, "--audit-table", tables.audit),
    )
    assert code == 0, stage_log
    assert (
        staged["result"],
        staged["status"],
        staged["rows_read"],
        staged["rows_rejected"],
        staged["rows_collapsed"],
        staged["rows_staged"],
    ) == (
        "succeeded",
        "staged",
        94,
        0,
        71,
        23,
    )
    assert [f["size"] for f in staged["files"]] == [p.stat().st_size for p in SEED_FILES]

    code, merged, merge_log = run_cli(
        "spark_jobs.merge_orders",
        *("--batch-id", "cli", "--staging-table", tables.staging, "--target-table", tables.target),
        *("--history-table", tables.history, "--audit-table", tables.audit),
    )
    assert code == 0, merge_log
    assert (
        merged["rows_inserted"],
        merged["rows_updated"],
        merged["rows_skipped_stale"],
        merged["target_version"],
    ) == (
        23,
        0,
        0,
        1,
    )
    assert "merged batch cli" in merge_log


def test_a_failing_job_exits_1_with_a_readable_message(tables):
    code, result, log = run_cli(
        "spark_jobs.merge_orders",
        *("--batch-id", "bad'id", "--staging-table", tables.staging, "--target-table", tables.target),
        *("--history-table", tables.history, "--audit-table", tables.audit),
    )
    assert code == 1
    assert result == {
        "result": "failed",
        "error": 'batch id "bad\'id" must be 1-250 characters of letters, digits, space and _.:+@=~-',
    }
    assert "Traceback" not in log
