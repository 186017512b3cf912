"""Pure transforms of the stage job: headers by name, row validation, lineage and in-batch collapse.

Every function takes and returns DataFrames and uses built-in Spark functions only.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.extract import RAW_TEXT, RECORD_ID, raw_cells
from spark_jobs.schema import (
    BATCH_ID,
    EVENT_TIME,
    INGESTED_AT,
    KEY,
    LINE_NUMBER,
    MAX_COLUMNS,
    OPTIONAL_DATE_COLUMNS,
    ORDER_COLUMNS,
    REQUIRED_COLUMNS,
    RESCUED_DATA,
    ROWS_COLLAPSED,
    SOURCE_FILE,
    SUPERSEDED_EVENTS,
    TARGET_COLUMNS,
)

HEADER_ID = "_header_id"
HEADER_NAMES = "_header_names"
HEADER_TEXT = "_header_text"
FILE_ERROR = "_file_error"
RECORDS = "_records"  # records in the file, header included
FIELD_COUNT = "_field_count"
REJECT_REASONS = "_reject_reasons"
_EXTRA_POSITIONS = "_extra_positions"
_TEXT = "_text_"  # prefix of a column's trimmed text
_EXPECTED_FIELDS = "_expected_fields"
_POSITION = "_pos_"  # prefix of the per-column header position (1-based, 0 when absent)

# A quoted CSV field, written so that Java's regex engine loops rather than recurses per character.
_QUOTED_FIELD = r'"[^"]*(?:""[^"]*)*"'
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$"
_WHOLE_NUMBER = r"^[+-]?\d+$"


def field_count(raw_text: Column) -> Column:
    """Number of fields in a raw CSV record: commas outside quoted fields, plus one."""
    unquoted = F.regexp_replace(raw_text, _QUOTED_FIELD, "")
    return F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit(""))) + 1


def _record_field_count(columns: int, raw_text: Column | None = None) -> Column:
    # Spark drops the raw text only when a record has exactly as many fields as the read has columns.
    return F.coalesce(field_count(F.col(RAW_TEXT) if raw_text is None else raw_text), F.lit(columns))


def widest_header(raw: DataFrame) -> DataFrame:
    """One row, one column ``widest``: the most fields any file's header (first record) has; null if no record."""
    # The cells ride along: Spark refuses a CSV query that reads nothing but the corrupt-record column.
    cells = raw_cells(raw)
    header = F.struct(F.col(RAW_TEXT).alias("text"), *cells)
    first = raw.groupBy(SOURCE_FILE).agg(F.min_by(header, F.col(RECORD_ID)).alias("h"))
    return first.agg(F.max(_record_field_count(len(cells), F.col("h.text"))).alias("widest"))


def file_headers(raw: DataFrame) -> DataFrame:
    """One row per non-empty file: header names, header text, column positions and why the file is unusable."""
    cells = raw_cells(raw)
    first = raw.groupBy(SOURCE_FILE).agg(
        F.min_by(F.struct(F.array(*cells).alias("cells"), F.col(RAW_TEXT)), F.col(RECORD_ID)).alias("h"),
        F.min(RECORD_ID).alias(HEADER_ID),
        F.count("*").alias(RECORDS),
    )
    width = F.least(_record_field_count(len(cells), F.col("h." + RAW_TEXT)), F.lit(len(cells)))
    names = F.transform(
        F.slice(F.col("h.cells"), 1, width),
        lambda name, i: F.when(
            F.trim(F.regexp_replace(F.coalesce(name, F.lit("")), "^\ufeff", "")) == "",
            F.concat(F.lit("_c"), (i + 1).cast("string")),
        ).otherwise(F.trim(F.regexp_replace(name, "^\ufeff", ""))),
    )
    headers = first.select(
        SOURCE_FILE,
        HEADER_ID,
        names.alias(HEADER_NAMES),
        F.col("h." + RAW_TEXT).alias(HEADER_TEXT),
        width.alias("_width"),
        RECORDS,
    )
    known = F.array(*[F.lit(name) for name in ORDER_COLUMNS])
    missing = F.filter(
        F.array(*[F.lit(name) for name in REQUIRED_COLUMNS]),
        lambda name: ~F.array_contains(F.col(HEADER_NAMES), name),
    )
    duplicates = F.array_distinct(
        F.filter(
            F.col(HEADER_NAMES),
            lambda name: F.size(F.filter(F.col(HEADER_NAMES), lambda other: other == name)) > 1,
        )
    )
    error = (
        F.when(
            F.col("_width") >= MAX_COLUMNS,
            F.lit(f"header has more than {MAX_COLUMNS - 1} columns"),
        )
        .when(F.size(missing) > 0, F.concat(F.lit("missing required columns: "), F.array_join(missing, ", ")))
        .when(F.size(duplicates) > 0, F.concat(F.lit("duplicate column names: "), F.array_join(duplicates, ", ")))
    )
    positions = [F.array_position(F.col(HEADER_NAMES), name).alias(_POSITION + name) for name in ORDER_COLUMNS]
    extra = F.filter(
        F.sequence(F.lit(1), F.size(F.col(HEADER_NAMES))),
        lambda pos: ~F.array_contains(known, F.element_at(F.col(HEADER_NAMES), pos)),
    )
    return headers.select(
        SOURCE_FILE,
        HEADER_ID,
        HEADER_NAMES,
        HEADER_TEXT,
        error.alias(FILE_ERROR),
        RECORDS,
        *positions,
        extra.alias(_EXTRA_POSITIONS),
    )


