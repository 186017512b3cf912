"""A merge that fails after its target MERGE committed: the retry reports the batch's real figures."""

from __future__ import annotations

import pytest

from order_tracking_load.settings import Tables
from spark_jobs import load as load_module
from spark_jobs.cli import OrderLoadError
from spark_jobs.merge_orders import merge_orders
from spark_jobs.stage_orders import stage_orders
from tests.conftest import SEED_FILES
from tests.spark_jobs.helpers import read

FIGURES = ("rows_staged", "rows_inserted", "rows_updated", "rows_skipped_stale", "rows_unchanged")


def _merge(spark, tables: Tables, batch_id: str) -> dict:
    return merge_orders(spark, batch_id, tables.staging, tables.target, tables.history, tables.audit)


def test_a_retry_after_the_target_merge_committed_reports_what_the_batch_changed(spark, tables, monkeypatch):
    stage_orders(
        spark, [{"uri": str(p)} for p in SEED_FILES[:2]], "batch", tables.staging, tables.rejects, tables.audit, 0.1
    )
    real_insert = load_module.insert_new_history

    def dies_after_its_commit(*args, **kwargs):
        real_insert(*args, **kwargs)
        raise RuntimeError("injected: the driver died after the history insert committed")

    with monkeypatch.context() as patch:
        patch.setattr(load_module, "insert_new_history", dies_after_its_commit)
        with pytest.raises(RuntimeError, match="injected"):
            _merge(spark, tables, "batch")
    retried = _merge(spark, tables, "batch")

    # The target was empty: every staged key was inserted by the first try. The retry's own MERGE changed
    # nothing, and it once reported 0 inserted and 0 updated, so no Asset event was ever emitted.
    assert retried["rows_staged"] > 0
    assert {name: retried[name] for name in FIGURES} == {
        "rows_staged": retried["rows_staged"],
        "rows_inserted": retried["rows_staged"],
        "rows_updated": 0,
        "rows_skipped_stale": 0,
        "rows_unchanged": 0,
    }
    assert retried["history_rows_inserted"] == read(spark, tables.history).count() > retried["rows_staged"]
    audit = read(spark, tables.audit).first()
    assert (audit["status"], audit["rows_inserted"]) == ("merged", retried["rows_staged"])
    # A complete re-run of the merged batch changed nothing, and says so.
    rerun = _merge(spark, tables, "batch")
    assert (rerun["rows_inserted"], rerun["rows_updated"], rerun["rows_unchanged"]) == (0, 0, retried["rows_staged"])


def test_a_reconciliation_that_fails_after_the_commit_is_recorded_and_a_retry_finishes_keeping_the_alarm(
    spark, tables, monkeypatch
):
    """The check runs after the irreversible MERGE: its alarm must outlive the try, and the batch must finish."""
    stage_orders(spark, [{"uri": str(SEED_FILES[0])}], "alarm", tables.staging, tables.rejects, tables.audit, 0.1)
    real_compare = load_module.compare_with_target

    def one_key_missing(*args, **kwargs):
        return {**real_compare(*args, **kwargs), "missing": 1}

    with monkeypatch.context() as patch:
        patch.setattr(load_module, "compare_with_target", one_key_missing)
        with pytest.raises(OrderLoadError, match="does not reconcile") as failure:
            _merge(spark, tables, "alarm")
    assert "The MERGE committed; the audit record says merge_unreconciled." in str(failure.value)
    first = read(spark, tables.audit).first()
    assert (first["status"], first["rows_inserted"]) == ("merge_unreconciled", first["rows_staged"])
    assert first["error"].startswith("batch alarm does not reconcile: ")

    retried = _merge(spark, tables, "alarm")

    assert (retried["rows_inserted"], retried["rows_unchanged"]) == (first["rows_staged"], 0)
    audit = read(spark, tables.audit).first()
    assert audit["status"] == "merged"
    assert audit["error"] == f"reconciled on a later try; an earlier try said: {first['error']}"
