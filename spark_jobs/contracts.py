"""The records that cross a process, defined once; plain Python (no pyspark), so the Airflow plugin shares them.

- ``Manifest``: the exact objects a run loads, written by ``list_new_files``, read by the stage job.
- ``FileResult``: what became of one file, written by the stage job (metrics and audit table), read by
  the archive task to decide where each file moves.
- ``JobMetrics``: the last line a job prints: its result and the batch's figures, which become the
  task's XCom, its log summary, the Asset event's ``extra`` and the audit record's counts.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

LOG = logging.getLogger(__name__)
# The result line's format. A reader takes a line of any version: it uses the fields it knows, logs the
# others once, and refuses only a line without the fields it needs (a wheel and a plugin of different
# versions meet during every rolling upgrade).
LINE_VERSION = 1

# How the reason of a file replaced after its run listed it starts (the stage writes it, the DAG's report reads it).
CHANGED_SINCE_LISTED = "changed since it was listed"


class Result(StrEnum):
    """What a job says of itself, on its last line."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FileStatus(StrEnum):
    """What became of one input file."""

    LOADED = "loaded"  # its good rows staged (its bad rows, if any, in the rejects table)
    REJECTED = "rejected"  # rejected whole, with a reason; it moves to rejected/


class BatchStatus(StrEnum):
    """A batch's audit record, as the jobs leave it (docs/CONTRACT.md, "Audit")."""

    STAGED = "staged"
    STAGE_FAILED = "stage_failed"
    MERGE_UNRECONCILED = "merge_unreconciled"  # the MERGE committed, its figures did not reconcile
    MERGED = "merged"


# The batch's figures, in the order logs and the audit table show them, each with its name in the log's
# summary line.
FIGURES: dict[str, str] = {
    "rows_read": "read",
    "rows_rejected": "rejected",
    "files_rejected": "files rejected",
    "files_redelivered": "files redelivered",
    "rows_collapsed": "collapsed",
    "rows_staged": "staged",
    "rows_inserted": "inserted",
    "rows_updated": "updated",
    "rows_skipped_stale": "stale",
    "rows_unchanged": "unchanged",
    "history_rows_inserted": "history added",
    "target_version": "target version",
}
ROW_COUNTS: tuple[str, ...] = tuple(FIGURES)


_BATCH_ID = re.compile(r"[\w.:+@=~\- ]{1,250}")


class Refusal(ValueError):
    """Input or arguments a job refuses (a bad batch id, manifest or argument): it depends only on them, so a
    retry would be refused the same way. Any other ``ValueError`` is a fault, with its traceback, and retried."""


def check_batch_id(batch_id: str) -> str:
    """Return the batch id if it is one the jobs accept (the DAG makes them so), else raise ``Refusal``."""
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise Refusal(f"batch id {batch_id!r} must be 1-250 characters of letters, digits, space and _.:+@=~-")
    return batch_id


_UNKNOWN_LOGGED: set[tuple[str, str]] = set()