def _blank(value: Column) -> Column:
    return value.isNull() | (value == "")


def _reason(condition: Column, message: str) -> Column:
    return F.when(condition, F.lit(message))


def parse_orders(raw: DataFrame, headers: DataFrame) -> DataFrame:
    """Map the data records of usable files to typed order columns, with the reasons each row is rejected.

    The result has the business columns (typed; null where unparseable), ``_rescued_data`` (unknown
    columns as JSON), ``_source_file``, ``_line_number``, ``_raw_text`` and ``_reject_reasons``
    (empty for a valid row).

    It works in three projections (text, then typed values, then reasons), each referring to the
    previous one's columns: Spark keeps them apart because their columns are used several times, so
    each value is computed once per row and each generated method stays small enough for the JIT.
    """
    usable = headers.where(F.col(FILE_ERROR).isNull()).drop(HEADER_TEXT, FILE_ERROR, RECORDS)
    rows = raw.join(F.broadcast(usable), SOURCE_FILE).where(F.col(RECORD_ID) != F.col(HEADER_ID))
    cell_columns = raw_cells(raw)
    cells = F.array(*cell_columns)
    extra_names = F.transform(F.col(_EXTRA_POSITIONS), lambda pos: F.element_at(F.col(HEADER_NAMES), pos))
    extra_values = F.transform(F.col(_EXTRA_POSITIONS), lambda pos: F.get(cells, pos - 1))
    texts = rows.select(
        *[F.trim(F.get(cells, F.col(_POSITION + name) - 1)).alias(_TEXT + name) for name in ORDER_COLUMNS],
        F.when(F.size(F.col(_EXTRA_POSITIONS)) > 0, F.to_json(F.map_from_arrays(extra_names, extra_values))).alias(
            RESCUED_DATA
        ),
        F.col(SOURCE_FILE),
        (F.col(RECORD_ID) - F.col(HEADER_ID) + 1).alias(LINE_NUMBER),
        F.coalesce(F.col(RAW_TEXT), F.to_csv(F.struct(*cell_columns))).alias(RAW_TEXT),
        F.size(F.col(HEADER_NAMES)).alias(_EXPECTED_FIELDS),
        _record_field_count(len(cell_columns)).alias(FIELD_COUNT),
    )

    text = {name: F.col(_TEXT + name) for name in ORDER_COLUMNS}
    timestamp_text = F.regexp_replace(text[EVENT_TIME], "T", " ")
    timestamp = F.try_to_timestamp(F.concat(timestamp_text, F.lit(" +00:00")), F.lit("yyyy-MM-dd HH:mm:ss XXX"))
    typed = {
        "order_num": F.when(text["order_num"].rlike(_WHOLE_NUMBER), text["order_num"].try_cast("bigint")),
        "tracking_num": F.when(~_blank(text["tracking_num"]), text["tracking_num"]),
        "status": F.when(~_blank(text["status"]), text["status"]),
        "address": F.when(~_blank(text["address"]), text["address"]),
        EVENT_TIME: F.when(text[EVENT_TIME].rlike(_TIMESTAMP), timestamp),
    }
    for name in OPTIONAL_DATE_COLUMNS:
        typed[name] = F.when(text[name].rlike(_DATE), F.try_to_date(text[name], "yyyy-MM-dd"))
    values = texts.select("*", *[typed[name].cast(dtype).alias(name) for name, dtype in ORDER_COLUMNS.items()])

    value = {name: F.col(name) for name in ORDER_COLUMNS}
    value_reasons = [
        _reason(F.col(RAW_TEXT).contains("\ufffd"), "invalid UTF-8 bytes"),
        _reason(F.col(RAW_TEXT).contains("\u0000"), "contains a NUL byte"),
        _reason(_blank(text["tracking_num"]), "tracking_num is empty"),
        _reason(_blank(text["status"]), "status is empty"),
        _reason(_blank(text["order_num"]), "order_num is empty"),
        _reason(~_blank(text["order_num"]) & value["order_num"].isNull(), "order_num is not a whole number"),
        _reason(_blank(text[EVENT_TIME]), "last_update_timestamp is empty"),
        _reason(
            ~_blank(text[EVENT_TIME]) & value[EVENT_TIME].isNull(),
            "last_update_timestamp is not a yyyy-MM-dd HH:mm:ss timestamp",
        ),
        *[
            _reason(~_blank(text[name]) & value[name].isNull(), f"{name} is not a yyyy-MM-dd date")
            for name in OPTIONAL_DATE_COLUMNS
        ],
    ]
    wrong_width = F.array(
        F.concat(
            F.lit("expected "),
            F.col(_EXPECTED_FIELDS).cast("string"),
            F.lit(" fields, found "),
            F.col(FIELD_COUNT).cast("string"),
        )
    )
    reasons = F.when(F.col(FIELD_COUNT) != F.col(_EXPECTED_FIELDS), wrong_width).otherwise(
        F.array_compact(F.array(*value_reasons))
    )
    return values.select(
        *ORDER_COLUMNS,
        RESCUED_DATA,
        SOURCE_FILE,
        LINE_NUMBER,
        RAW_TEXT,
        reasons.alias(REJECT_REASONS),
    )


