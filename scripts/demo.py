"""`make demo`: run the real DAG offline on the seed data and print what happened.

A GCS emulator on loopback stands in for the bucket; the Spark jobs run on local Spark with Delta;
Airflow runs the DAG with `airflow dags test` on a SQLite metadata DB under .local/demo/.
The Delta tables persist between demos, so a second demo shows 0 inserts and 0 updates.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".local" / "demo"
SEED = REPO / "tests" / "data" / "seed"
BIN = Path(sys.executable).parent
BUCKET = "order-tracking"
DAG_ID = "order_tracking_incremental_load"
PORT = int(os.environ.get("DEMO_GCS_PORT", "4443"))


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def fail(message: str) -> None:
    print(f"demo failed: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def preflight() -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        fail("Java is missing. Install a Java 17 runtime (e.g. apt-get install openjdk-17-jre-headless).")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", PORT)) == 0:
            fail(f"port {PORT} is taken; stop what uses it or run DEMO_GCS_PORT=<free port> make demo")


def environment() -> dict[str, str]:
    endpoint = f"http://127.0.0.1:{PORT}"
    return {
        **os.environ,
        "AIRFLOW_HOME": str(DEMO / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{DEMO / 'airflow' / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "demo"}}
        ),
        "STORAGE_EMULATOR_HOST": endpoint,
        "ORDER_TRACKING_SPARK_BACKEND": "local",
        "ORDER_TRACKING_LOCAL_TABLE_ROOT": str(DEMO / "tables"),
        "ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS": "10",
        "ORDER_TRACKING_SENSOR_POKE_SECONDS": "2",
        "ORDER_TRACKING_RETRIES": "0",
        "ORDER_TRACKING_SHUFFLE_PARTITIONS": "2",
    }


def start_emulator() -> subprocess.Popen:
    process = subprocess.Popen(
        [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(PORT), "--in-memory", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail(f"the GCS emulator exited with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", PORT)) == 0:
                return process
        time.sleep(0.2)
    process.terminate()
    fail("the GCS emulator did not start within 30 s")
    raise AssertionError  # unreachable


def bucket(env: dict[str, str]):
    os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="demo", credentials=AnonymousCredentials())
    if not client.bucket(BUCKET).exists():
        client.create_bucket(BUCKET)
    return client, client.bucket(BUCKET)


def run_dag(env: dict[str, str]) -> tuple[int, Path]:
    log_path = DEMO / "dags-test.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(BIN / "airflow"), "dags", "test", DAG_ID],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in process.stdout:
            log.write(line)
            if "[DAG TEST] starting task_id=" in line:
                task = line.split("task_id=", 1)[1].split()[0]
                say(f"phase: {task}")
            elif "order_tracking_load.spark_backends" in line and " batch=" in line:
                print("    " + line.split("[info", 1)[-1].split("] ", 1)[-1].split(" [airflow")[0].strip(), flush=True)
            elif "Skipping task" in line or "left alone" in line or ("archived " in line and "rejected" in line):
                print("    " + line.strip()[:200], flush=True)
        return process.wait(), log_path


def show_tables(env: dict[str, str]) -> None:
    os.environ.update({key: value for key, value in env.items() if key.startswith(("ORDER_TRACKING_", "STORAGE_"))})
    sys.path.insert(0, str(REPO))
    from spark_jobs.session import build_local_session

    # The JVM's start-up chatter (Ivy's jar resolution) goes to stderr: keep the summary readable.
    saved_stderr = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            spark = build_local_session("order-tracking-demo")
            spark.sparkContext.setLogLevel("ERROR")
        finally:
            os.dup2(saved_stderr, 2)
    tables = DEMO / "tables"
    audit = spark.read.format("delta").load(str(tables / "orders_load_audit")).orderBy("merge_finished_at")
    say("audit table: one record per batch (a repeated demo re-uploads the same files: 0 inserted, 0 updated)")
    audit.select(
        "batch_id",
        "rows_read",
        "rows_rejected",
        "rows_collapsed",
        "rows_staged",
        "rows_inserted",
        "rows_updated",
        "rows_unchanged",
        "target_version",
    ).show(truncate=48)
    target = spark.read.format("delta").load(str(tables / "orders"))
    say(f"target table {tables / 'orders'}: {target.count()} rows; the first 10")
    target.orderBy("tracking_num").select(
        "tracking_num", "order_num", "status", "last_update_timestamp", "package_deliver_date", "address"
    ).show(10, truncate=False)
    spark.stop()


def main() -> int:
    started = time.monotonic()
    preflight()
    env = environment()
    (DEMO / "airflow").mkdir(parents=True, exist_ok=True)
    say("preparing Airflow's metadata DB (.local/demo/airflow)")
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True)
    if migrate.returncode != 0:
        fail("airflow db migrate failed:\n" + migrate.stdout[-2000:] + migrate.stderr[-2000:])
    say(f"starting the GCS emulator on 127.0.0.1:{PORT}")
    emulator = start_emulator()
    try:
        client, demo_bucket = bucket(env)
        for path in sorted(SEED.glob("*.csv")):
            demo_bucket.blob(f"input/{path.name}").upload_from_filename(str(path))
        say(f"uploaded {len(list(SEED.glob('*.csv')))} seed files to gs://{BUCKET}/input/")
        say("running the DAG: airflow dags test " + DAG_ID + " (local Spark backend)")
        code, log_path = run_dag(env)
        if code != 0:
            fail(f"the DAG run failed; its log is {log_path}")
        say(f"objects in gs://{BUCKET} after the run:")
        for blob in client.list_blobs(BUCKET):
            print(f"    gs://{BUCKET}/{blob.name} ({blob.size} bytes)")
        show_tables(env)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    say(f"done in {time.monotonic() - started:.0f} s; full Airflow log: {DEMO / 'dags-test.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
