"""The contract in plain Python: what the target and history hold once a set of events is loaded.

No Spark here: the property tests load generated events through the real jobs and compare the
tables with what this model computes from the events alone, whatever their batching and order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime

from spark_jobs.schema import EVENT_CONTENT, EVENT_ORDER, EVENT_TIME, KEY, RESCUED_DATA


@dataclass(frozen=True)
class Event:
    """One status event as the target holds it: the business columns and the rescued data."""

    order_num: int
    tracking_num: str
    pck_recieved_date: date | None
    package_deliver_date: date | None
    status: str
    address: str | None
    last_update_timestamp: datetime
    _rescued_data: str | None = None

    @classmethod
    def from_row(cls, row) -> Event:
        """The event a target or history row holds (a Spark ``Row`` or a dict)."""
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def rank(self) -> tuple:
        """The contract's order of events of one key: time, then content, a missing value below any value.

        Python compares strings by code point, which is the order of their UTF-8 bytes, as Spark's.
        """
        values = [getattr(self, name) for name in EVENT_ORDER]
        return tuple((0,) if value is None else (1, value) for value in values)


assert {KEY, EVENT_TIME, RESCUED_DATA, *EVENT_CONTENT} == {f.name for f in fields(Event)}


def latest(events: list[Event]) -> dict[str, Event]:
    """The target: per key, the event of the greatest rank."""
    target: dict[str, Event] = {}
    for event in events:
        current = target.get(event.tracking_num)
        if current is None or event.rank() > current.rank():
            target[event.tracking_num] = event
    return target


def history(events: list[Event]) -> set[Event]:
    """The history: each distinct event once."""
    return set(events)
