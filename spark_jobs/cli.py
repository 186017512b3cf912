"""What both job CLIs share: logging to stderr, the JSON metrics line on stdout, clear failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from spark_jobs.contracts import FAILED, SUCCEEDED, JobMetrics

LOG = logging.getLogger("order_tracking")


class OrderLoadError(Exception):
    """A failure the job explains itself (bad input, reject limit, reconciliation); no traceback needed."""


def utc_now() -> datetime:
    """The current time in UTC, without tzinfo (Spark's TIMESTAMP is an instant shown in the session zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def run_job(job: Callable[[], dict]) -> int:
    """Run a job; print its metrics as the last stdout line and return 0; on failure, exit 1.

    A failure prints ``{"result": "failed", "error": ...}`` and raises ``SystemExit(1)`` rather than
    returning 1: Databricks calls a wheel's entry point as a function and ignores what it returns, so
    only an exit (or an exception) fails the run.
    """
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        metrics = job()
    except (OrderLoadError, ValueError) as error:  # ValueError: a bad argument, e.g. a batch id
        LOG.error("%s", error)
        print(JobMetrics(result=FAILED, error=str(error)).to_json_line(), flush=True)
        raise SystemExit(1) from None
    print(JobMetrics.from_dict({**metrics, "result": SUCCEEDED}).to_json_line(), flush=True)
    return 0
