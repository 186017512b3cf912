"""TaskFlow tasks of the DAG. They read the settings when they run, from the worker's environment."""

from __future__ import annotations

from airflow.sdk import Asset, Context, task

from order_tracking_load import gcs_files
from order_tracking_load.settings import LoadSettings, load_settings


@task(task_id="list_new_files")
def list_new_files(**context: Context) -> dict:
    """List the run's .csv objects (input, or the archive of its date for a replay) and write the manifest."""
    return gcs_files.list_and_write_manifest(load_settings(), context)


@task(task_id="archive_loaded_files")
def archive_loaded_files(listing: dict, stage_result: dict, **context: Context) -> dict:
    """Move exactly the manifest's files: loaded ones to archive/, files rejected whole to rejected/."""
    return gcs_files.archive_loaded_files(load_settings(), listing, stage_result, context)


def target_table_asset(settings: LoadSettings) -> Asset:
    """The target table as an Airflow Asset, named by its URI, so downstream DAGs can schedule on its updates."""
    target = settings.tables.target
    if settings.backend == "local":
        return Asset(uri=f"file://{target}")
    return Asset(uri=f"databricks://{settings.databricks_workspace}/{target.replace('.', '/')}")
