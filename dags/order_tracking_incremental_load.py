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
   (files quarantined to `rejected/<date>/<run>/`). Nothing moves if stage or merge failed.
6. **report_quarantined_files** - fails the run, naming each file the stage quarantined (rejected whole,
   or with more of its rows rejected than the reject limit) and why; the other files loaded and are
   archived, and the next run goes on. Fix the file and upload it again. The batch fails at the stage only
   when no file of it loads.

A run archives under the date and hour its run id carries: `scheduled__2026-11-20T15:00:00+00:00`
moves its files to `archive/2026-11-20/15/`. A backfill run replays the archive hours its data interval
ends in, so `backfill__2026-11-20T15:00:00+00:00` replays that folder, and a backfill over a range
reloads each archived file once; with nothing archived there it is skipped at once. A manual run with
`replay_date` replays every file archived under that date.

**Backfill dialog (Airflow 3.3):** tick *Override parameters on existing runs*, or the Run Parameters
do not reach the runs (apache/airflow#64939); type *Max Active Runs* (e.g. 10): it is pre-filled with 1.
A failure a retry cannot change (reject limit, bad argument) fails at once, without retries. A skipped
task's reason is the last line of its log.
The Spark jobs run on Databricks (`ORDER_TRACKING_SPARK_BACKEND=databricks`) or on local Spark (`local`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, chain

from order_tracking_load import tasks
from order_tracking_load.run_spec import merge_parameters, stage_parameters
from order_tracking_load.sensing import NewFilesSensor
from order_tracking_load.settings import load_settings
from order_tracking_load.spark_backends import spark_job

SETTINGS = load_settings()

with DAG(
    dag_id="order_tracking_incremental_load",
    # Data intervals (not trigger times): a backfill run replays what was archived within its interval.
    schedule=CronDataIntervalTimetable(SETTINGS.schedule, timezone="UTC") if SETTINGS.schedule else None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    # Scheduled and manual runs all read input/: one at a time, or two would load the same files twice.
    # Backfill runs (each its own archive hours) have their own limit, which this one does not bound.
    max_active_runs=1,
    description="Order-tracking CSVs from GCS into Delta tables: sense, list, stage, merge, archive",
    doc_md=__doc__,
    tags=["order-tracking", "gcs", "databricks" if SETTINGS.backend == "databricks" else "local-spark", "delta"],
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
            None,
            type=["null", "string"],
            format="date",
            title="Replay date",
            description="Reload the archived files of this date instead of the input folder (empty: a normal run)",
        ),
        "max_reject_fraction": Param(
            SETTINGS.max_reject_fraction,
            type="number",
            # The range sits in allOf so the trigger form does not clamp 10 to 1 ("accept all") unseen: a
            # value outside it is refused, with jsonschema's message, when the run is triggered.
            allOf=[{"minimum": 0, "maximum": 1}],
            title="Reject limit (fraction of rows)",
            description=(
                "A fraction from 0 to 1 (0.1 = 10%): a file with more of its rows rejected is quarantined; the "
                "batch fails when no file of it loads"
            ),
        ),
    },
):
    wait_for_new_files = NewFilesSensor(task_id="wait_for_new_files", settings=SETTINGS)
    list_new_files = tasks.list_new_files(SETTINGS)
    stage_orders = spark_job("stage_orders", stage_parameters(SETTINGS, list_new_files), SETTINGS)
    merge_orders = spark_job(
        "merge_orders",
        merge_parameters(SETTINGS, stage_orders.output),
        SETTINGS,
        target=tasks.target_table_asset(SETTINGS),
    )
    archive_loaded_files = tasks.archive_loaded_files(SETTINGS, listing=list_new_files, load_result=merge_orders.output)
    report_quarantined_files = tasks.report_quarantined_files(SETTINGS, moved=archive_loaded_files)

    chain(
        wait_for_new_files, list_new_files, stage_orders, merge_orders, archive_loaded_files, report_quarantined_files
    )
