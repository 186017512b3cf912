"""What both job CLIs share: logging to stderr, the JSON metrics line on stdout, clear failures."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from spark_jobs.contracts import JobMetrics, Refusal, Result
from spark_jobs.session import get_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOG = logging.getLogger("order_tracking")


# Named parameters that a Databricks operator adds to a task on its own: the OpenLineage provider's parent-run
# context (``[openlineage] spark_inject_parent_job_info``). Each job accepts them, and logs the parent run.
INJECTED_PARAMETERS = ("OPENLINEAGE_CONTEXT",)


def parse_job_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a job's command line, accepting the parameters Airflow's providers inject (and only those)."""
    for name in INJECTED_PARAMETERS:
        parser.add_argument(f"--{name}", dest=name.lower(), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configure_logging()
    for name in INJECTED_PARAMETERS:
        value = getattr(args, name.lower())
        if value is not None:
            LOG.info("%s from the submitting task: %s", name, _parent_run(value))
    return args


def _parent_run(context: str) -> str:
    """The parent run an OpenLineage context names, or the context as given when it names none."""
    try:
        parent = json.loads(context)["parent"]
        return f"{parent['job']['namespace']}/{parent['job']['name']} run {parent['run']['runId']}"
    except (ValueError, KeyError, TypeError):
        return context


class OrderLoadError(Exception):
    """A failure the job explains itself (bad input, reject limit); no traceback needed.

    It depends only on the batch and the arguments, so a retry would fail the same way: the task fails
    at once. A failure that a retry can change is a ``RetryableLoadError``.
    """

    retryable = False


class RetryableLoadError(OrderLoadError):
    """A failure the job explains itself that a later try may not meet (a merge that did not reconcile)."""

    retryable = True


def utc_now() -> datetime:
    """The current time, aware, in UTC: PySpark stores an aware datetime as its instant, but reads a naive one
    in the process's own zone (``time.mktime``), which would shift every written time by that zone's offset."""
    return datetime.now(UTC)


def configure_logging() -> None:
    """The jobs log to stderr (stdout carries the metrics line); a second call changes nothing."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_job(name: str, job: Callable[[SparkSession], dict], session: Callable[[str], SparkSession] = get_spark) -> int:
    """Run a job in the session named ``name`` (``session`` gives it); print its metrics as the last stdout
    line and return 0; on failure, exit 1.

    A failure the job explains prints its error and whether a retry could change it (``retryable``);
    any other exception ends the job with its traceback and no metrics line, which callers retry.

    A failure prints ``{"result": "failed", "error": ...}`` and raises ``SystemExit`` with that line as its
    message (exit status 1) rather than returning 1: Databricks calls a wheel's entry point as a function
    and ignores what it returns, so only an exit (or an exception) fails the run, and the run's ``error``
    then carries the line even where its logs come back empty.
    """
    configure_logging()
    try:
        metrics = job(session(name))
    except (OrderLoadError, Refusal) as error:  # any other exception is a fault: its traceback, and a retry
        # Not logged here: the caller's failure carries the line's error, which the task log showed twice.
        retryable = getattr(error, "retryable", False)
        line = JobMetrics(result=Result.FAILED, error=str(error), retryable=retryable).to_json_line()
        print(line, flush=True)
        raise SystemExit(line) from None
    print(JobMetrics.from_dict({**metrics, "result": Result.SUCCEEDED}).to_json_line(), flush=True)
    return 0
