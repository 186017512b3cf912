"""A meeting point for the job processes the concurrency test starts (this folder is on their ``PYTHONPATH``).

Each job waits, before the first try of a commit whose label matches ``ORDER_TRACKING_TEST_BARRIER_AT``,
until ``ORDER_TRACKING_TEST_BARRIER_PARTIES`` jobs have reached theirs (a file each in
``ORDER_TRACKING_TEST_BARRIER``). Released together, the jobs' commits read the same table versions, so
their overlap is certain and two MERGEs into one table conflict, whatever the machine's speed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

_FOLDER = os.environ.get("ORDER_TRACKING_TEST_BARRIER")

if _FOLDER:
    from spark_jobs import tables

    _committed_alone = tables.retry_on_conflict
    _at = re.compile(os.environ["ORDER_TRACKING_TEST_BARRIER_AT"])
    _parties = int(os.environ["ORDER_TRACKING_TEST_BARRIER_PARTIES"])

    def _meet(label: str) -> None:
        Path(_FOLDER, f"{os.getpid()} {label}".replace("/", "|")).touch()
        deadline = time.monotonic() + 300
        while len(os.listdir(_FOLDER)) < _parties:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: the other jobs never reached the barrier ({os.listdir(_FOLDER)})")
            time.sleep(0.02)

    def _retry_on_conflict(commit, what, attempts=tables.COMMIT_ATTEMPTS):
        if _at.search(what):
            _meet(what)
        return _committed_alone(commit, what, attempts)

    tables.retry_on_conflict = _retry_on_conflict
