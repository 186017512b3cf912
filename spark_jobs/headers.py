"""Header rules, in plain Python: a file's first CSV record, its column names, and why a file is unusable.

The stage job reads the first bytes of each input file on the driver and applies these rules before
Spark reads any record, so files can be grouped by header and read with a schema of their own width.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from spark_jobs.schema import MAX_COLUMNS, ORDER_COLUMNS, REQUIRED_COLUMNS, WHITE_SPACE

HEAD_BYTES = 64 * 1024  # the most a header may take; the driver reads this much of each file
_BOM = "\ufeff"
# Compressed content, known by its first bytes, and how the driver decompresses it to count its records
# (None: no codec in Python's standard library). Compressed bytes are not text: the head must also fail
# to decode as UTF-8, so a CSV that happens to start with ``x^`` (a zlib header) is still a CSV.
_COMPRESSED: tuple[tuple[bytes, str, Callable[[bytes], bytes] | None], ...] = (
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZh", "bzip2", bz2.decompress),
    (b"\xfd7zXZ\x00", "xz", lzma.decompress),
    (b"\x28\xb5\x2f\xfd", "zstd", None),
    (b"\x04\x22\x4d\x18", "lz4", None),
    (b"PK\x03\x04", "zip", None),
    (b"\x78\x01", "zlib", zlib.decompress),
    (b"\x78\x5e", "zlib", zlib.decompress),
    (b"\x78\x9c", "zlib", zlib.decompress),
    (b"\x78\xda", "zlib", zlib.decompress),
)


@dataclass(frozen=True)
class FileHeader:
    """A file's column names (trimmed, BOM removed, blanks named ``_c<n>``) and why it cannot load, if so."""

    names: tuple[str, ...]
    error: str | None = None
    text: str = ""  # the header record as written, for the rejects table
    cells: tuple[str, ...] = ()  # the names untrimmed, as Spark's CSV reader sees them
    data_follows: bool = False  # the file's head holds more than white space after the header record
    # The line ending Spark's reader is told to split records at: a bare CR where the header record ends with
    # one (old Mac exports), else LF (a CRLF's CR then ends a record's last field, and the stage strips it).
    line_break: str = "\n"

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
    an unclosed quote, or a header longer than ``HEAD_BYTES``. A quote opens a quoted field only at
    the field's start, as Spark's CSV reader has it: a quote inside a name (``note "x``) is a character.
    """
    text = head.decode("utf-8", errors="replace")
    quoted = False
    field_start = True
    index = 1 if text.startswith(_BOM) else 0
    while index < len(text):
        char = text[index]
        if quoted:
            if char == '"':
                if text.startswith('"', index + 1):
                    index += 1  # a doubled quote: one quote inside the field
                elif index + 1 == len(text) and not complete:
                    return None  # the next byte could double it
                else:
                    quoted = False
        elif char == '"' and field_start:
            quoted = True
        elif char in "\r\n":
            return text[:index]
        field_start = not quoted and char == ","
        index += 1
    return text if complete and not quoted else None


def header_cells(record: str) -> tuple[str, ...] | None:
    """The header record's fields as written, a leading BOM dropped; None if it is not one CSV record."""
    records = list(csv.reader(io.StringIO(record.removeprefix(_BOM), newline=""), quotechar='"', strict=False))
    if len(records) > 1:
        return None
    return tuple(records[0]) if records else ("",)


def column_names(cells: tuple[str, ...]) -> tuple[str, ...]:
    """Column names from header fields: trimmed of Unicode white space, a blank one called ``_c<position>``."""
    return tuple(cell.strip(WHITE_SPACE) or f"_c{i + 1}" for i, cell in enumerate(cells))


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
            error=(
                f"the header does not end within its first {HEAD_BYTES // 1024} KiB (the contract's limit), "
                "or a quote in it never closes"
            ),
            text=first_line,
        )
    cells = header_cells(record)
    if cells is None:
        return FileHeader(names=(), error="the header is not one CSV record", text=record.removeprefix(_BOM)[:200])
    names = column_names(cells)
    rest = head.decode("utf-8", errors="replace")[len(record) :]
    return FileHeader(
        names=names,
        error=header_problem(names),
        text=record.removeprefix(_BOM),
        cells=cells,
        data_follows=bool(rest.strip()),
        line_break="\r" if rest.startswith("\r") and not rest.startswith("\r\n") else "\n",
    )


