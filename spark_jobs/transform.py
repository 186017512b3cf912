"""Pure transforms of the stage job: typed columns by header position, row validation, counts, lineage, collapse.

Every function takes and returns DataFrames and uses built-in Spark functions only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.extract import BYTES_VALID, LAST_FIELD_BYTES, RAW_TEXT, RECORD_ID
from spark_jobs.headers import CLOSED_FIELD, OPENING_QUOTE, QUOTED_FIELD, FileHeader
from spark_jobs.schema import (
    BATCH_ID,
    EARLIEST_YEAR,
    EVENT_CONTENT,
    EVENT_ORDER,
    EVENT_TIME,
    INGESTED_AT,
    KEY,
    LINE_NUMBER,
    OPTIONAL_DATE_COLUMNS,
    ORDER_COLUMNS,
    REJECTS_SCHEMA,
    RESCUED_DATA,
    ROWS_COLLAPSED,
    SOURCE_FILE,
    SUPERSEDED_EVENTS,
    TARGET_COLUMNS,
    WHITE_SPACE,
)

REJECT_REASONS = "_reject_reasons"
FIRST_RECORD_ID = "_first_record_id"  # the record id of a file's first data line (line 2)
FILE_LOADED = "_file_loaded"  # false for a file rejected whole whose rows still go to the rejects table
_TEXT = "_text_"  # prefix of a column's trimmed text
_CELLS_TEXT = "_cells_text"
_RANK = "_rank"
_ROW_FILES = T.StructType([T.StructField(SOURCE_FILE, T.StringType()), T.StructField(FILE_LOADED, T.BooleanType())])
_ROW_SOURCES = T.StructType([*_ROW_FILES.fields, T.StructField(FIRST_RECORD_ID, T.LongType())])

_OPEN_TO_END = r'(?s)(^|,)".*$'  # from a quote that opens a field to the record's end
_DIGITS = "0123456789"
_DATE_SHAPE = "0000-00-00"
_TIMESTAMP_SHAPES = ("0000-00-00 00:00:00", "0000-00-00T00:00:00")


def field_count(raw_text: Column) -> Column:
    """Number of fields in a raw CSV record: commas outside quoted fields, plus one. A quote that opens a
    field and never closes makes the rest of the record that one field."""
    unquoted = F.regexp_replace(F.regexp_replace(raw_text, QUOTED_FIELD, ""), _OPEN_TO_END, "$1")
    return F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit(""))) + 1


def quote_open(raw_text: Column) -> Column:
    """Whether a raw record ends inside a quoted field: a quote at a field's start that never closes."""
    return F.regexp_replace(raw_text, CLOSED_FIELD, "").rlike(OPENING_QUOTE)


def physical_lines(text: Column) -> Column:
    """How many lines of the file a record's text spans. A trailing line break starts no line, nor does
    one that ends a rebuilt record's last field (``...\\n"``): a quote opened in the last column and
    never closed takes the file's own last line break into that field."""
    body = F.regexp_replace(text, r'[\r\n]+"?$', "")
    return F.length(body) - F.length(F.replace(body, F.lit("\n"), F.lit(""))) + 1


def _shape(text: Column) -> Column:
    """The text with every digit written as 0: a cheap, exact format check (``yyyy-MM-dd`` is ``0000-00-00``)."""
    return F.translate(text, _DIGITS, "0" * len(_DIGITS))


def _try_cast(name: str, dtype: str) -> Column:
    """Column ``name`` cast to ``dtype``, null where it does not parse, in SQL: ``Column.try_cast`` is
    PySpark 4 only, and the oldest supported runtime runs Spark 3.5."""
    return F.expr(f"try_cast(`{name.replace('`', '``')}` AS {dtype})")


def _blank(value: Column) -> Column:
    return value.isNull() | (value == "")


def _no_reasons() -> Column:
    return F.array().cast("array<string>")


def _reason(condition: Column, message: str) -> Column:
    # A one-element or empty array, joined with concat: array_compact is a lambda, which Spark cannot compile.
    return F.when(condition, F.array(F.lit(message))).otherwise(_no_reasons())


@dataclass(frozen=True)
class Fields:
    """A record as the validation rules see it: each order column's trimmed text and typed value, all its
    cells joined (for checks on the characters), and whether all its bytes were valid UTF-8."""

    text: Mapping[str, Column]
    value: Mapping[str, Column]
    cells: Column
    bytes_valid: Column


@dataclass(frozen=True)
class Rule:
    """One validation rule: the reason a row is rejected for, and when. ``broken`` is never null (true
    or false), so that the rules' disjunction decides validity and each rule's reason fires alone."""

    reason: str
    broken: Callable[[Fields], Column]


