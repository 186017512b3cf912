"""
# Order-tracking incremental load

Loads order-tracking CSV files from GCS into Delta tables:

1. **wait_for_new_files** - a deferrable GCS sensor on the input prefix (waits in the triggerer).
   No file before the timeout: the run is *skipped*, not failed.
2. **list_new_files** - lists the exact `.csv` objects (name, generation, size) and writes the run's
   manifest to `manifests/<run>.json`. Other objects are left alone and logged.
3. **stage_orders** - Spark job: validate, clean and dedupe the manifest's files into the staging table;
   bad rows go to the rejects table.
4. **merge_orders** - Spark job: one atomic, latest-wins MERGE into the target (plus history and audit).
   Returns its metrics to XCom. When it changed the target (rows inserted or updated), it emits an event,
   with the load's figures in `extra`, on the target table's Asset, named by its URI
   (`databricks://<workspace>/<catalog>/<schema>/orders`, or `file://<table root>/orders` locally),
   through the AssetAlias `order_tracking_target_updates`. A replay that changed nothing emits none.
5. **archive_loaded_files** - moves exactly the manifest's objects to `archive/<date>/<hour>/<run>/`
   (files rejected whole to `rejected/<date>/<run>/`). Nothing moves if stage or merge failed.

Files are archived under `archive/<date>/<hour>/<run>/` of the run's logical time (UTC). A backfill run
replays the files archived in the hours that start within its data interval, so a backfill over a range
reloads each archived file once; with nothing archived there it is skipped at once. A manual run with
`replay_date` replays every file archived under that date.
The Spark jobs run on Databricks (`ORDER_TRACKING_SPARK_BACKEND=databricks`) or on local Spark (`local`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, chain

from order_tracking_load import tasks
from order_tracking_load.gcs_files import NewFilesSensor
from order_tracking_load.run_spec import merge_parameters, stage_parameters
from order_tracking_load.settings import load_settings
from order_tracking_load.spark_backends import spark_job

SETTINGS = load_settings()

with DAG(
    dag_id="order_tracking_incremental_load",
    # Data intervals (not trigger times): a backfill run replays what was archived within its interval.
    schedule=CronDataIntervalTimetable(SETTINGS.schedule, timezone="UTC") if SETTINGS.schedule else None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["order-tracking", "gcs", "databricks", "delta"],
    default_args={
        "owner": "data-platform",
        "retries": SETTINGS.retries,
        "retry_delay": SETTINGS.retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": pendulum.duration(minutes=30),
        "execution_timeout": SETTINGS.task_timeout,
    },
    params={
        "replay_date": Param(
            None, type=["null", "string"], format="date", description="Reload the archived files of this date"
        ),
        "max_reject_fraction": Param(
            SETTINGS.max_reject_fraction, type="number", minimum=0, maximum=1, description="Reject limit of a batch"
        ),
    },
):
    wait_for_new_files = NewFilesSensor(task_id="wait_for_new_files", settings=SETTINGS)
    list_new_files = tasks.list_new_files(SETTINGS)
    stage_orders = spark_job("stage_orders", stage_parameters(SETTINGS, list_new_files), SETTINGS)
    merge_orders = spark_job(
        "merge_orders", merge_parameters(SETTINGS, list_new_files), SETTINGS, target=tasks.target_table_asset(SETTINGS)
    )
    archive_loaded_files = tasks.archive_loaded_files(
        SETTINGS, listing=list_new_files, stage_result=stage_orders.output
    )

    chain(wait_for_new_files, list_new_files, stage_orders, merge_orders, archive_loaded_files)
