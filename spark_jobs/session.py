"""The Spark session: the one Databricks provides, or a local one with Delta Lake configured."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from spark_jobs.environment import Setting

LOCAL_JARS_DIR = Path(__file__).resolve().parents[1] / ".jars"
SPARK_MASTER = Setting("ORDER_TRACKING_SPARK_MASTER", "local[*]", "Spark master of the local backend")
SHUFFLE_PARTITIONS = Setting(
    "ORDER_TRACKING_SHUFFLE_PARTITIONS", "4", "`spark.sql.shuffle.partitions` of the local session"
)
DRIVER_MEMORY = Setting(
    "ORDER_TRACKING_SPARK_DRIVER_MEMORY",
    "4g",
    "heap of the local session's JVM, where local mode runs every task (one 200 MB file needs more than "
    "Spark's 1g default: CSV with quoted line breaks cannot be split)",
)
SPARK_JARS = Setting(
    "ORDER_TRACKING_SPARK_JARS",
    "",
    "comma-separated jars or folders of jars local Spark adds (Delta's and the shaded GCS connector, from "
    "`jars/pom.xml`); without Delta's jar among them, Spark resolves it through Ivy at start",
    documented_default="the jars in `.jars/` (`make jars`)",
)
GCS_ENDPOINT = Setting(
    "ORDER_TRACKING_GCS_ENDPOINT",
    "",
    "GCS endpoint of local Spark (an emulator, e.g. `http://127.0.0.1:4443`), unauthenticated",
    documented_default="`STORAGE_EMULATOR_HOST`",
)
SPARK_LOG_LEVEL = Setting("ORDER_TRACKING_SPARK_LOG_LEVEL", "WARN", "log level of the local session's JVM")
# What the local session reads, in the order docs/CONFIGURATION.md lists them.
LOCAL_SPARK_SETTINGS = (SPARK_MASTER, SHUFFLE_PARTITIONS, DRIVER_MEMORY, SPARK_JARS, GCS_ENDPOINT, SPARK_LOG_LEVEL)
# Spark SQL's ``${...}`` substitution in statement text: off in every session the jobs run in.
VARIABLE_SUBSTITUTION = "spark.sql.variable.substitute"


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
    # No ``${...}`` in a statement is ever a variable: values from files reach SQL only as ``sql_string``
    # literals, which hold no ``$``, and this makes sure. Compute that refuses the option keeps that guarantee.
    with contextlib.suppress(PySparkException):
        spark.conf.set(VARIABLE_SUBSTITUTION, "false")
    return spark


def conf_get(spark: SparkSession, key: str, default: str | None = None) -> str | None:
    """A session option's value, or ``default`` where it is unset or the compute refuses to read it
    (serverless compute refuses reads of the options it does not expose)."""
    try:
        return spark.conf.get(key, default)
    except PySparkException:
        return default


@contextmanager
def spark_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Set session configuration for the block, then put the previous values back.

    A setting the session refuses (serverless compute refuses most) raises, and those already set are put back.
    """
    previous: dict[str, str | None] = {}
    try:
        for key, value in settings.items():
            before = conf_get(spark, key)
            spark.conf.set(key, value)
            previous[key] = before
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def local_jars() -> list[str]:
    """The jars local Spark adds to its own: ``ORDER_TRACKING_SPARK_JARS`` (jars or folders), else ``.jars/``."""
    listed = SPARK_JARS.read()
    entries = [Path(entry) for entry in listed.split(",") if entry.strip()] if listed else [LOCAL_JARS_DIR]
    jars: list[str] = []
    for entry in entries:
        jars += [str(jar) for jar in sorted(entry.glob("*.jar"))] if entry.is_dir() else [str(entry)]
    return jars


@contextmanager
def process_output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr (file descriptors 1 and 2) at ``path`` for a while.

    A JVM started meanwhile keeps them: its start-up lines and Spark's log4j output go to the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for descriptor, original in zip((1, 2), saved, strict=True):
            os.dup2(original, descriptor)
            os.close(original)


def build_local_session(
    app_name: str, extra_conf: dict[str, str] | None = None, jvm_output: Path | None = None
) -> SparkSession:
    """Build a local session: Delta from the jars ``make jars`` resolved, UI off, few shuffle partitions.

    Without Delta's jar among them, delta-spark's pip helper has Spark resolve it through Ivy at start
    (slower, and it needs Maven Central). With ``jvm_output``, the JVM writes its stdout and stderr
    (start-up lines, Spark's own log) to that file, not to this process's.
    """
    builder = (
        SparkSession.builder.appName(app_name)
        .master(SPARK_MASTER.read())
        # Local mode runs every task in the driver's JVM. Spark's 1g default runs out on one 200 MB file,
        # which CSV with quoted line breaks (multiLine) cannot split.
        .config("spark.driver.memory", DRIVER_MEMORY.read())
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", SHUFFLE_PARTITIONS.read())
        .config("spark.sql.session.timeZone", "UTC")
        .config(VARIABLE_SUBSTITUTION, "false")
        # Small local tables: a Delta snapshot is rebuilt over 2 partitions, not the default 50.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # Local files through the raw file system: the checksummed one builds a ``.crc`` sibling's path from
        # the file's name, which Hadoop parses as a URI, so a name holding a colon could not be read.
        .config("spark.hadoop.fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
    )
    jars = local_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    if not any(Path(jar).name.startswith("delta-spark_") for jar in jars):
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    gcs_endpoint = GCS_ENDPOINT.read() or os.environ.get("STORAGE_EMULATOR_HOST", "")
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
    if jvm_output is None:
        spark = builder.getOrCreate()
    else:
        with process_output_to(jvm_output):
            spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(SPARK_LOG_LEVEL.read())
    return spark


def start_local_session(app_name: str, jvm_output: Path) -> bool:
    """Start a local session with the JVM's output in ``jvm_output``, unless one is active; True if started."""
    if SparkSession.getActiveSession() is not None:
        return False
    build_local_session(app_name, jvm_output=jvm_output)
    return True
