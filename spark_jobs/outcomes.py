"""Per-file outcomes and batch totals of the stage job, in plain Python, from ``record_counts`` rows.

Every data row of every input file is counted here, including the rows of a file rejected whole, so
``rows_read = rows_staged + rows_rejected + rows_collapsed`` covers the whole batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from spark_jobs.contracts import CHANGED_SINCE_LISTED, BatchStatus, FileResult, FileStatus, JobMetrics, Result
from spark_jobs.extract import InputError, InputFile
from spark_jobs.transform import REJECT_REASONS, last_record_groups

TOP_REASONS = 3
TOP_FILES = 3  # the files with most rows rejected that a reject-limit failure names
_HASH_MASK = (1 << 64) - 1
# A file whose head shows data after its header, of which Spark's reader returned nothing: never "loaded".
NONE_READ = "Spark's reader returned none of its records, though it holds data after its header: rename it"


@dataclass
class FileOutcome:
    """What became of one input file. ``rows`` are its data rows; a rejected file's are all rejected."""

    file: InputFile
    rows: int = 0
    rows_rejected: int = 0
    first_record_id: int | None = None
    reason: str | None = None
    fingerprint: str | None = None
    reasons: Counter = field(default_factory=Counter)

    @property
    def loaded(self) -> bool:
        """True unless the file is rejected whole."""
        return self.reason is None

    def result(self, redelivery_of: str | None) -> FileResult:
        """The file's entry in the metrics and the audit record, with its re-delivery note."""
        return FileResult(
            uri=self.file.uri,
            size=self.file.size,
            generation=self.file.generation,
            rows=self.rows,
            rows_rejected=self.rows_rejected,
            status=FileStatus.LOADED if self.loaded else FileStatus.REJECTED,
            reason=self.reason,
            fingerprint=self.fingerprint,
            redelivery_of=redelivery_of,
        )


