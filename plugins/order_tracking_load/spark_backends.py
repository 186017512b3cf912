"""The two executors of a run spec: Databricks (``runs/submit``) and local Spark (the same entry point here).

Both return the job's JSON metrics (the last line it prints) as the task's XCom and log them as one line.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import RunState
from airflow.providers.databricks.operators.databricks import (
    DatabricksSubmitRunOperator,
    _handle_deferrable_databricks_operator_execution,
)
from airflow.sdk import Asset, AssetAlias, BaseOperator, Context, conf

from order_tracking_load.run_spec import (
    BATCH_ID_KEY,
    build_run_spec,
    command_line,
    idempotency_token,
    report_parameters,
)
from order_tracking_load.settings import LoadSettings
from spark_jobs.contracts import JobMetrics

# On a failure, the JVM's lines that explain it: each ERROR line and the exception chain below it.
JVM_ERROR_LINES = 80
JVM_FRAMES_PER_EXCEPTION = 3


def summary_line(job: str, metrics: JobMetrics, seconds: float | None = None) -> str:
    """The load summary: one short line with the batch, its files, the time taken and the job's figures."""
    files = len(metrics.files)
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"{job} loaded batch {metrics.batch_id} ({files} file{'' if files == 1 else 's'}){took}: {metrics.summary()}"


# The merge task's outlet. Through an alias, a run emits an event on the target's Asset only when it
# adds one, so DAGs scheduled on the target run only when it changed.
TARGET_UPDATES = AssetAlias("order_tracking_target_updates")


def announce_target_update(context: Context, target: Asset | None, metrics: JobMetrics, log: Any) -> None:
    """Emit an event on the target's Asset, with the load's figures, when the load changed the target."""
    if target is None:
        return
    if not metrics.changed_target:
        log.info("the target did not change (0 inserted, 0 updated): no Asset event for %s", target.uri)
        return
    context["outlet_events"][TARGET_UPDATES].add(target, extra={"batch_id": metrics.batch_id, **metrics.figures()})
    log.info("Asset event for %s: %d inserted, %d updated", target.uri, metrics.rows_inserted, metrics.rows_updated)


def report_job(operator: Any, context: Context, metrics: JobMetrics, seconds: float | None) -> dict:
    """What both backends do with a succeeded job's metrics: announce a changed target on its Asset,
    log the load summary as the task's last line, and return the metrics as the task's XCom (the batch id
    also under its own key, which the next job's parameters take)."""
    announce_target_update(context, operator.target, metrics, operator.log)
    context["ti"].xcom_push(key=BATCH_ID_KEY, value=metrics.batch_id)
    operator.log.info("%s", summary_line(operator.task_id, metrics, seconds))
    return metrics.to_dict()


def jvm_log_file(context: Context) -> Path:
    """Where a local task's JVM writes: beside the task's log, in Airflow's default log file layout."""
    ti = context["ti"]
    folder = Path(conf.get("logging", "base_log_folder")) / f"dag_id={ti.dag_id}" / f"run_id={ti.run_id}"
    folder /= f"task_id={ti.task_id}"
    if ti.map_index is not None and ti.map_index >= 0:
        folder /= f"map_index={ti.map_index}"
    return folder / f"attempt={ti.try_number}.spark.log"


_LOG4J_LINE = re.compile(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?P<level>[A-Z]+) ")


def jvm_errors(path: Path, limit: int = JVM_ERROR_LINES) -> str:
    """The lines of a JVM log that explain a failure: each log4j ERROR line with the exception under it,
    its ``Caused by:`` chain and the first frames of each. Nothing when the file is absent or has no error.

    Start-up warnings and Spark's other output are left out: they are there on every run.
    """
    if not path.exists():
        return ""
    kept: list[str] = []
    in_error, frames = False, 0
    for line in path.read_text(errors="replace").splitlines():
        logged = _LOG4J_LINE.match(line)
        if logged:
            in_error, frames = logged["level"] == "ERROR", 0
            if in_error:
                kept.append(line)
            continue
        stripped = line.strip()
        if not in_error or not stripped or stripped.startswith("..."):
            continue
        if stripped.startswith("at "):
            frames += 1
            if frames <= JVM_FRAMES_PER_EXCEPTION:
                kept.append(line)
        else:  # the exception, a line of its message, or a "Caused by:"
            frames = 0
            kept.append(line)
    return "\n".join(kept[-limit:])