def _known(record_type: type, data: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The data's fields of ``record_type``. A key it does not define (written by a newer version) is left out
    and logged, once per process; a ``required`` field that is absent raises ``Refusal``."""
    names = {field.name for field in fields(record_type)}
    missing = [name for name in required if data.get(name) is None]
    if missing:
        raise Refusal(f"{record_type.__name__} needs {', '.join(missing)}, which this record lacks: {data!r:.300}")
    unknown = sorted(set(data) - names)
    new = [name for name in unknown if (record_type.__name__, name) not in _UNKNOWN_LOGGED]
    if new:
        _UNKNOWN_LOGGED.update((record_type.__name__, name) for name in new)
        LOG.warning(
            "%s: ignoring field%s %s, written by another version of the jobs or the plugin (line version %s; "
            "this one reads version %d)",
            record_type.__name__,
            "" if len(new) == 1 else "s",
            ", ".join(new),
            data.get("version", "?"),
            LINE_VERSION,
        )
    return {key: value for key, value in data.items() if key in names}


@dataclass(frozen=True)
class ManifestFile:
    """One object of a batch, at the generation that was listed, and where the run moves it once loaded
    (``archive_uri``) or rejected whole (``rejected_uri``): a re-run of the batch reads it there."""

    uri: str
    name: str | None = None
    generation: int | None = None
    size: int | None = None
    archive_uri: str | None = None
    rejected_uri: str | None = None

    @property
    def locations(self) -> tuple[str, ...]:
        """Where the object may be, in the order to look: as listed, then where the run moves it."""
        return tuple(uri for uri in (self.uri, self.archive_uri, self.rejected_uri) if uri)


@dataclass(frozen=True)
class Manifest:
    """A run's batch: its id and the exact objects to load; where they came from and where they go."""

    batch_id: str
    files: tuple[ManifestFile, ...]
    run_id: str | None = None
    batch_date: str | None = None
    replay: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (the manifest file, and the listing task's XCom)."""
        return {**asdict(self), "files": [asdict(item) for item in self.files]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        """Read a manifest, refusing one without a batch id or a list of files with URIs."""
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("uri"), str) for f in files):
            raise Refusal(f"{source} has no 'files' list of objects with a 'uri'")
        if not isinstance(data.get("batch_id"), str):
            raise Refusal(f"{source} has no 'batch_id'")
        items = tuple(ManifestFile(**_known(ManifestFile, item)) for item in files)
        return cls(**{**_known(cls, data), "files": items})

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        """Parse a manifest file."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise Refusal(f"{source} is not JSON: {error}") from error
        return cls.from_dict(data, source)


@dataclass(frozen=True)
class FileResult:
    """What became of one input file: ``loaded`` (its good rows staged) or ``rejected`` whole, and why."""

    uri: str
    size: int | None
    generation: int | None
    rows: int
    rows_rejected: int
    status: FileStatus
    reason: str | None
    # "<data rows>:<xor of the rows' xxhash64>:<sum of their hash>" over each row's parsed values (a rejected
    # row's text): the same rows under any name, in any order.
    fingerprint: str | None
    # Set when an earlier merged batch loaded this name or this content: which batch, and why.
    redelivery_of: str | None

    def to_dict(self) -> dict[str, Any]:
        """The file's entry in the metrics and the audit record: plain data, the status a plain string."""
        return {**asdict(self), "status": str(self.status)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        """Read a file's entry back."""
        values = {field.name: None for field in fields(cls)} | _known(cls, data, required=("uri", "status"))
        return cls(**{**values, "status": FileStatus(values["status"])})


def _batch_status(value: str) -> BatchStatus | None:
    """A batch status as this version knows it; None (logged once) for one a newer version wrote."""
    try:
        return BatchStatus(value)
    except ValueError:
        if ("BatchStatus", value) not in _UNKNOWN_LOGGED:
            _UNKNOWN_LOGGED.add(("BatchStatus", value))
            LOG.warning("ignoring batch status %r, written by another version of the jobs", value)
        return None


@dataclass(frozen=True)
class JobMetrics:
    """A job's result and its batch's figures; a figure a job does not produce is None."""

    result: Result
    batch_id: str | None = None
    error: str | None = None
    # A failed job says whether a retry could change its outcome: False for a refusal that depends only on
    # the batch and the arguments (the reject limit, every file rejected, a bad argument).
    retryable: bool | None = None
    status: BatchStatus | None = None
    files: tuple[FileResult, ...] = ()
    rows_read: int | None = None
    rows_rejected: int | None = None
    files_rejected: int | None = None
    files_redelivered: int | None = None
    rows_collapsed: int | None = None
    rows_staged: int | None = None
    rows_inserted: int | None = None
    rows_updated: int | None = None
    rows_skipped_stale: int | None = None
    rows_unchanged: int | None = None
    history_rows_inserted: int | None = None
    target_version: int | None = None
    top_reject_reasons: tuple[dict, ...] = ()
    version: int = LINE_VERSION  # of the line's format, as its writer knew it

    @property
    def succeeded(self) -> bool:
        """True when the job says it succeeded."""
        return self.result == Result.SUCCEEDED

    @property
    def changed_target(self) -> bool:
        """True when the load inserted or updated target rows."""
        return bool((self.rows_inserted or 0) + (self.rows_updated or 0))

    def figures(self) -> dict[str, int]:
        """The row counts the job produced, in order."""
        return {name: getattr(self, name) for name in ROW_COUNTS if getattr(self, name) is not None}

    def summary(self) -> str:
        """The figures the job produced, each with its label: ``read 12, rejected 2, ...``."""
        return ", ".join(f"{FIGURES[name]} {value}" for name, value in self.figures().items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the task's XCom, the audit row), without the figures the job did not produce; the
        enums become their strings here and in ``FileResult.to_dict`` (PySpark 3.5 cannot hand one to the JVM)."""
        data = {
            **asdict(self),
            "result": str(self.result),
            "status": str(self.status) if self.status is not None else None,
            "files": [item.to_dict() for item in self.files],
            "top_reject_reasons": list(self.top_reject_reasons),
        }
        return {key: value for key, value in data.items() if value not in (None, [])}

    def to_json_line(self) -> str:
        """The line a job prints last."""
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobMetrics:
        """Metrics from a job's result: the fields known here (others are logged once); ``Refusal`` without a result."""
        known = _known(cls, data, required=("result",))
        known["files"] = tuple(FileResult.from_dict(item) for item in data.get("files") or ())
        known["top_reject_reasons"] = tuple(data.get("top_reject_reasons") or ())
        known["result"] = Result(known["result"])
        if known.get("status") is not None:
            known["status"] = _batch_status(known["status"])
        return cls(**known)

    @classmethod
    def from_output(cls, output: str) -> JobMetrics | None:
        """The metrics a job printed: its last line that holds a JSON object with a ``result`` (from its first
        ``{``: a run's ``error`` may put the exception's type before it); None if none."""
        for line in reversed(output.strip().splitlines()):
            line = line[line.find("{") :].strip() if "{" in line else ""
            if not line:
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "result" in data:
                return cls.from_dict(data)
        return None
