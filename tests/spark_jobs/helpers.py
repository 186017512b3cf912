"""Running the jobs in-process on the test session, and reading their tables back."""

from __future__ import annotations

import inspect
from pathlib import Path

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.conf import RuntimeConfig

from order_tracking_load.settings import Tables
from spark_jobs.merge_orders import merge_orders
from spark_jobs.schema import ORDER_COLUMNS
from spark_jobs.stage_orders import stage_orders

BUSINESS = list(ORDER_COLUMNS)
# The seed files' header line, for tests that write their own CSV files.
HEADER = "order_num,tracking_num,pck_recieved_date,package_deliver_date,status,address,last_update_timestamp\n"


def load_batch(
    spark: SparkSession, tables: Tables, files: list[Path], batch_id: str, max_reject_fraction: float = 0.1
) -> tuple[dict, dict]:
    """Stage then merge one batch of local files; return both jobs' metrics."""
    staged = stage_orders(
        spark,
        [{"uri": str(path)} for path in files],
        batch_id,
        tables.staging,
        tables.rejects,
        tables.audit,
        max_reject_fraction,
    )
    merged = merge_orders(spark, batch_id, tables.staging, tables.target, tables.history, tables.audit)
    return staged, merged


def read(spark: SparkSession, path: str) -> DataFrame:
    """A path-based Delta table."""
    return spark.read.format("delta").load(path)


def write_csv(directory: Path, name: str, text: str | bytes) -> Path:
    """Write a CSV file byte for byte (no newline translation)."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def refusing_options(allowed: set[str], refused: list[str]):
    """A ``RuntimeConfig.set`` refusing every key but ``allowed``, as serverless compute does; notes each refused."""
    set_option = RuntimeConfig.set

    def set_or_refuse(self, key, value):
        if key not in allowed:
            refused.append(key)
            raise PySparkException(message=f"[CONFIG_NOT_AVAILABLE] Configuration {key} is not available.")
        set_option(self, key, value)

    return set_or_refuse


def refusing_reads(allowed: set[str], refused: list[str]):
    """A ``RuntimeConfig.get`` refusing, to the job code, every key but ``allowed``, as serverless compute
    refuses reads of the options it does not expose; notes each refused. PySpark's own reads still work."""
    get_option = RuntimeConfig.get
    job_code = str(Path(__file__).resolve().parents[2] / "spark_jobs")

    def get_or_refuse(self, key, *default):
        caller = inspect.stack()[1].filename
        if key not in allowed and caller.startswith(job_code):
            refused.append(key)
            raise PySparkException(message=f"[CONFIG_NOT_AVAILABLE] Configuration {key} is not available.")
        return get_option(self, key, *default)

    return get_or_refuse
