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
from airflow.providers.databricks.operators.databricks import (
    DatabricksSubmitRunOperator,
    _handle_deferrable_databricks_operator_execution,
)
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
        try:
            exit_code = next(iter(found)).load()(argv)
        except SystemExit as exit_:  # how a failed job ends (see spark_jobs.cli.run_job)
            exit_code = exit_.code if isinstance(exit_.code, int) else 1
    return exit_code or 0, printed.getvalue()


class JobResultFailed(AirflowException):
    """The Databricks run ended, but the job itself reports that it failed."""


class DatabricksSparkJobOperator(DatabricksSubmitRunOperator):
    """Submit a run spec to Databricks, deferred while it runs; return the job's metrics.

    Each try first looks at the run an earlier try of this task submitted (kept in the task's state
    store), as the provider's durable execution does (apache/airflow#76295), here in deferrable mode:

    - still active: re-attach to it and wait;
    - succeeded, and the job's own ``result`` is ``succeeded``: reuse it, no new run;
    - ended any other way (failed, cancelled, gone, or a failed ``result``): submit a fresh run.

    The idempotency token comes from (deployment, dag, run, task, clear number, attempt): a try that
    dies between submitting and saving the run id gets the same run back from Databricks, and a fresh
    attempt gets a new run. The task succeeds only if the job reports ``"result": "succeeded"``.
    """

    RUN_KEY = "databricks_run"

    def __init__(self, *, run_spec: dict, deployment: str, **kwargs: Any) -> None:
        super().__init__(json=run_spec, deferrable=True, **kwargs)
        self.deployment = deployment
        self._metrics: dict | None = None

    def execute(self, context: Context) -> dict:
        dag_run = context["dag_run"]
        clear_number = getattr(dag_run, "clear_number", 0) or 0
        store = context.get("task_state_store")
        earlier = store.get(self.RUN_KEY) if store is not None else None
        attempt = 0
        if earlier and earlier.get("clear_number") == clear_number:
            reused = self._resume(int(earlier["run_id"]), context)
            if reused is not None:
                return reused
            attempt = int(earlier["attempt"]) + 1
        self.idempotency_token = idempotency_token(
            self.deployment, self.dag_id, dag_run.run_id, self.task_id, clear_number, attempt
        )
        self.submit_job(context)
        if store is not None:
            store.set(self.RUN_KEY, {"run_id": self.run_id, "attempt": attempt, "clear_number": clear_number})
        return self._wait(context)

    def _resume(self, run_id: int, context: Context) -> dict | None:
        """Re-attach to or reuse an earlier try's run; None when a fresh run is needed."""
        try:
            state = RunState(**self._hook.get_run(run_id)["state"])
        except AirflowException as error:  # a run whose history expired, or was deleted
            self.log.warning(
                "Databricks run %s of an earlier try cannot be read (%s): submitting a fresh run", run_id, error
            )
            return None
        if not state.is_terminal:
            self.log.info("re-attaching to Databricks run %s of an earlier try (%s)", run_id, state.life_cycle_state)
            self.run_id = run_id
            return self._wait(context)
        if state.is_successful:
            try:
                metrics = self._finish(run_id)
            except JobResultFailed as failed:
                self.log.warning("Databricks run %s of an earlier try: %s; submitting a fresh run", run_id, failed)
                return None
            self.log.info("Databricks run %s of an earlier try succeeded: reusing it, no new run", run_id)
            return metrics
        self.log.warning("Databricks run %s of an earlier try ended %s: submitting a fresh run", run_id, state)
        return None

    def _wait(self, context: Context) -> dict:
        # Defers while the run is active; when it is already over, completes here.
        _handle_deferrable_databricks_operator_execution(self, self._hook, self.log, context)
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
        metrics = last_json_line(output.get("logs") or "")
        if metrics.get("result") != "succeeded":
            raise JobResultFailed(
                f"{self.task_id}: Databricks run {run_id} ended {state.result_state}, but the job reports "
                f"result {metrics.get('result')!r}: {metrics.get('error', 'no error given')}"
            )
        self._metrics = metrics
        self.log.info("%s", summary_line(self.task_id, metrics))
        return metrics


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
        task_id=job,
        run_spec=spec,
        deployment=settings.deployment,
        databricks_conn_id=settings.databricks_conn_id,
        **kwargs,
    )
