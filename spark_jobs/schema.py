"""Column names and types of the order-tracking data, as ``CONTRACT.md`` defines them."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pyspark.sql import types as T

KEY = "tracking_num"
EVENT_TIME = "last_update_timestamp"

# Business columns in output order, with the type each becomes after parsing.
ORDER_COLUMNS: dict[str, T.DataType] = {
    "order_num": T.LongType(),
    "tracking_num": T.StringType(),
    "pck_recieved_date": T.DateType(),
    "package_deliver_date": T.DateType(),
    "status": T.StringType(),
    "address": T.StringType(),
    "last_update_timestamp": T.TimestampType(),
}
# The earliest date and event time the contract accepts (to 9999-12-31 23:59:59, the four-digit years):
# an earlier one is a typo in order-tracking data, and years before 1000 are not even written alike
# by every tool that reads the tables.
EARLIEST_YEAR = 1900
# Trimmed from both ends of every value and column name: the characters with Unicode's White_Space
# property (tabs, line breaks, no-break and ideographic spaces...); Spark's trim strips the space alone.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))  # en quad to hair space
    + "\u2028\u2029\u202f\u205f\u3000"
)
REQUIRED_COLUMNS: tuple[str, ...] = ("order_num", "tracking_num", "status", "last_update_timestamp")
OPTIONAL_DATE_COLUMNS: tuple[str, ...] = ("pck_recieved_date", "package_deliver_date")

# Lineage carried from staging into the target and history tables.
RESCUED_DATA = "_rescued_data"
SOURCE_FILE = "_source_file"
LINE_NUMBER = "_line_number"
BATCH_ID = "_batch_id"
INGESTED_AT = "_ingested_at"
LINEAGE_COLUMNS: dict[str, T.DataType] = {
    RESCUED_DATA: T.StringType(),
    SOURCE_FILE: T.StringType(),
    LINE_NUMBER: T.LongType(),
    BATCH_ID: T.StringType(),
    INGESTED_AT: T.TimestampType(),
}

# What an event says besides its key and time, in the order that breaks a tie on time: of two events of a
# key with the same time, the one with the greater content wins, column by column, a missing value below
# any value, text by its UTF-8 bytes. The winner is then the same whatever order the events arrive in.
EVENT_CONTENT: tuple[str, ...] = (
    "status",
    "order_num",
    "address",
    "pck_recieved_date",
    "package_deliver_date",
    RESCUED_DATA,
)
# The columns that order two events of a key: time first, then content.
EVENT_ORDER: tuple[str, ...] = (EVENT_TIME, *EVENT_CONTENT)

# Staging only: earlier distinct events of the same key within the batch, and how many rows collapsed.
SUPERSEDED_EVENTS = "_superseded_events"
ROWS_COLLAPSED = "_rows_collapsed"

TARGET_SCHEMA = T.StructType(
    [T.StructField(name, dtype) for name, dtype in {**ORDER_COLUMNS, **LINEAGE_COLUMNS}.items()]
)
TARGET_COLUMNS: tuple[str, ...] = tuple(TARGET_SCHEMA.fieldNames())

REJECTS_SCHEMA = T.StructType(
    [
        T.StructField("batch_id", T.StringType()),
        T.StructField("source_file", T.StringType()),
        T.StructField("line_number", T.LongType()),
        T.StructField("raw_record", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("rejected_at", T.TimestampType()),
    ]
)

# The widest header a file may have; a wider file is rejected whole (it is not order-tracking data).
MAX_COLUMNS = 512
# The longest field, and the most fields in one record, the reader accepts: a file holding a longer
# field or a wider record is rejected whole, rather than exhausting the reader's memory.
MAX_FIELD_CHARS = 16 * 1024 * 1024
MAX_RECORD_FIELDS = 20_480


def struct_of(record: type) -> T.StructType:
    """A Spark struct of a dataclass's fields, in order, from their annotations: ``str`` (and ``StrEnum``s)
    as string, ``int`` as bigint, ``bool`` as boolean; every field nullable."""

    def spark_type(name: str, hint: Any) -> T.DataType:
        base = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)
        for python, spark in ((bool, T.BooleanType()), (int, T.LongType()), (str, T.StringType())):
            if isinstance(base, type) and issubclass(base, python):
                return spark
        raise TypeError(f"{record.__name__}.{name}: no Spark type for {hint}")

    hints = typing.get_type_hints(record)
    return T.StructType([T.StructField(f.name, spark_type(f.name, hints[f.name])) for f in dataclasses.fields(record)])