def _unparsed(name: str) -> Callable[[Fields], Column]:
    return lambda f: ~_blank(f.text[name]) & f.value[name].isNull()


def _before_range(name: str) -> Callable[[Fields], Column]:
    first = datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC)
    earliest = first if name == EVENT_TIME else first.date()
    return lambda f: F.coalesce(f.value[name] < F.lit(earliest), F.lit(False))  # compared as a value: cheap


# Every rule a row must pass, in the order its reasons are listed. A rule added here fires: validity is
# "no rule broken", and the reasons are those of the rules broken (docs/CONTRACT.md lists them).
VALIDATION_RULES: tuple[Rule, ...] = (
    Rule("invalid UTF-8 bytes", lambda f: ~f.bytes_valid),
    Rule("contains a NUL byte", lambda f: f.cells.contains("\u0000")),
    Rule("tracking_num is empty", lambda f: _blank(f.text["tracking_num"])),
    Rule("status is empty", lambda f: _blank(f.text["status"])),
    Rule("order_num is empty", lambda f: _blank(f.text["order_num"])),
    Rule("order_num is not a whole number", _unparsed("order_num")),
    Rule("last_update_timestamp is empty", lambda f: _blank(f.text[EVENT_TIME])),
    Rule("last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp", _unparsed(EVENT_TIME)),
    Rule(f"last_update_timestamp is before {EARLIEST_YEAR}-01-01", _before_range(EVENT_TIME)),
    *[Rule(f"{name} is not a yyyy-MM-dd date", _unparsed(name)) for name in OPTIONAL_DATE_COLUMNS],
    *[Rule(f"{name} is before {EARLIEST_YEAR}-01-01", _before_range(name)) for name in OPTIONAL_DATE_COLUMNS],
)


def parse_orders(records: DataFrame, header: FileHeader, rules: tuple[Rule, ...] = VALIDATION_RULES) -> DataFrame:
    """Map the records of files sharing ``header`` to typed order columns, with the reasons each row is rejected.

    ``records`` are ``read_csv_records`` cells (``_c0`` ...) in header order. The result has the business
    columns (typed; null where absent or unparseable), ``_rescued_data`` (unknown columns as JSON),
    ``_source_file``, ``_record_id``, ``_last_field_bytes``, ``_raw_text`` (a rejected row's text; null for a
    valid one) and ``_reject_reasons`` (empty for a valid row).

    It works in three projections (text, then typed values, then reasons), each referring to the
    previous one's columns, so that each value is computed once per row.
    """
    cells = [F.col(f"_c{i}") for i in range(len(header.names))]
    values = _typed(_texts(records, header, cells))
    fields = Fields(
        text={name: F.col(_TEXT + name) for name in ORDER_COLUMNS},
        value={name: F.col(name) for name in ORDER_COLUMNS},
        cells=F.col(_CELLS_TEXT),
        bytes_valid=F.col(BYTES_VALID),
    )
    # Rebuilt as written: spaces kept, an empty field empty (the reader gives null for an empty field).
    as_written = {"ignoreLeadingWhiteSpace": "false", "ignoreTrailingWhiteSpace": "false", "emptyValue": ""}
    rebuilt = F.to_csv(F.struct(*cells), as_written) if cells else F.lit("")
    return values.select(
        *ORDER_COLUMNS,
        RESCUED_DATA,
        SOURCE_FILE,
        RECORD_ID,
        RAW_TEXT,
        LAST_FIELD_BYTES,
        *cells,
        _reject_reasons(fields, rules, len(cells)).alias(REJECT_REASONS),
    ).select(
        *ORDER_COLUMNS,
        RESCUED_DATA,
        SOURCE_FILE,
        RECORD_ID,
        LAST_FIELD_BYTES,
        REJECT_REASONS,
        # The text of a rejected row: as read when malformed, else rebuilt from its fields (rejected rows only).
        F.when(F.size(REJECT_REASONS) > 0, F.coalesce(F.col(RAW_TEXT), rebuilt)).alias(RAW_TEXT),
    )