def compression_of(head: bytes) -> str | None:
    """The compression ``head`` (a file's first bytes) starts with, or None for anything else (text included)."""
    kind = _compressed(head)
    return kind[1] if kind else None


def _compressed(head: bytes) -> tuple[bytes, str, Callable[[bytes], bytes] | None] | None:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not merely a character cut at the head's end
            return next((kind for kind in _COMPRESSED if head.startswith(kind[0])), None)
    return None


def count_records(data: bytes) -> int | None:
    """The data records of a whole file's bytes, counted as Spark's reader counts them, for a file it does
    not read: CSV records after the header, blank lines skipped, a quote open to the end one record.
    Compressed content is counted after decompressing it; None where Python has no codec for it."""
    kind = _compressed(data[:HEAD_BYTES])
    if kind:
        decompress = kind[2]
        if decompress is None:
            return None
        try:
            data = decompress(data)
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
            return None
    text = data.decode("utf-8", errors="replace").removeprefix(_BOM)
    records = 0
    # Python's csv stops at a field of 128 Ki characters by default; the reader's own limit is far higher.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    rows = csv.reader(io.StringIO(text, newline=""), quotechar='"', strict=False)
    try:
        for row in rows:
            records += bool(row)
    except csv.Error:  # a quote open to the end of the file: the rest is one record
        records += 1
    return max(records - 1, 0)


# The quoting rules as regular expressions that Python's and Java's engines read alike (the stage applies
# them to a file's bytes on the driver, and to a record's raw text in Spark): a quoted field, written so
# that Java's engine loops rather than recurses per character; one that starts a field, to its closing
# quote; and a quote that opens a field.
QUOTED_FIELD = r'"[^"]*(?:""[^"]*)*"'
CLOSED_FIELD = r"(?:^|(?<=[,\r\n]))" + QUOTED_FIELD
OPENING_QUOTE = r'(?:^|[,\r\n])"'
_CLOSED_FIELD, _OPENING_QUOTE = re.compile(CLOSED_FIELD), re.compile(OPENING_QUOTE)


def quote_left_open(data: bytes) -> bool:
    """True when a whole file's bytes end inside a quoted field: a quote at a field's start never closed."""
    return bool(_OPENING_QUOTE.search(_CLOSED_FIELD.sub("", data.decode("utf-8", errors="replace"))))


def quote_open_at_end(tail: bytes, field_bytes: int) -> bool:
    """True when a file whose last bytes are ``tail`` ends inside a quoted field that Spark's reader returned
    as a last field of ``field_bytes`` bytes (unquoted: a doubled quote counted once), read to the end of
    the file: the tail is that field's bytes after an opening quote at a field's start. A field that
    closed ends in a lone closing quote, or holds no quote at all where its opening one would be.

    Read back from the end, ``""`` is one quote of the field, any other byte one byte of it; a lone
    quote before the field is whole means it closed. ``tail`` must hold up to ``2 * field_bytes + 2`` bytes.
    """
    end, read = len(tail), 0
    while read < field_bytes:
        if end == 0:
            return False
        if tail[end - 1 : end] == b'"':
            if tail[end - 2 : end - 1] != b'"':
                return False  # a lone quote: the field closed here, or was never quoted
            end -= 1
        end -= 1
        read += 1
    return end >= 2 and tail[end - 1 : end] == b'"' and tail[end - 2 : end - 1] in (b",", b"\r", b"\n")