def job_failure(task_id: str, metrics: JobMetrics | None, detail: str) -> AirflowException:
    """The exception that fails a Spark task: ``AirflowFailException`` (no retry) when the job says a retry
    cannot change its outcome, else ``AirflowException`` (retried)."""
    if metrics is not None and metrics.retryable is False:
        return AirflowFailException(f"{task_id} failed, and a retry would fail the same way (not retried): {detail}")
    return AirflowException(f"{task_id} failed: {detail}")


def entry_point(spec: dict) -> tuple[Any, list[str]]:
    """A spec's wheel entry point, loaded here, and its parameters as ``--name=value`` (as Databricks passes them)."""
    name, argv = command_line(spec)
    found = entry_points(group="console_scripts", name=name)
    if not found:
        raise AirflowException(f"entry point {name!r} is not installed: pip install the spark_jobs package")
    return next(iter(found)).load(), argv


def call_entry_point(main: Any, argv: list[str]) -> int:
    """Call an entry point as Databricks does; its exit code (a failed job raises ``SystemExit`` with its result
    line as the message: status 1)."""
    try:
        return main(argv) or 0
    except SystemExit as exit_:  # how a failed job ends (see spark_jobs.cli.run_job)
        return exit_.code if isinstance(exit_.code, int) else 1


def run_entry_point(spec: dict) -> tuple[int, str]:
    """Call a spec's wheel entry point here; returns the exit code and what the job printed on stdout."""
    main, argv = entry_point(spec)
    printed = io.StringIO()
    with redirect_stdout(printed):
        exit_code = call_entry_point(main, argv)
    return exit_code, printed.getvalue()


def run_is_gone(error: AirflowException) -> bool:
    """True when the Jobs API says the run does not exist (404, or its 400 "Run … does not exist").

    Anything else (a 5xx after the hook's own retries, a refused token, an unknown state) says nothing
    about the run, which may still be going: never a reason to submit a second run of the batch.
    """
    if not isinstance(error, DatabricksApiError):
        return False
    return error.http_status_code == 404 or (error.http_status_code == 400 and "does not exist" in str(error))