def _texts(records: DataFrame, header: FileHeader, cells: list[Column]) -> DataFrame:
    """Each order column's cell by name, trimmed of Unicode white space; unknown columns as JSON."""

    def cell(name: str) -> Column:
        position = header.position(name)
        return cells[position] if position is not None else F.lit(None).cast("string")

    # Each name once: a header naming a column twice rejects its file, whose rows still pass through here.
    extras = [(name, cell(name)) for name in dict.fromkeys(header.extra_columns)]
    rescued = F.to_json(F.create_map(*[x for name, value in extras for x in (F.lit(name), value)])) if extras else None
    return records.select(
        *[F.btrim(cell(name), F.lit(WHITE_SPACE)).alias(_TEXT + name) for name in ORDER_COLUMNS],
        (rescued if rescued is not None else F.lit(None).cast("string")).alias(RESCUED_DATA),
        F.col(SOURCE_FILE),
        F.col(RECORD_ID),
        F.regexp_replace(F.col(RAW_TEXT), r"[\r\n]+$", "").alias(RAW_TEXT),
        F.col(LAST_FIELD_BYTES),
        F.concat_ws("\u0001", *cells).alias(_CELLS_TEXT),
        F.col(BYTES_VALID),
        *cells,
    )


def _typed(texts: DataFrame) -> DataFrame:
    """The texts, and beside them the typed values (``ORDER_COLUMNS``' types): null where empty or where
    the text does not parse."""
    return texts.select("*", *[_parsed(name, dtype).cast(dtype).alias(name) for name, dtype in ORDER_COLUMNS.items()])


def _parsed(name: str, dtype: T.DataType) -> Column:
    """One column's value parsed from its text, by its type: text as is (null when empty), whole numbers,
    and dates and timestamps after an exact shape check, through Spark's own fast parsers (no fractions,
    no sign but on whole numbers), in the session's zone, which the jobs pin to UTC (``session.get_spark``)."""
    text = F.col(_TEXT + name)
    if isinstance(dtype, T.StringType):
        return F.when(~_blank(text), text)
    if isinstance(dtype, T.LongType):
        return _try_cast(_TEXT + name, "bigint")
    if isinstance(dtype, T.TimestampType):
        return F.when(_shape(text).isin(*_TIMESTAMP_SHAPES), _try_cast(_TEXT + name, "timestamp"))
    if isinstance(dtype, T.DateType):
        return F.when(_shape(text) == _DATE_SHAPE, _try_cast(_TEXT + name, "date"))
    raise TypeError(f"no parser for column {name} of type {dtype.simpleString()}")


def _reject_reasons(fields: Fields, rules: tuple[Rule, ...], width: int) -> Column:
    """The reasons a row is rejected for: none when it breaks no rule; its field count when it has the
    wrong number of fields (Spark keeps a record's text only then); else each broken rule's reason.
    A valid row builds no reasons array."""
    broken = [rule.broken(fields) for rule in rules]
    # operator.or_, not Column.__or__: that is the classic Column's on PySpark 3.5, even for a Connect column.
    valid = F.col(RAW_TEXT).isNull() & ~reduce(operator.or_, broken)
    wrong_width = F.array(
        F.concat(F.lit(f"expected {width} fields, found "), field_count(F.col(RAW_TEXT)).cast("string"))
    )
    each = [_reason(condition, rule.reason) for condition, rule in zip(broken, rules, strict=True)]
    return F.when(valid, _no_reasons()).when(F.col(RAW_TEXT).isNotNull(), wrong_width).otherwise(F.concat(*each))


def record_counts(parsed: DataFrame) -> DataFrame:
    """Per file and set of reject reasons: records, first and last record id, content hashes.

    ``last_lines`` is how many lines of the file the group's last record spans, for rejected groups: a
    rejected last record spanning several lines is an unclosed quote that ran to the end of the file.
    The content hashes ignore order and name, so a file re-delivered under another name matches.
    """
    content = F.struct(*ORDER_COLUMNS, RESCUED_DATA, RAW_TEXT)
    return parsed.groupBy(SOURCE_FILE, REJECT_REASONS).agg(
        F.count("*").alias("records"),
        F.min(RECORD_ID).alias("first_id"),
        F.max(RECORD_ID).alias("last_id"),
        F.max_by(physical_lines(F.col(RAW_TEXT)), F.col(RECORD_ID)).alias("last_lines"),
        F.max_by(quote_open(F.col(RAW_TEXT)), F.col(RECORD_ID)).alias("last_open"),
        F.max_by(LAST_FIELD_BYTES, RECORD_ID).alias("last_field_bytes"),
        F.bit_xor(F.xxhash64(content)).alias("hash_xor"),
        F.sum(F.hash(content).cast("long")).alias("hash_sum"),
    )


def last_record_groups(counts: list[dict]) -> dict[str, dict]:
    """Per file, the ``record_counts`` group (collected) that holds its last record: the greatest ``last_id``."""
    last: dict[str, dict] = {}
    for row in counts:
        held = last.get(row[SOURCE_FILE])
        if held is None or row["last_id"] > held["last_id"]:
            last[row[SOURCE_FILE]] = row
    return last


