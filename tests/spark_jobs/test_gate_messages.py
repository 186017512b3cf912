"""The stage's refusal of a batch of which no file loads: true figures, and what to do (plain Python, no Spark)."""

from __future__ import annotations

from spark_jobs.extract import InputFile
from spark_jobs.headers import EMPTY_FILE
from spark_jobs.outcomes import FileOutcome, reject_limit_error


def _rejected(name: str, reason: str, rows: int) -> FileOutcome:
    item = InputFile(uri=f"gs://b/input/{name}", path=f"gs://b/input/{name}", size=200, header=EMPTY_FILE)
    return FileOutcome(file=item, rows=rows, rows_rejected=rows, reason=reason)


def test_a_batch_rejected_whole_without_a_data_row_says_so_rather_than_a_percentage():
    """It said "0 of 0 rows rejected (100.0%)" for a file emptied after it was listed."""
    error = reject_limit_error(
        "b1", [_rejected("a.csv", "changed since it was listed: 200 bytes then, 0 now", 0)], 0.1, "rejects"
    )

    assert error.startswith("batch b1: no data row read, 1 of 1 file rejected whole, and no file of it loads.")
    assert "%" not in error.split(". Reject reasons")[0]


def test_a_file_replaced_after_listing_fails_with_what_to_do_and_true_figures():
    """Fix the file, Clear the stage: the second try reads the same list, so the message says to list again."""
    outcomes = [
        _rejected("fixed.csv", "changed since it was listed: 200 bytes then, 229 now", 3),
        _rejected("bad.csv", "missing required columns: status", 2),
    ]

    error = reject_limit_error("b2", outcomes, 0.1, "rejects")

    assert error.startswith(
        "batch b2: 5 of 5 rows rejected (100.0%), above the limit of 10.0%, and no file of it loads."
    )
    assert error.endswith(
        " 1 file was replaced after the run listed it (gs://b/input/fixed.csv). A run loads the versions it listed: "
        "a retry, or a Clear of any of its tasks, reads the same list and fails the same way. To load the version "
        "in the input folder, where it stays, trigger a new run, or leave it to the next scheduled one."
    )


def test_the_reasons_named_say_how_many_there_are_and_count_rows():
    """It showed 3 of 7 reasons, each "(1)", with no word that there were more or what the 1 counted."""
    outcome = _rejected("bad.csv", "over the limit", 7)
    outcome.reason = None  # loaded, but every row rejected for a reason of its own
    outcome.reasons.update({f"reason {n}": 1 for n in range(7)})

    error = reject_limit_error("b4", [outcome], 0.1, "rejects")

    assert "Reject reasons, the 3 most frequent of 7: reason 0 (1 row); reason 1 (1 row); reason 2 (1 row)." in error


def test_a_batch_without_a_replaced_file_gives_no_listing_advice():
    error = reject_limit_error("b3", [_rejected("bad.csv", "missing required columns: status", 2)], 0.1, "rejects")

    assert "replaced after the run listed" not in error
    assert error.endswith("The rejects are in rejects.")
