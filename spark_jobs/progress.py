"""Progress while a job works: each phase logged as it starts and ends, and a line at least every 30 s of it.

A stage or merge takes minutes on a big batch; without these, its log was silent between the command line
and the summary, and an operator could not tell a slow phase from a stuck one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOG = logging.getLogger("order_tracking")
HEARTBEAT_SECONDS = 30.0


@contextmanager
def phase(name: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Log ``name`` as it starts, every ``every`` seconds while it lasts, and as it ends, with its time."""
    started = time.monotonic()
    LOG.info("%s ...", name)
    finished = threading.Event()

    def heartbeat() -> None:
        while not finished.wait(every):
            LOG.info("%s: still going after %.0f s", name, time.monotonic() - started)

    beating = threading.Thread(target=heartbeat, name=f"progress of {name}", daemon=True)
    beating.start()
    ended = "stopped by an error"
    try:
        yield
        ended = "done"
    finally:
        finished.set()
        beating.join()
        LOG.info("%s: %s in %.1f s", name, ended, time.monotonic() - started)
