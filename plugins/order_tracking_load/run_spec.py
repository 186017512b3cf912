"""The one place that turns (job, parameters) into a Spark run spec: a Databricks ``runs/submit`` payload.

Both backends execute this spec: Databricks runs it on its compute; the local backend calls the same
wheel entry point with the same named parameters on local Spark.
"""

from __future__ import annotations

import hashlib
from typing import Any

from airflow.sdk import XComArg

from order_tracking_load.settings import LoadSettings

PACKAGE_NAME = "order_tracking_spark_jobs"
# batch_report reads a batch's figures back from the audit table (when a run's output lost its metrics line).
ENTRY_POINTS = {"stage_orders": "stage-orders", "merge_orders": "merge-orders", "batch_report": "batch-report"}
ENVIRONMENT_KEY = "order_tracking_jobs"
BATCH_ID_KEY = "batch_id"  # the XCom key, besides the metrics, of the batch a Spark task loaded


def build_run_spec(job: str, parameters: dict[str, Any], settings: LoadSettings) -> dict:
    """The runs/submit payload of one job: a python_wheel_task with named parameters, on the configured compute
    (none on the local backend, which runs the task itself: its rendered spec shows no Databricks compute)."""
    if job not in ENTRY_POINTS:
        raise ValueError(f"unknown job {job!r}; expected one of {sorted(ENTRY_POINTS)}")
    task: dict = {
        "task_key": job,
        "python_wheel_task": {
            "package_name": PACKAGE_NAME,
            "entry_point": ENTRY_POINTS[job],
            # Named (not positional) parameters: the provider would otherwise inject the DAG params here.
            "named_parameters": dict(parameters),
        },
    }
    # Databricks ends the run when the Airflow task's own timeout would: no run outlives its task.
    timeout = int(settings.task_timeout.total_seconds())
    spec: dict = {"run_name": f"order_tracking.{job}", "tasks": [task], "timeout_seconds": timeout}
    if settings.backend == "local":
        return spec
    if settings.compute == "serverless":
        task["environment_key"] = ENVIRONMENT_KEY
        environment = {"environment_version": settings.serverless_environment, "dependencies": [settings.wheel_uri]}
        spec["environments"] = [{"environment_key": ENVIRONMENT_KEY, "spec": environment}]
    elif settings.compute == "existing_cluster":
        task["existing_cluster_id"] = settings.cluster_id
        task["libraries"] = [{"whl": settings.wheel_uri}]
    else:
        task["new_cluster"] = settings.new_cluster
        task["libraries"] = [{"whl": settings.wheel_uri}]
    return spec


def stage_parameters(settings: LoadSettings, listing: XComArg) -> dict[str, Any]:
    """The stage job's named parameters. Per-run values are the listing's outputs (XComArgs, which also
    make the data edge from the listing task) and templates, resolved when the task runs."""
    return {
        "manifest": listing["manifest_uri"],
        "batch-id": listing["batch_id"],
        "staging-table": settings.tables.staging,
        "rejects-table": settings.tables.rejects,
        "audit-table": settings.tables.audit,
        "max-reject-fraction": "{{ params.max_reject_fraction }}",
    }


def merge_parameters(settings: LoadSettings, staged: XComArg) -> dict[str, Any]:
    """The merge job's named parameters: the batch the stage task staged (its ``batch_id`` XCom, the data edge
    from the stage task)."""
    return {
        "batch-id": staged[BATCH_ID_KEY],
        "staging-table": settings.tables.staging,
        "target-table": settings.tables.target,
        "history-table": settings.tables.history,
        "audit-table": settings.tables.audit,
    }


def report_parameters(job: str, batch_id: str, settings: LoadSettings, since: str | None = None) -> dict[str, Any]:
    """The batch_report job's named parameters: which job's figures to read back, for which batch, and, after
    a failed run, the run's start (ISO 8601), so that an earlier run's record is not taken for its."""
    return {
        "job": job,
        "batch-id": batch_id,
        "audit-table": settings.tables.audit,
        **({"since": since} if since else {}),
    }


def command_line(spec: dict) -> tuple[str, list[str]]:
    """The entry point and argv that a spec's single task runs (how Databricks calls a wheel entry point)."""
    (task,) = spec["tasks"]
    wheel_task = task["python_wheel_task"]
    argv = [f"--{name}={value}" for name, value in wheel_task["named_parameters"].items()]
    return wheel_task["entry_point"], argv


def idempotency_token(
    deployment: str, dag_id: str, run_id: str, task_id: str, clear_number: int = 0, attempt: int = 0
) -> str:
    """A 64-character token for one Databricks run of a task.

    The same for every submission of one attempt (a retry after a lost worker gets the same run back);
    a new ``attempt`` after a run failed, and a new clear number, get a new run. The deployment keeps
    two Airflow deployments that share a workspace (and DAG and run ids) from sharing runs.
    """
    parts = (deployment, dag_id, run_id, task_id, str(clear_number), str(attempt))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