def task_run(run: dict, task_key: str) -> dict:
    """The run's latest attempt of its task: a repaired run lists one entry per attempt."""
    attempts = [task for task in run.get("tasks") or [] if task.get("task_key") == task_key]
    if not attempts:
        return {"run_id": run["run_id"]}
    return max(attempts, key=lambda task: task.get("attempt_number") or 0)


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

    def __init__(self, *, run_spec: dict, settings: LoadSettings, target: Asset | None = None, **kwargs: Any) -> None:
        # The provider reads these options once, when it is imported; read them when the DAG is parsed.
        for option in ("spark_inject_parent_job_info", "spark_inject_transport_info"):
            kwargs.setdefault(f"openlineage_inject_{option.removeprefix('spark_inject_')}", conf.getboolean(
                "openlineage", option, fallback=False
            ))  # fmt: skip
        super().__init__(json=run_spec, deferrable=True, **kwargs)
        self.settings = settings
        self.target = target
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
            self.settings.deployment, self.dag_id, dag_run.run_id, self.task_id, clear_number, attempt
        )
        self.submit_job(context)
        if store is not None:
            store.set(self.RUN_KEY, {"run_id": self.run_id, "attempt": attempt, "clear_number": clear_number})
        return self._wait(context)

    def _resume(self, run_id: int, context: Context) -> dict | None:
        """Re-attach to or reuse an earlier try's run; None when a fresh run is needed."""
        try:
            state = RunState(**self._hook.get_run(run_id)["state"])
        except AirflowException as error:
            if not run_is_gone(error):
                raise AirflowException(
                    f"{self.task_id}: Databricks run {run_id} of an earlier try cannot be read ({error}); it may "
                    "still be running, so no second run is submitted: the next try looks at it again"
                ) from error
            self.log.warning("Databricks run %s of an earlier try does not exist: submitting a fresh run", run_id)
            return None
        if not state.is_terminal:
            self.log.info("re-attaching to Databricks run %s of an earlier try (%s)", run_id, state.life_cycle_state)
            self.run_id = run_id
            return self._wait(context)
        if state.is_successful:
            try:
                metrics = self._finish(run_id, context)
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
        return self._finish(self.run_id, context)

    def _report(self, context: Context) -> JobMetrics:
        """The batch's figures as the job committed them, read from the audit table by a batch_report run."""
        run_id, state, metrics = self._read_audit(context)
        if not state.is_successful or metrics is None or not metrics.succeeded:
            raise AirflowException(
                f"{self.task_id}: its run succeeded but printed no figures, and the audit table could not give them "
                f"(batch_report run {run_id} {state}: {metrics.error if metrics else 'no metrics line'})"
            )
        self.log.info("the batch's figures come from the audit table (batch_report run %s)", run_id)
        return metrics

    def _read_audit(self, context: Context, since: str | None = None) -> tuple[int, RunState, JobMetrics | None]:
        """A batch_report run of the batch's audit record (of a job started at ``since`` or later, if given):
        a run of its own (same compute and wheel, its own idempotency token), awaited here: it reads one row."""
        batch_id = self.json["tasks"][0]["python_wheel_task"]["named_parameters"]["batch-id"]
        parameters = report_parameters(self.task_key, batch_id, self.settings, since)
        spec = build_run_spec("batch_report", parameters, self.settings)
        dag_run = context["dag_run"]
        spec["idempotency_token"] = idempotency_token(
            self.settings.deployment, self.dag_id, dag_run.run_id, f"{self.task_id}.report{'.failed' if since else ''}",
            dag_run.clear_number or 0, context["ti"].try_number,
        )  # fmt: skip
        run_id = self._hook.submit_run(spec)
        while not (state := RunState(**(run := self._hook.get_run(run_id))["state"])).is_terminal:
            time.sleep(self.polling_period_seconds)
        _, metrics = self._output(run, "batch_report")
        return run_id, state, metrics

    @property
    def task_key(self) -> str:
        """The run's task, as the spec names it: the job, whatever the Airflow task id (a TaskGroup prefixes it)."""
        return self.json["tasks"][0]["task_key"]

    def _output(self, run: dict, task_key: str) -> tuple[dict, JobMetrics | None]:
        """The output of a run's task (its latest attempt), and the metrics line it holds, if any: in its logs,
        else in its ``error`` (a failed job's exit carries the line, for when the logs come back empty)."""
        output = self._hook.get_run_output(task_run(run, task_key)["run_id"])
        metrics = JobMetrics.from_output(output.get("logs") or "")
        return output, metrics or JobMetrics.from_output(output.get("error") or "")

    def execute_complete(self, context: Context, event: dict) -> dict:
        try:
            super().execute_complete(context, event)
        except AirflowException as failed:
            raise self._failure(event["run_id"], str(failed), context) from None
        return self._finish(event["run_id"], context)

    def _failure(self, run_id: int, provider_error: str, context: Context) -> AirflowException:
        """A failed run as the task's failure: the job's own error when its output has one (``_output``), else,
        when the job's code failed (not a cancelled run or lost compute), in the batch's audit record if this
        run wrote it; not retried when the job says a retry cannot change it. Else the provider's account of
        the run."""
        try:
            run = self._hook.get_run(run_id)
            output, metrics = self._output(run, self.task_key)
        except AirflowException as error:
            self.log.warning("the output of Databricks run %s cannot be read (%s)", run_id, error)
            return AirflowException(provider_error)
        state = RunState(**run["state"])
        job_failed = state.life_cycle_state == "TERMINATED" and state.result_state == "FAILED"  # not cancelled, lost
        if metrics is None and job_failed and run.get("start_time"):
            since = datetime.fromtimestamp(int(run["start_time"]) / 1000, UTC).isoformat()
            self.log.warning("Databricks run %s left no result line: reading the batch's audit record", run_id)
            report_run, _, recorded = self._read_audit(context, since)
            if recorded is not None and recorded.error:
                detail = f"Databricks run {run_id} left no result; batch_report run {report_run}: {recorded.error}"
                return job_failure(self.task_id, recorded, detail)
        if metrics is not None and metrics.error:
            return job_failure(self.task_id, metrics, f"Databricks run {run_id}: {metrics.error}")
        if output.get("error_trace"):
            self.log.warning("Databricks run %s's error trace:\n%s", run_id, output["error_trace"][-8000:])
        detail = f"{provider_error}; the job's error: {output['error']}" if output.get("error") else provider_error
        return job_failure(self.task_id, None, detail)

    def _finish(self, run_id: int | None, context: Context) -> dict:
        if self._metrics is not None:
            return self._metrics
        if run_id is None:
            raise AirflowException(f"{self.task_id}: no Databricks run id")
        run = self._hook.get_run(run_id)
        state = RunState(**run["state"])
        if not state.is_successful:
            raise AirflowException(f"{self.task_id}: Databricks run {run_id} did not succeed: {state}")
        output, metrics = self._output(run, self.task_key)
        if metrics is None:
            self.log.warning(
                "Databricks run %s succeeded, but its output holds no metrics line (logs %s): reading the "
                "batch's figures from the audit table",
                run_id,
                "cut" if output.get("logs_truncated") else "empty" if not output.get("logs") else "without one",
            )
            metrics = self._report(context)
        if not metrics.succeeded:
            detail = f"Databricks run {run_id} ended {state.result_state}, but the job reports result " + (
                f"'{metrics.result}': {metrics.error or 'no error given'}"
            )
            if metrics.retryable is False:
                raise job_failure(self.task_id, metrics, detail)
            raise JobResultFailed(f"{self.task_id}: {detail}")
        duration_ms = run.get("run_duration") or run.get("execution_duration")
        self._metrics = report_job(self, context, metrics, duration_ms / 1000 if duration_ms else None)
        return self._metrics


