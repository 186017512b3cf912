"""Run the stage and merge jobs through a Spark Connect client, as Databricks serverless compute runs them.

    python -m tests.spark_jobs.connect_run TABLE_ROOT BATCH_ID INPUT [INPUT ...]

Starts a local Spark Connect server (a JVM listening on a free port of 127.0.0.1, Delta loaded as in ``make jars``),
opens a Connect session to it over gRPC and runs both jobs there: no code of theirs can reach the
driver's JVM or the RDD API. Prints both jobs' metrics as one JSON line. It is a process of its own
because opening a Connect session switches this process's PySpark functions to their Connect forms.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid

from pyspark.sql import SparkSession
from pyspark.sql.connect.session import SparkSession as ConnectSession

from spark_jobs.merge_orders import merge_orders
from spark_jobs.session import build_local_session
from spark_jobs.stage_orders import stage_orders


def free_port() -> int:
    """A port of 127.0.0.1 that no one listens on now (Connect's own default, 15002, may be taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect_session() -> SparkSession:
    """A Spark Connect session to a local server started for it, with Delta's SQL extension and catalog.

    The server is the jobs' own local session (``build_local_session``) with Spark's Connect plugin,
    listening on a free port; the client connects to that port with a token made for this run, as
    ``remote("local")`` does on port 15002.
    """
    port = free_port()
    os.environ.setdefault("SPARK_CONNECT_AUTHENTICATE_TOKEN", str(uuid.uuid4()))
    server = {
        "spark.master": "local[2]",
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.shuffle.partitions": "1",
    }
    build_local_session("connect-server", server)
    # What ``remote("local")`` sets too: PySpark's functions then build Connect expressions in this process.
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    return ConnectSession.builder.remote(f"sc://localhost:{port}").getOrCreate()


def main(argv: list[str]) -> int:
    """Stage and merge one batch of ``inputs`` into path tables under ``root``; print the metrics."""
    root, batch_id, *inputs = argv
    spark = connect_session()
    try:
        tables = {name: f"{root}/{name}" for name in ("staging", "rejects", "audit", "target", "history")}
        staged = stage_orders(
            spark,
            [{"uri": uri} for uri in inputs],
            batch_id,
            tables["staging"],
            tables["rejects"],
            tables["audit"],
            1.0,  # every file loads that is not rejected whole: bad_rows.csv's 2 of 3 rows are rejected
        )
        merged = merge_orders(spark, batch_id, tables["staging"], tables["target"], tables["history"], tables["audit"])
        print(json.dumps({"session": type(spark).__module__, "stage": staged, "merge": merged}, default=str))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