def with_line_numbers(parsed: DataFrame, sources: list[tuple], with_first_ids: bool) -> DataFrame:
    """The rows of the files in ``sources`` (``row_sources``: path, loaded, and the first record id if
    ``with_first_ids``), each with its line number in its file and whether its file is loaded.

    A record's id counts up by one per record within its file, from wherever Spark's packing of files
    into partitions starts that file. Given the files' first ids (rows kept since they were counted, so
    the ids cannot change), the line number is taken against them; without, against the first ids taken
    in the same query, so that it is the file's own whatever the packing of this read (where rows are
    not kept, each action reads the files again and may pack them otherwise).
    """
    files = parsed.sparkSession.createDataFrame(sources, _ROW_SOURCES if with_first_ids else _ROW_FILES)
    if not with_first_ids:
        files = parsed.groupBy(SOURCE_FILE).agg(F.min(RECORD_ID).alias(FIRST_RECORD_ID)).join(files, SOURCE_FILE)
    return (
        parsed.join(F.broadcast(files), SOURCE_FILE)
        .withColumn(LINE_NUMBER, F.col(RECORD_ID) - F.col(FIRST_RECORD_ID) + 2)
        .drop(RECORD_ID, FIRST_RECORD_ID)
    )


def rejected_rows(rows: DataFrame, rejected_files: list[dict], batch_id: str, rejected_at: datetime) -> DataFrame:
    """Rows that fail validation, and a record per file rejected whole (``rejected_file_records``), in the
    rejects table's shape."""
    files = [{"batch_id": batch_id, **record, "rejected_at": rejected_at} for record in rejected_files]
    return (
        rows.where(F.size(REJECT_REASONS) > 0)
        .select(
            F.lit(batch_id).alias("batch_id"),
            F.col(SOURCE_FILE).alias("source_file"),
            F.col(LINE_NUMBER).alias("line_number"),
            F.col(RAW_TEXT).alias("raw_record"),
            F.array_join(REJECT_REASONS, "; ").alias("reason"),
            F.lit(rejected_at).cast("timestamp").alias("rejected_at"),
        )
        .unionByName(rows.sparkSession.createDataFrame(files, REJECTS_SCHEMA))
    )


def valid_rows(rows: DataFrame, batch_id: str, ingested_at: datetime) -> DataFrame:
    """Rows of loaded files that pass validation, with lineage, in the target's column order."""
    return (
        rows.where(F.col(FILE_LOADED) & (F.size(REJECT_REASONS) == 0))
        .withColumn(BATCH_ID, F.lit(batch_id))
        .withColumn(INGESTED_AT, F.lit(ingested_at).cast("timestamp"))
        .select(*TARGET_COLUMNS)
    )


def event_rank() -> Column:
    """An event's place in the contract's order (``EVENT_ORDER``: its time, then its content), as one struct.

    Structs compare field by field with a null below any value, strings by their UTF-8 bytes: the order
    the contract states, and the one ``tests.model`` computes in Python.
    """
    return F.struct(*EVENT_ORDER)


def collapse_to_latest(valid: DataFrame) -> DataFrame:
    """One row per key: the latest event (time, then content: ``event_rank``); an exact repeat of it goes to
    the greatest (source file, line number).

    Earlier distinct events of the key ride along in ``_superseded_events``, latest first, so the
    history table keeps every distinct event; ``_rows_collapsed`` counts the rows folded away. One sort
    by key and rank does it: a window ranks each key's rows, keeps the first and gathers the others
    whose event differs from the row ranked just above.
    """
    ranked = Window.partitionBy(KEY).orderBy(
        F.col(EVENT_TIME).desc(),
        *[F.col(name).desc_nulls_last() for name in EVENT_CONTENT],
        F.col(SOURCE_FILE).desc(),
        F.col(LINE_NUMBER).desc(),
    )
    whole_key = ranked.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    rank = F.row_number().over(ranked)
    another_event = (rank > 1) & ~F.lag(event_rank()).over(ranked).eqNullSafe(event_rank())
    return (
        valid.select(
            *TARGET_COLUMNS,
            rank.alias(_RANK),
            # collect_list skips the nulls: only the other distinct events are gathered.
            F.collect_list(F.when(another_event, F.struct(*TARGET_COLUMNS))).over(whole_key).alias(SUPERSEDED_EVENTS),
            (F.count(F.lit(1)).over(whole_key) - 1).cast("int").alias(ROWS_COLLAPSED),
        )
        .where(F.col(_RANK) == 1)
        .drop(_RANK)
    )
