"""The original notebooks' load, reproduced only to be measured against: do not use it to load data.

What it did, step by step: read the CSVs with ``inferSchema``; overwrite a staging table with them;
``MERGE ... WHEN MATCHED THEN DELETE`` the staged keys from the target; append the staging table.
No deduplication, and two commits, so in-batch duplicates and stale events land in the target.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from bench.workload import HEADER, delta_sql
from spark_jobs.schema import EVENT_TIME, KEY


def original_target(target: DataFrame) -> DataFrame:
    """The original target's shape: the CSV's columns, with the types ``inferSchema`` gives them."""
    return target.select(*HEADER).withColumn("order_num", F.col("order_num").cast("int"))


def original_load(spark: SparkSession, paths: list[str], staging: str, target: str) -> None:
    """The notebooks' stage and "upsert", as they were."""
    (
        spark.read.option("header", True)
        .option("inferSchema", True)
        .csv(paths)
        .write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", True)
        .save(staging)
    )
    spark.sql(
        f"MERGE INTO {delta_sql(target)} AS t USING {delta_sql(staging)} AS s "
        f"ON t.{KEY} = s.{KEY} WHEN MATCHED THEN DELETE"
    )
    spark.read.format("delta").load(staging).write.format("delta").mode("append").option("mergeSchema", True).save(
        target
    )


def damage(spark: SparkSession, target: str, before_version: int) -> dict[str, int]:
    """What a load did wrong: rows beyond one per key, and keys whose latest event went back in time."""
    after = spark.read.format("delta").load(target)
    before = spark.read.format("delta").option("versionAsOf", before_version).load(target)
    counts = after.agg(F.count("*").alias("rows"), F.count_distinct(KEY).alias("keys")).collect()[0]
    latest_after = after.groupBy(KEY).agg(F.max(EVENT_TIME).alias("after"))
    regressed = (
        before.select(KEY, F.col(EVENT_TIME).alias("before"))
        .join(latest_after, KEY)
        .where(F.col("after") < F.col("before"))
        .count()
    )
    return {
        "rows": int(counts["rows"]),
        "keys": int(counts["keys"]),
        "duplicate_rows": int(counts["rows"] - counts["keys"]),
        "keys_gone_back_in_time": int(regressed),
    }