def file_outcomes(files: list[InputFile], counts: list[dict]) -> list[FileOutcome]:
    """Fold the per-(file, reasons) counts into one outcome per input file, in input order.

    A file is rejected whole when its header is unusable, or when its last record is rejected and spans
    several lines: a quote opened there never closed, and the rest of the file became that one record.
    """
    outcomes = {item.path: FileOutcome(file=item, rows=item.rows or 0) for item in files}
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
        xor, total = hashes.setdefault(row["_source_file"], [0, 0])
        hashes[row["_source_file"]] = [xor ^ (row["hash_xor"] & _HASH_MASK), total + row["hash_sum"]]

    last = last_record_groups(counts)
    for path, outcome in outcomes.items():
        header = outcome.file.header
        if path in hashes:
            xor, total = hashes[path]
            outcome.fingerprint = f"{outcome.rows}:{xor:016x}:{total & _HASH_MASK:016x}"
        group = last.get(path, {})
        last_reasons, last_lines, last_open = group.get(REJECT_REASONS), group.get("last_lines"), group.get("last_open")
        if header.error:
            outcome.reason = header.error
        elif not outcome.rows and header.data_follows:
            outcome.reason = NONE_READ
        elif outcome.file.quote_left_open or (last_reasons and (last_open or (last_lines or 0) > 1)):
            lines = last_lines or 1
            opened_on = outcome.rows + 1  # the last record's line: the header is line 1
            outcome.rows += lines - 1  # the swallowed lines are rows too
            outcome.reason = (
                f"unclosed quote: the record on line {opened_on} runs to the end of the file "
                f"({lines} line{'' if lines == 1 else 's'} read as one record)"
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


def reject_limit_error(batch_id: str, outcomes: list[FileOutcome], limit: float, rejects_table: str) -> str | None:
    """The error when the batch is bad as a whole: no file of it would load (each is rejected whole or has
    more than ``limit`` of its rows rejected) and its rejected fraction is above ``limit``; else None.

    It names the worst reasons, each file rejected whole with its reason, and the files with the most
    rows rejected. A batch with a file that loads is never failed here: its other files are quarantined
    (``quarantine``).
    """
    if any(o.loaded and not _over_limit(o, limit) for o in outcomes):
        return None
    read, rejected = sum(o.rows for o in outcomes), sum(o.rows_rejected for o in outcomes)
    whole = sum(not o.loaded for o in outcomes)
    # Files rejected whole with no data row still leave nothing loaded: that is all of the batch rejected.
    fraction = rejected / read if read else float(whole > 0)
    if fraction <= limit:
        return None
    figure = (
        f"{rejected} of {read} rows rejected ({fraction:.1%}), above the limit of {limit:.1%}"
        if read
        else f"no data row read, {whole} of {len(outcomes)} file{'' if len(outcomes) == 1 else 's'} rejected whole"
    )
    return (
        f"batch {batch_id}: {figure}, and no file of it loads. {_worst_reasons(outcomes)}{_files_to_look_at(outcomes)} "
        f"The rejects are in {rejects_table}.{_changed_since_listed(outcomes)}"
    )


def _worst_reasons(outcomes: list[FileOutcome]) -> str:
    """The most frequent reject reasons, each with its rows, and how many reasons there are in all."""
    reasons = len(sum((outcome.reasons for outcome in outcomes), Counter()))
    worst = top_reasons(outcomes)
    shown = f"the {len(worst)} most frequent of {reasons}" if reasons > len(worst) else f"all {reasons}"
    listed = "; ".join(f"{r['reason']} ({r['count']} row{'' if r['count'] == 1 else 's'})" for r in worst)
    return f"Reject reasons, {shown}: {listed}."


def _changed_since_listed(outcomes: list[FileOutcome]) -> str:
    """What to do when files were replaced after the run listed them: a retry, or a Clear of the stage alone,
    reads the same list and fails the same way."""
    changed = [o.file.uri for o in outcomes if not o.loaded and (o.reason or "").startswith(CHANGED_SINCE_LISTED)]
    if not changed:
        return ""
    return (
        f" {len(changed)} file{' was' if len(changed) == 1 else 's were'} replaced after the run listed "
        f"{'it' if len(changed) == 1 else 'them'} ({', '.join(changed)}). A run loads the versions it listed: a "
        "retry, or a Clear of any of its tasks, reads the same list and fails the same way. To load the version "
        "in the input folder, where it stays, trigger a new run, or leave it to the next scheduled one."
    )


def quarantine(outcomes: list[FileOutcome], limit: float) -> list[FileOutcome]:
    """Each file with more than ``limit`` of its rows rejected, rejected whole with that reason: none of its
    rows loads, and it goes to ``rejected/`` with the files rejected for their content, while the batch's
    other files load (the gate protects the target without stopping the feed)."""
    for outcome in outcomes:
        if outcome.loaded and _over_limit(outcome, limit):
            rejected, rows = outcome.rows_rejected, outcome.rows
            outcome.reason = (
                f"{rejected} of {rows} rows rejected ({rejected / rows:.1%}), above the limit of {limit:.1%}"
            )
            outcome.rows_rejected = rows
            outcome.reasons = Counter({f"file rejected: {outcome.reason}": rows})
    return outcomes


def _over_limit(outcome: FileOutcome, limit: float) -> bool:
    return bool(outcome.rows) and outcome.rows_rejected / outcome.rows > limit


def _files_to_look_at(outcomes: list[FileOutcome]) -> str:
    """The files a reject-limit failure names: each one rejected whole, then those with most rejected rows."""
    whole = [f"{outcome.file.uri} ({outcome.reason})" for outcome in outcomes if not outcome.loaded]
    partly = sorted(
        (outcome for outcome in outcomes if outcome.loaded and outcome.rows_rejected),
        key=lambda outcome: (-outcome.rows_rejected, outcome.file.uri),
    )
    named = [f"{outcome.file.uri} ({outcome.rows_rejected} of {outcome.rows})" for outcome in partly[:TOP_FILES]]
    more = len(partly) - len(named)
    return "".join(
        (
            f" Files rejected whole: {'; '.join(whole)}." if whole else "",
            f" Most rows rejected: {'; '.join(named)}{f' and {more} more files' if more else ''}." if named else "",
        )
    )


def stage_metrics(
    batch_id: str, outcomes: list[FileOutcome], redeliveries: dict[str, str], staged: tuple[int, int] | None
) -> JobMetrics:
    """The stage's figures: every data row of every file read, rejected, and (once written) staged and
    collapsed, from ``staged`` (None when nothing was staged); each file with its re-delivery note."""
    rows_staged, rows_collapsed = staged if staged is not None else (None, None)
    return JobMetrics(
        result=Result.SUCCEEDED,
        batch_id=batch_id,
        status=BatchStatus.STAGED,
        files=tuple(o.result(redeliveries.get(o.file.uri)) for o in outcomes),
        rows_read=sum(o.rows for o in outcomes),
        rows_rejected=sum(o.rows_rejected for o in outcomes),
        files_rejected=sum(not o.loaded for o in outcomes),
        files_redelivered=len(redeliveries),
        rows_collapsed=rows_collapsed,
        rows_staged=rows_staged,
        top_reject_reasons=tuple(top_reasons(outcomes)),
    )


def unreconciled(metrics: JobMetrics) -> str | None:
    """The error when the stage's figures do not add up: every row read is staged, rejected or collapsed."""
    m = metrics
    if m.rows_read == m.rows_staged + m.rows_rejected + m.rows_collapsed:
        return None
    return (
        f"batch {m.batch_id}: counts do not reconcile: read {m.rows_read} != staged {m.rows_staged} + "
        f"rejected {m.rows_rejected} + collapsed {m.rows_collapsed}"
    )


def loaded_fingerprints(outcomes: list[FileOutcome]) -> dict[str, str]:
    """Each loaded file's fingerprint, by URI: what a re-delivery is recognised by."""
    return {o.file.uri: o.fingerprint for o in outcomes if o.loaded and o.fingerprint}
