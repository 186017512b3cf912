"""The MERGE's plan: what a staged batch's keys and event times let the target and history MERGEs skip.

One pass over the staged batch (``profile_batch``) gives its size, its key range and a few bands of
event time; the range and the bands go into the MERGE conditions as literals, so Delta skips every
file whose min/max statistics lie outside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.schema import EVENT_TIME, KEY, ROWS_COLLAPSED, SUPERSEDED_EVENTS
from spark_jobs.tables import sql_string

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KeyRange:
    """The smallest and greatest key of a batch; added to MERGE conditions so Delta can skip files."""

    low: str
    high: str

    def condition(self, alias: str) -> Column:
        """``alias``'s key within the range. The bounds are literal values: keys come from CSV data and
        may hold quotes or backslashes."""
        return F.col(f"{alias}.{KEY}").between(F.lit(self.low), F.lit(self.high))

    def sql(self, alias: str) -> str:
        """The same condition as SQL text, the bounds as ``sql_string`` literals: Delta's MERGE binds no
        query parameters, and its file skipping needs literals."""
        return f"{alias}.{KEY} BETWEEN {sql_string(self.low)} AND {sql_string(self.high)}"


@dataclass(frozen=True)
class TimeBands:
    """A few disjoint spans of event time (epoch microseconds, UTC) that cover every event of a batch.

    Added to the history insert's condition, they let Delta skip every history file whose events all
    lie outside them (its min/max statistics): new events are newer than nearly all of the history,
    so an insert reads almost none of it however long the history grows. A replayed or late event
    falls in a band that overlaps old files, and those files are read, as correctness needs.
    """

    spans: tuple[tuple[int, int], ...]

    @classmethod
    def covering(cls, buckets: list[tuple[int, int]], max_bands: int = 8) -> TimeBands:
        """Join sorted or unsorted (low, high) buckets into at most ``max_bands`` spans, closing the
        smallest gaps first, so the spans cover every bucket and as little else as they can."""
        spans = sorted(buckets)
        merged: list[list[int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        while len(merged) > max(1, max_bands):
            gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
            i = gaps.index(min(gaps))
            merged[i : i + 2] = [[merged[i][0], max(merged[i][1], merged[i + 1][1])]]
        return cls(tuple((low, high) for low, high in merged))

    def condition(self, alias: str) -> Column:
        """``alias``'s event time within a band; the bounds are timestamp literals, which data skipping uses."""
        column = F.col(f"{alias}.{EVENT_TIME}")
        within = [column.between(F.lit(_instant(low)), F.lit(_instant(high))) for low, high in self.spans]
        if not within:
            return F.lit(False)
        condition = within[0]
        for band in within[1:]:
            condition = condition | band
        return condition

    def sql(self, alias: str) -> str:
        """The same condition as SQL text, the bounds as UTC timestamp literals."""
        within = [
            f"{alias}.{EVENT_TIME} BETWEEN {_timestamp_sql(low)} AND {_timestamp_sql(high)}" for low, high in self.spans
        ]
        return "(" + " OR ".join(within) + ")" if within else "FALSE"


def _timestamp_sql(micros: int) -> str:
    """An epoch-microsecond instant as a SQL timestamp literal with its UTC offset (no session-zone reading).

    Written from the instant's integer fields, each zero-padded to its width: ``strftime("%Y")`` writes
    year 23 as ``23``, which Spark refuses. Delta's file skipping needs a literal, not an expression.
    """
    at = _instant(micros)
    return (
        f"TIMESTAMP '{at.year:04d}-{at.month:02d}-{at.day:02d} "
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}+00:00'"
    )


def _instant(micros: int) -> datetime:
    """An epoch-microsecond instant as an aware UTC datetime, by integer arithmetic (years 1 to 9999)."""
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class BatchProfile:
    """What the merge needs to know of a staged batch before writing: its size, key range and event times."""

    staged: int
    collapsed: int
    key_range: KeyRange | None
    bands: TimeBands


def profile_batch(batch: DataFrame) -> BatchProfile:
    """One pass over the staged batch: rows, collapsed rows, key range, and the hours its events fall in."""
    times = F.concat(F.array(F.col(EVENT_TIME)), F.col(f"{SUPERSEDED_EVENTS}.{EVENT_TIME}"))
    staged_row = F.col("pos") == 0  # position 0 is the staged row's own event; the rest it superseded
    micros = F.unix_micros(F.col("time"))
    buckets = (
        batch.select(KEY, ROWS_COLLAPSED, F.posexplode(times).alias("pos", "time"))
        .groupBy(F.date_trunc("hour", F.col("time")))
        .agg(
            F.count_if(staged_row).alias("staged"),
            F.sum(F.when(staged_row, F.col(ROWS_COLLAPSED))).alias("collapsed"),
            F.min(KEY).alias("low"),
            F.max(KEY).alias("high"),
            F.min(micros).alias("first"),
            F.max(micros).alias("last"),
        )
        .collect()
    )
    lows = [row["low"] for row in buckets if row["low"] is not None]
    highs = [row["high"] for row in buckets if row["high"] is not None]
    return BatchProfile(
        staged=sum(int(row["staged"]) for row in buckets),
        collapsed=sum(int(row["collapsed"] or 0) for row in buckets),
        key_range=KeyRange(min(lows), max(highs)) if lows else None,
        bands=TimeBands.covering([(row["first"], row["last"]) for row in buckets if row["first"] is not None]),
    )