class LocalSparkJobOperator(BaseOperator):
    """Run a run spec's entry point, with the same parameters, on local Spark with Delta.

    The task starts its own Spark (unless one runs in this process already, as in tests), with the
    JVM's output in a file beside the task log: the log keeps what the job itself says.
    """

    template_fields: Sequence[str] = ("run_spec",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"run_spec": "json"}

    def __init__(self, *, run_spec: dict, target: Asset | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_spec = run_spec
        self.target = target

    def execute(self, context: Context) -> dict:
        from spark_jobs.session import start_local_session

        entry_point, argv = command_line(self.run_spec)
        # py4j logs each connection it closes at INFO, several per task: noise in the task log.
        logging.getLogger("py4j").setLevel(logging.WARNING)
        jvm_log = jvm_log_file(context)
        if start_local_session(f"order-tracking-{self.task_id}", jvm_log):
            self.log.info("started local Spark; the JVM's own output (start-up, Spark's log) goes to %s", jvm_log)
        self.log.info("running %s %s", entry_point, " ".join(argv))
        started = time.monotonic()
        try:
            exit_code, output = run_entry_point(self.run_spec)
        except Exception:  # the job's own traceback follows in the log; the JVM's side first
            self._log_jvm_errors(jvm_log)
            raise
        seconds = time.monotonic() - started
        metrics = JobMetrics.from_output(output)
        if exit_code != 0 or metrics is None or not metrics.succeeded:
            self._log_jvm_errors(jvm_log)
            detail = metrics.error if metrics is not None and metrics.error else "the job printed no result line"
            raise job_failure(self.task_id, metrics, detail)
        return report_job(self, context, metrics, seconds)

    def _log_jvm_errors(self, jvm_log: Path) -> None:
        errors = jvm_errors(jvm_log)
        if errors:
            self.log.warning("the JVM's errors (its whole log: %s):\n%s", jvm_log, errors)


def spark_job(
    job: str, parameters: dict[str, Any], settings: LoadSettings, target: Asset | None = None, **kwargs: Any
) -> BaseOperator:
    """The task that runs ``job``: the same run spec, executed by the configured backend.

    With ``target``, the task announces the load on that Asset (through ``TARGET_UPDATES``) when it
    changed the target.
    """
    spec = build_run_spec(job, parameters, settings)
    if target is not None:
        kwargs["outlets"] = [TARGET_UPDATES]
    if settings.backend == "local":
        return LocalSparkJobOperator(task_id=job, run_spec=spec, target=target, **kwargs)
    return DatabricksSparkJobOperator(
        task_id=job,
        run_spec=spec,
        settings=settings,
        target=target,
        databricks_conn_id=settings.databricks_conn_id,
        polling_period_seconds=max(1, int(settings.databricks_poll.total_seconds())),
        **kwargs,
    )
