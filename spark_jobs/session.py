"""The Spark session: the one Databricks provides, or a local one with Delta Lake configured."""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import SparkSession

LOCAL_MASTER_ENV = "ORDER_TRACKING_SPARK_MASTER"  # default local[*]
SHUFFLE_PARTITIONS_ENV = "ORDER_TRACKING_SHUFFLE_PARTITIONS"  # default 4
EXTRA_JARS_ENV = "ORDER_TRACKING_SPARK_JARS"  # comma-separated jars; default: the repo's .jars/ (make jars)
DRIVER_MEMORY_ENV = "ORDER_TRACKING_SPARK_DRIVER_MEMORY"  # default 4g: the heap of local mode's one JVM
GCS_ENDPOINT_ENV = "ORDER_TRACKING_GCS_ENDPOINT"  # default: STORAGE_EMULATOR_HOST, e.g. http://127.0.0.1:4443
LOCAL_JARS_DIR = Path(__file__).resolve().parents[1] / ".jars"


def get_spark(app_name: str = "order-tracking") -> SparkSession:
    """Return the active session (Databricks, tests) or build a local Delta-enabled one; its time zone is UTC.

    The contract's timestamps are UTC, and the stage job parses them in the session's zone.
    """
    spark = SparkSession.getActiveSession()
    if spark is None:
        spark = (
            SparkSession.builder.getOrCreate()
            if os.environ.get("DATABRICKS_RUNTIME_VERSION")
            else build_local_session(app_name)
        )
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return spark


def build_local_session(app_name: str, extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Build a local session: Delta via delta-spark's pip helper, UI off, few shuffle partitions."""
    from delta import configure_spark_with_delta_pip

    builder = (
        SparkSession.builder.appName(app_name)
        .master(os.environ.get(LOCAL_MASTER_ENV, "local[*]"))
        # Local mode runs every task in the driver's JVM. Spark's 1g default runs out on one 200 MB file,
        # which CSV with quoted line breaks (multiLine) cannot split.
        .config("spark.driver.memory", os.environ.get(DRIVER_MEMORY_ENV, "4g"))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", os.environ.get(SHUFFLE_PARTITIONS_ENV, "4"))
        .config("spark.sql.session.timeZone", "UTC")
        # Small local tables: rebuilding a Delta snapshot over the default 50 partitions costs seconds.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
    )
    extra_jars = os.environ.get(EXTRA_JARS_ENV) or ",".join(str(jar) for jar in sorted(LOCAL_JARS_DIR.glob("*.jar")))
    if extra_jars:
        builder = builder.config("spark.jars", extra_jars)
    gcs_endpoint = os.environ.get(GCS_ENDPOINT_ENV) or os.environ.get("STORAGE_EMULATOR_HOST", "")
    if gcs_endpoint:
        # The shaded Hadoop GCS connector, pointed at an emulator with no authentication.
        builder = (
            builder.config("spark.hadoop.fs.gs.impl", "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem")
            .config("spark.hadoop.fs.gs.storage.root.url", gcs_endpoint)
            .config("spark.hadoop.fs.gs.auth.type", "UNAUTHENTICATED")
            # Hadoop 3.5's core-default.xml says "64m", which this connector cannot parse.
            .config("spark.hadoop.fs.gs.block.size", str(64 * 1024 * 1024))
        )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("ORDER_TRACKING_SPARK_LOG_LEVEL", "WARN"))
    return spark
