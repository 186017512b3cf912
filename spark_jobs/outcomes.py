"""Per-file outcomes and batch totals of the stage job, in plain Python, from ``record_counts`` rows.

Every data row of every input file is counted here, including the rows of a file rejected whole, so
``rows_read = rows_staged + rows_rejected + rows_collapsed`` covers the whole batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from spark_jobs.contracts import FileResult, FileStatus
from spark_jobs.extract import InputError, InputFile

TOP_REASONS = 3
TOP_FILES = 3  # the files with most rows rejected that a reject-limit failure names
_HASH_MASK = (1 << 64) - 1


@dataclass
class FileOutcome:
    """What became of one input file. ``rows`` are its data rows; a rejected file's are all rejected."""

    file: InputFile
    rows: int = 0
    rows_rejected: int = 0
    first_record_id: int | None = None
    reason: str | None = None
    fingerprint: str | None = None
    redelivery_of: str | None = None
    reasons: Counter = field(default_factory=Counter)

    @property
    def loaded(self) -> bool:
        """True unless the file is rejected whole."""
        return self.reason is None

    def audit_record(self) -> dict:
        """The file's entry in the metrics and the audit record's ``files`` (a ``FileResult``)."""
        return FileResult(
            uri=self.file.uri,
            size=self.file.size,
            generation=self.file.generation,
            rows=self.rows,
            rows_rejected=self.rows_rejected,
            status=FileStatus.LOADED if self.loaded else FileStatus.REJECTED,
            reason=self.reason,
            fingerprint=self.fingerprint,
            redelivery_of=self.redelivery_of,
        ).to_dict()


def file_outcomes(files: list[InputFile], counts: Iterable[dict]) -> list[FileOutcome]:
    """Fold the per-(file, reasons) counts into one outcome per input file, in input order.

    A file is rejected whole when its header is unusable, or when its last record is rejected and spans
    several lines: a quote opened there never closed, and the rest of the file became that one record.
    """
    outcomes = {item.path: FileOutcome(file=item) for item in files}
    last: dict[str, tuple[int, list[str], int | None]] = {}
    hashes: dict[str, list[int]] = {}
    for row in counts:
        outcome = outcomes.get(row["_source_file"])
        if outcome is None:
            raise InputError(
                f"Spark read {row['_source_file']}, which matches no input as normalised: {', '.join(sorted(outcomes))}"
            )
        reasons = list(row["_reject_reasons"])
        outcome.rows += row["records"]
        if reasons:
            outcome.rows_rejected += row["records"]
            outcome.reasons.update({reason: row["records"] for reason in reasons})
        if outcome.first_record_id is None or row["first_id"] < outcome.first_record_id:
            outcome.first_record_id = row["first_id"]
        if row["_source_file"] not in last or row["last_id"] > last[row["_source_file"]][0]:
            last[row["_source_file"]] = (row["last_id"], reasons, row["last_lines"])
        xor, total = hashes.setdefault(row["_source_file"], [0, 0])
        hashes[row["_source_file"]] = [xor ^ (row["hash_xor"] & _HASH_MASK), total + row["hash_sum"]]

    for path, outcome in outcomes.items():
        header = outcome.file.header
        if path in hashes:
            xor, total = hashes[path]
            outcome.fingerprint = f"{outcome.rows}:{xor:016x}:{total & _HASH_MASK:016x}"
        _, last_reasons, last_lines = last.get(path, (0, [], None))
        if header.error:
            outcome.reason = header.error
        elif last_reasons and last_lines and last_lines > 1:
            opened_on = outcome.rows + 1  # the last record's line: the header is line 1
            outcome.rows += last_lines - 1  # the swallowed lines are rows too
            outcome.reason = (
                f"unclosed quote: the record on line {opened_on} runs to the end of the file "
                f"({last_lines} lines read as one record)"
            )
        if not outcome.loaded:
            outcome.rows_rejected = outcome.rows
            outcome.reasons = Counter({f"file rejected: {outcome.reason}": outcome.rows or 1})
    return list(outcomes.values())


def row_sources(outcomes: list[FileOutcome], with_first_ids: bool) -> list[tuple]:
    """(path, loaded), and the first record id the count saw if asked, of the files whose rows are staged
    or rejected one by one.

    A file rejected for its header has no usable rows; one rejected for an unclosed quote still has
    its rejected rows recorded, the swallowing record among them.
    """
    return [
        (outcome.file.path, outcome.loaded, *([outcome.first_record_id] if with_first_ids else []))
        for outcome in outcomes
        if outcome.first_record_id is not None and not outcome.file.header.error
    ]


def top_reasons(outcomes: list[FileOutcome]) -> list[dict]:
    """The batch's most frequent reject reasons, most frequent first (ties by name)."""
    total = sum((outcome.reasons for outcome in outcomes), Counter())
    ranked = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
    return [{"reason": reason, "count": count} for reason, count in ranked]


def rejected_file_records(outcomes: list[FileOutcome]) -> list[dict]:
    """One rejects record per file rejected whole: its header line, or the line its unclosed quote opened on."""
    return [
        {
            "source_file": outcome.file.path,
            "line_number": 1,
            "raw_record": outcome.file.header.text,
            "reason": f"file rejected: {outcome.reason} ({_rows(outcome.rows)} not loaded)",
        }
        for outcome in outcomes
        if not outcome.loaded
    ]


def _rows(count: int) -> str:
    return f"{count} data row" + ("" if count == 1 else "s")
