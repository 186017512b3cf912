"""Header rules, in plain Python: a file's first CSV record, its column names, and why a file is unusable.

The stage job reads the first bytes of each input file on the driver and applies these rules before
Spark reads any record, so files can be grouped by header and read with a schema of their own width.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from spark_jobs.schema import MAX_COLUMNS, ORDER_COLUMNS, REQUIRED_COLUMNS

HEAD_BYTES = 64 * 1024  # the most a header may take; the driver reads this much of each file
_BOM = "\ufeff"


@dataclass(frozen=True)
class FileHeader:
    """A file's column names (trimmed, BOM removed, blanks named ``_c<n>``) and why it cannot load, if so."""

    names: tuple[str, ...]
    error: str | None = None
    text: str = ""  # the header record as written, for the rejects table
    cells: tuple[str, ...] = ()  # the names untrimmed, as Spark's CSV reader sees them

    def position(self, name: str) -> int | None:
        """The 0-based position of a column, or None when the header lacks it."""
        return self.names.index(name) if name in self.names else None

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Columns the contract does not know; their values are kept in ``_rescued_data``."""
        return tuple(name for name in self.names if name not in ORDER_COLUMNS)


EMPTY_FILE = FileHeader(names=())


def header_record(head: bytes, complete: bool) -> str | None:
    """The first CSV record of ``head`` (a file's first bytes), without its line break.

    ``complete`` says ``head`` is the whole file. None when the record does not end within ``head``:
    an unclosed quote, or a header longer than ``HEAD_BYTES``.
    """
    text = head.decode("utf-8", errors="replace")
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in "\r\n" and not quoted:
            return text[:index]
    return text if complete and not quoted else None


def header_cells(record: str) -> tuple[str, ...]:
    """The header record's fields as written, a leading BOM dropped."""
    [cells] = list(csv.reader(io.StringIO(record.removeprefix(_BOM)), quotechar='"', strict=False)) or [[""]]
    return tuple(cells)


def column_names(cells: tuple[str, ...]) -> tuple[str, ...]:
    """Column names from header fields: trimmed, a blank one called ``_c<position>``."""
    return tuple(cell.strip() or f"_c{i + 1}" for i, cell in enumerate(cells))


def header_problem(names: tuple[str, ...]) -> str | None:
    """Why a file with these column names cannot load, or None."""
    if len(names) > MAX_COLUMNS:
        return f"header has {len(names)} columns, more than {MAX_COLUMNS}"
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        return "missing required columns: " + ", ".join(missing)
    duplicates = sorted({name for name in names if names.count(name) > 1}, key=names.index)
    if duplicates:
        return "duplicate column names: " + ", ".join(duplicates)
    return None


def file_header(head: bytes, size: int) -> FileHeader:
    """The header of a file whose first bytes are ``head`` and whose size is ``size`` bytes."""
    if size == 0:
        return EMPTY_FILE
    record = header_record(head, complete=len(head) >= size)
    if record is None:
        first_line = head.decode("utf-8", errors="replace").splitlines()[0][:200] if head else ""
        return FileHeader(
            names=(),
            error=f"the header does not end within {HEAD_BYTES // 1024} KiB: an unclosed quote, or not a CSV file",
            text=first_line,
        )
    cells = header_cells(record)
    names = column_names(cells)
    return FileHeader(names=names, error=header_problem(names), text=record.removeprefix(_BOM), cells=cells)
