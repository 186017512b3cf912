"""Where a run's objects live in the bucket: one place writes and reads every path.

- ``manifests/<batch>.json``: a run's manifest;
- ``archive/<yyyy-mm-dd>/<HH>/<batch>/<name in input>``: what a run loaded, under the date and hour of
  its load time (UTC), which its run id carries;
- ``rejected/<yyyy-mm-dd>/<batch>/<name in input>``: the files it rejected whole.

The batch is the run id, made safe for an object name (``batch_key``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from order_tracking_load.settings import LoadSettings

_UNSAFE = re.compile(r"[^\w.:+@=-]", re.ASCII)
_SAFE_RUN_ID = re.compile(r"[\w.:+@=-]{1,200}", re.ASCII)
_HOUR_FOLDER = re.compile(r"(\d{4}-\d{2}-\d{2})/(\d{2})/")


def batch_key(run_id: str) -> str:
    """The run id as a batch id and object-name segment: the id itself when it is safe and short,
    else its safe characters and a hash of the whole id after ``~``, which no kept id contains.
    Two run ids never share a batch key (short of a 64-bit hash collision).
    """
    if _SAFE_RUN_ID.fullmatch(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return f"{_UNSAFE.sub('_', run_id)[:180]}~{digest}"


@dataclass(frozen=True)
class BucketLayout:
    """The bucket's folders (from the settings) and the names of the objects a run writes or moves."""

    archive_prefix: str
    rejected_prefix: str
    manifest_prefix: str

    @classmethod
    def of(cls, settings: LoadSettings) -> BucketLayout:
        """The layout the settings name."""
        return cls(settings.archive_prefix, settings.rejected_prefix, settings.manifest_prefix)

    def manifest(self, run_id: str) -> str:
        """The object name of a run's manifest."""
        return f"{self.manifest_prefix}{batch_key(run_id)}.json"

    def archive_date(self, date: str) -> str:
        """The prefix of everything archived on a date (``yyyy-mm-dd``), to list it."""
        return f"{self.archive_prefix}{date}/"

    def archived(self, loaded_at: datetime, batch: str, relative: str) -> str:
        """Where a loaded object moves: run ``scheduled__2026-11-20T15:00:00+00:00`` archives under
        ``2026-11-20/15/``."""
        moment = loaded_at.astimezone(UTC)
        return f"{self.archive_prefix}{moment:%Y-%m-%d/%H}/{batch}/{relative}"

    def rejected(self, date: str, batch: str, relative: str) -> str:
        """Where an object rejected whole moves."""
        return f"{self.rejected_prefix}{date}/{batch}/{relative}"

    def archive_hour(self, name: str) -> datetime | None:
        """The hour an archived object was archived under; None for a name outside the layout."""
        if not name.startswith(self.archive_prefix):
            return None
        found = _HOUR_FOLDER.match(name, len(self.archive_prefix))
        if found is None:
            return None
        try:
            return datetime.strptime(f"{found[1]} {found[2]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
        except ValueError:
            return None
