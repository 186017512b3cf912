"""The stage job dies midway through writing staging: nothing of the attempt shows, and a re-run replaces the batch."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from spark_jobs import stage_orders as stage_module
from spark_jobs.schema import KEY
from spark_jobs.stage_orders import stage_orders
from tests.conftest import SEED_FILES, expected_latest
from tests.spark_jobs.helpers import read


def _stage(spark, tables, files):
    return stage_orders(
        spark, [{"uri": str(p)} for p in files], "b1", tables.staging, tables.rejects, tables.audit, 0.1
    )


def _version(spark, path: str) -> int:
    return spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["version"]


def test_a_stage_that_dies_mid_write_leaves_the_previous_attempt_and_a_rerun_replaces_the_batch(
    spark, tables, monkeypatch
):
    first = _stage(spark, tables, SEED_FILES[:1])
    staged_before = sorted(read(spark, tables.staging).collect())
    version_before = _version(spark, tables.staging)

    real_collapse = stage_module.collapse_to_latest

    def dies_mid_write(valid):
        # Four write tasks; the one holding TRK1019 dies while the others write their files.
        return (
            real_collapse(valid)
            .repartition(4)
            .withColumn(
                KEY,
                F.when(F.col(KEY) == "TRK1019", F.raise_error(F.lit("injected: executor lost"))).otherwise(F.col(KEY)),
            )
        )

    with monkeypatch.context() as patch:
        patch.setattr(stage_module, "collapse_to_latest", dies_mid_write)
        with pytest.raises(Exception, match="injected: executor lost"):
            _stage(spark, tables, SEED_FILES)

    assert _version(spark, tables.staging) == version_before  # no commit: the half-written files are not in the table
    assert sorted(read(spark, tables.staging).collect()) == staged_before
    audit = read(spark, tables.audit).collect()
    assert [(r["status"], r["rows_read"]) for r in audit] == [("staged", first["rows_read"])]

    rerun = _stage(spark, tables, SEED_FILES)

    staged = read(spark, tables.staging).where(F.col("_batch_id") == "b1")
    assert staged.count() == staged.select(KEY).distinct().count() == len(expected_latest()) == 23
    assert {(r[KEY], r["status"]) for r in staged.collect()} == {(k, v["status"]) for k, v in expected_latest().items()}
    assert (rerun["rows_read"], rerun["rows_staged"]) == (94, 23)
    assert [(r["status"], r["rows_read"]) for r in read(spark, tables.audit).collect()] == [("staged", 94)]