def rejected_rows(parsed: DataFrame, batch_id: str, rejected_at: datetime) -> DataFrame:
    """Rows of ``parse_orders`` that fail validation, in the rejects table's shape."""
    return parsed.where(F.size(REJECT_REASONS) > 0).select(
        F.lit(batch_id).alias("batch_id"),
        F.col(SOURCE_FILE).alias("source_file"),
        F.col(LINE_NUMBER).alias("line_number"),
        F.col(RAW_TEXT).alias("raw_record"),
        F.array_join(REJECT_REASONS, "; ").alias("reason"),
        F.lit(rejected_at).cast("timestamp").alias("rejected_at"),
    )


def rejected_files(headers: DataFrame, batch_id: str, rejected_at: datetime) -> DataFrame:
    """One rejects record per file whose header is unusable; its raw record is the header line."""
    return headers.where(F.col(FILE_ERROR).isNotNull()).select(
        F.lit(batch_id).alias("batch_id"),
        F.col(SOURCE_FILE).alias("source_file"),
        F.lit(1).cast("long").alias("line_number"),
        F.col(HEADER_TEXT).alias("raw_record"),
        F.concat(F.lit("file rejected: "), F.col(FILE_ERROR)).alias("reason"),
        F.lit(rejected_at).cast("timestamp").alias("rejected_at"),
    )


def valid_rows(parsed: DataFrame, batch_id: str, ingested_at: datetime) -> DataFrame:
    """Rows of ``parse_orders`` that pass validation, with lineage, in the target's column order."""
    return (
        parsed.where(F.size(REJECT_REASONS) == 0)
        .withColumn(BATCH_ID, F.lit(batch_id))
        .withColumn(INGESTED_AT, F.lit(ingested_at).cast("timestamp"))
        .select(*TARGET_COLUMNS)
    )


def collapse_to_latest(valid: DataFrame) -> DataFrame:
    """One row per key: the latest event, ties broken by the greatest (source file, line number).

    Earlier distinct events of the key (one per event time) ride along in ``_superseded_events``, so
    the history table keeps every status event; ``_rows_collapsed`` counts the rows folded away.
    """
    ranked = F.struct(
        F.col(EVENT_TIME).alias("t"),
        F.col(SOURCE_FILE).alias("f"),
        F.col(LINE_NUMBER).alias("l"),
        F.struct(*TARGET_COLUMNS).alias("e"),
    )
    grouped = valid.groupBy(KEY).agg(F.sort_array(F.collect_list(ranked), asc=False).alias("_ranked"))
    ranked_events = F.col("_ranked")
    distinct_times = F.filter(
        F.slice(ranked_events, 2, F.size(ranked_events)),
        lambda event, i: event["t"] != F.get(ranked_events, i)["t"],
    )
    return grouped.select(
        *[F.get(ranked_events, 0)["e"][name].alias(name) for name in TARGET_COLUMNS],
        F.transform(distinct_times, lambda event: event["e"]).alias(SUPERSEDED_EVENTS),
        (F.size(ranked_events) - 1).alias(ROWS_COLLAPSED),
    )
