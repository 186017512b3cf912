"""The two executors of a run spec: Databricks (``runs/submit``) and local Spark (the same entry point here).

Both return the job's JSON metrics (the last line it prints) as the task's XCom and log them as one line.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from contextlib import redirect_stdout
from importlib.metadata import entry_points
from typing import Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.hooks.databricks import RunState
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import BaseOperator, Context

from order_tracking_load.run_spec import build_run_spec, command_line, idempotency_token
from order_tracking_load.settings import LoadSettings


def last_json_line(output: str) -> dict:
    """The last line of a job's output that is a JSON object (the job's metrics)."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise AirflowException("the job printed no JSON metrics line")


def summary_line(job: str, metrics: dict) -> str:
    """One log line with a job's figures."""
    keys = (
        "rows_read",
        "rows_rejected",
        "files_rejected",
        "files_redelivered",
        "rows_collapsed",
        "rows_staged",
        "rows_inserted",
        "rows_updated",
        "rows_skipped_stale",
        "rows_unchanged",
        "target_version",
    )
    figures = " ".join(f"{key}={metrics[key]}" for key in keys if metrics.get(key) is not None)
    return f"{job} batch={metrics.get('batch_id')} files={len(metrics.get('files') or [])} {figures}"


def run_entry_point(spec: dict) -> tuple[int, str]:
    """Call a spec's wheel entry point here, with its parameters as ``--name=value`` (as Databricks does).

    Returns the exit code and what the job printed on stdout.
    """
    entry_point, argv = command_line(spec)
    found = entry_points(group="console_scripts", name=entry_point)
    if not found:
        raise AirflowException(f"entry point {entry_point!r} is not installed: pip install the spark_jobs package")
    printed = io.StringIO()
    with redirect_stdout(printed):
        exit_code = next(iter(found)).load()(argv)
    return exit_code, printed.getvalue()


class DatabricksSparkJobOperator(DatabricksSubmitRunOperator):
    """Submit a run spec to Databricks, deferred while it runs; return the job's metrics.

    The idempotency token comes from (dag_id, run_id, task_id, clear number), so a retry re-attaches to
    the run the first try submitted instead of starting a second one. Whatever path the provider takes
    on a retry, the task succeeds only if Databricks reports that run as successful (apache/airflow#64828).
    """

    def __init__(self, *, run_spec: dict, **kwargs: Any) -> None:
        super().__init__(json=run_spec, deferrable=True, **kwargs)
        self._metrics: dict | None = None

    def execute(self, context: Context) -> dict:
        dag_run = context["dag_run"]
        self.idempotency_token = idempotency_token(
            self.dag_id, dag_run.run_id, self.task_id, getattr(dag_run, "clear_number", 0) or 0
        )
        super().execute(context)  # defers while the run is active; returns when it was already over
        return self._finish(self.run_id)

    def execute_complete(self, context: Context, event: dict) -> dict:
        super().execute_complete(context, event)
        return self._finish(event["run_id"])

    def _finish(self, run_id: int | None) -> dict:
        if self._metrics is not None:
            return self._metrics
        if run_id is None:
            raise AirflowException(f"{self.task_id}: no Databricks run id")
        run = self._hook.get_run(run_id)
        state = RunState(**run["state"])
        if not state.is_successful:
            raise AirflowException(f"{self.task_id}: Databricks run {run_id} did not succeed: {state}")
        task_runs = run.get("tasks") or [{"run_id": run_id}]
        output = self._hook.get_run_output(task_runs[0]["run_id"])
        self._metrics = last_json_line(output.get("logs") or "")
        self.log.info("%s", summary_line(self.task_id, self._metrics))
        return self._metrics


class LocalSparkJobOperator(BaseOperator):
    """Run a run spec's entry point, with the same parameters, on local Spark with Delta."""

    template_fields: Sequence[str] = ("run_spec",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"run_spec": "json"}

    def __init__(self, *, run_spec: dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_spec = run_spec

    def execute(self, context: Context) -> dict:
        entry_point, argv = command_line(self.run_spec)
        self.log.info("running %s %s", entry_point, " ".join(argv))
        exit_code, output = run_entry_point(self.run_spec)
        metrics = last_json_line(output)
        if exit_code != 0:
            raise AirflowException(f"{self.task_id} failed: {metrics.get('error', 'see the log above')}")
        self.log.info("%s", summary_line(self.task_id, metrics))
        return metrics


def spark_job(job: str, parameters: dict[str, str], settings: LoadSettings, **kwargs: Any) -> BaseOperator:
    """The task that runs ``job``: the same run spec, executed by the configured backend."""
    spec = build_run_spec(job, parameters, settings)
    if settings.backend == "local":
        return LocalSparkJobOperator(task_id=job, run_spec=spec, **kwargs)
    return DatabricksSparkJobOperator(
        task_id=job, run_spec=spec, databricks_conn_id=settings.databricks_conn_id, **kwargs
    )
