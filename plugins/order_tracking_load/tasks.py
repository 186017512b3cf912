"""TaskFlow tasks of the DAG. They take the settings the DAG file read once, when it was parsed."""

from __future__ import annotations

from airflow.sdk import Asset, Context, XComArg, task

from order_tracking_load import archive, manifests
from order_tracking_load.settings import LoadSettings


def list_new_files(settings: LoadSettings) -> XComArg:
    """The listing task: each of the manifest's fields is also its own output, for the Spark tasks' edges."""

    @task(task_id="list_new_files", multiple_outputs=True)
    def list_new_files(**context: Context) -> dict:
        """List the run's .csv objects (input, or the archive of its interval for a replay) and write the manifest."""
        return manifests.list_and_write_manifest(settings, context)

    return list_new_files()


def archive_loaded_files(settings: LoadSettings, listing: XComArg, load_result: XComArg) -> XComArg:
    """The archive task, fed the listing and the merge job's metrics (with the stage's per-file results)."""

    @task(task_id="archive_loaded_files")
    def archive_loaded_files(listing: dict, load_result: dict, **context: Context) -> dict:
        """Move exactly the manifest's files: loaded ones to archive/, files rejected whole to rejected/."""
        return archive.archive_loaded_files(settings, listing, load_result, context)

    return archive_loaded_files(listing=listing, load_result=load_result)


def report_quarantined_files(settings: LoadSettings, moved: XComArg) -> XComArg:
    """The run's last task, fed what the archive moved and the files quarantined."""

    @task(task_id="report_quarantined_files")
    def report_quarantined_files(moved: dict) -> dict:
        """Fail the run, naming the files the stage quarantined (rejected whole, or over the reject limit)."""
        return archive.report_quarantined_files(settings, moved)

    return report_quarantined_files(moved=moved)


def target_table_asset(settings: LoadSettings) -> Asset:
    """The target table as an Airflow Asset, named by its URI, so downstream DAGs can schedule on its updates."""
    target = settings.tables.target
    if settings.backend == "local":
        return Asset(uri=f"file://{target}")
    return Asset(uri=f"databricks://{settings.databricks_workspace}/{target.replace('.', '/')}")
