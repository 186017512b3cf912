"""Properties: the target and history depend only on the set of events loaded (``tests.model``).

Hypothesis draws histories of status events with ties on time, stale and repeated events, splits each
into files and the files into batches, and picks an order to load the batches in, with replays. All
histories share one run of the real jobs, each in its own key space: load step ``n`` stages and merges,
as one batch, the ``n``-th batch of every history that has one; the last two steps run at once. Each
history's keys must then hold what the model computes from its events alone. ``make test`` draws a
fixed set (Hypothesis profile ``ci``, derandomized); ``make fuzz`` draws new, more (profile ``fuzz``).
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from spark_jobs.schema import ORDER_COLUMNS, WHITE_SPACE
from tests.model import Event, history, latest
from tests.spark_jobs.helpers import load_batch, read

HISTORIES = int(os.environ.get("ORDER_TRACKING_PROPERTY_HISTORIES", "200"))
_BASE = datetime(2023, 1, 1, 8)
# Values and keys hold what SQL, Spark's variable substitution, globs and encodings could mistake for theirs:
# quotes, backslashes, ``${``, ``%``, ``*``, line breaks, emoji and a real U+FFFD (NUL, which rejects its
# row, is tested in test_transform). A quoted CR is read as LF, as Spark's CSV parser has it, so none is drawn.
_HOSTILE = ["${", "$", "{x}", "'", '"', "\\", "%", "*", "\n", "😀", "\ufffd", ","]
_TEXT = st.lists(st.sampled_from([*"aZ 9éü\u00a0-", *_HOSTILE]), min_size=1, max_size=6).map("".join)
_KEY_PART = st.lists(st.sampled_from(["a", "9", *_HOSTILE]), max_size=4).map("".join)


@dataclass(frozen=True)
class GeneratedHistory:
    """Events of a few keys, their files (an event may sit in several), the batches, and the load order."""

    events: tuple[Event, ...]
    files: tuple[tuple[int, ...], ...]  # per file, the indexes of its events, in file order
    batches: tuple[tuple[int, ...], ...]  # per batch, the indexes of its files
    loads: tuple[int, ...]  # the batches in the order they are loaded; a repeat is a replay


@st.composite
def events(draw, key: str) -> Event:
    def trimmed(text: str) -> str | None:
        return text.strip(WHITE_SPACE) or None

    status = draw(st.sampled_from(["In Transit", "Delivered", "Delayed", "Returned", "Out for Delivery"]))
    day = st.none() | st.sampled_from([date(2023, 1, 1), date(2023, 1, 2)])
    return Event(
        order_num=draw(st.integers(1, 3)),
        tracking_num=key,
        pck_recieved_date=draw(day),
        package_deliver_date=draw(day),
        status=status,
        address=trimmed(draw(st.none() | _TEXT) or ""),
        # Few distinct times, so that ties on time with other content are common.
        last_update_timestamp=_BASE + timedelta(hours=draw(st.integers(0, 3))),
    )


@st.composite
def histories(draw) -> GeneratedHistory:
    keys = draw(st.integers(1, 3))
    # Each key its own hostile middle, between letters so that trimming never changes it.
    names = [f"K{k}{draw(_KEY_PART)}Z" for k in range(keys)]
    drawn = draw(st.lists(st.integers(0, keys - 1).flatmap(lambda k: events(names[k])), min_size=1, max_size=8))
    file_count = draw(st.integers(1, 4))
    # Each event goes to one file, and sometimes to a second one too (a repeat across files).
    homes = [draw(st.integers(0, file_count - 1)) for _ in drawn]
    files = [[i for i, home in enumerate(homes) if home == f] for f in range(file_count)]
    for i in range(len(drawn)):
        if draw(st.booleans()) and draw(st.booleans()):
            files[draw(st.integers(0, file_count - 1))].append(i)
    files = [draw(st.permutations(members)) for members in files]
    batch_count = draw(st.integers(1, file_count))
    batch_of = [draw(st.integers(0, batch_count - 1)) for _ in files]
    batches = tuple(tuple(f for f in range(file_count) if batch_of[f] == b) for b in range(batch_count))
    loads = draw(st.permutations(range(batch_count)))
    replays = draw(st.lists(st.integers(0, batch_count - 1), max_size=2))
    return GeneratedHistory(
        events=tuple(drawn),
        files=tuple(tuple(f) for f in files),
        batches=batches,
        loads=tuple(loads) + tuple(replays),
    )


def _csv_text(rows: list[Event], history_id: str) -> str:
    """A file of ``rows`` as a source would write it: quoted where needed, some values padded with white space."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ORDER_COLUMNS)
    for n, event in enumerate(rows):
        pad = "\t" if n % 3 == 0 else "\u00a0" if n % 3 == 1 else ""
        writer.writerow(
            [
                event.order_num,
                f"{pad}{history_id}-{event.tracking_num}{pad}",
                event.pck_recieved_date or "",
                event.package_deliver_date or "",
                event.status,
                event.address or "",
                event.last_update_timestamp.strftime("%Y-%m-%dT%H:%M:%S" if n % 2 else "%Y-%m-%d %H:%M:%S"),
            ]
        )
    return out.getvalue()


def _keyed(event: Event, history_id: str) -> Event:
    return Event(**{**event.__dict__, "tracking_num": f"{history_id}-{event.tracking_num}"})


def generate(count: int) -> list[GeneratedHistory]:
    """``count`` histories drawn by Hypothesis (one per example; the Spark run takes them all at once)."""
    drawn: list[GeneratedHistory] = []

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(histories())
    def draw(generated: GeneratedHistory) -> None:
        drawn.append(generated)

    draw()
    return drawn


def test_the_tables_hold_what_the_model_computes_from_the_events_alone(spark, tmp_path):
    generated = generate(HISTORIES)
    from order_tracking_load.settings import TABLE_NAMES, Tables

    root = tmp_path
    tables = Tables(**{role: str(root / "tables" / name) for role, name in TABLE_NAMES.items()})
    steps: list[list[Path]] = []
    loaded: dict[str, list[Event]] = {}
    for h, generated_history in enumerate(generated):
        history_id = f"H{h:04d}"
        paths = []
        for f, members in enumerate(generated_history.files):
            path = root / "in" / f"{history_id}-f{f}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_csv_text([generated_history.events[i] for i in members], history_id), encoding="utf-8")
            paths.append(path)
        for step, batch in enumerate(generated_history.loads):
            while len(steps) <= step:
                steps.append([])
            steps[step].extend(paths[f] for f in generated_history.batches[batch])
        loaded[history_id] = [
            _keyed(generated_history.events[i], history_id)
            for batch in generated_history.loads
            for f in generated_history.batches[batch]
            for i in generated_history.files[f]
        ]

    def load(step: int) -> tuple[int, int]:
        staged, merged = load_batch(spark, tables, sorted(set(steps[step])), f"step-{step}", max_reject_fraction=0.0)
        return staged["rows_rejected"], merged["rows_staged"]

    # The steps in order, but the last two at once, as overlapping runs would (their commits race).
    figures = [load(step) for step in range(len(steps) - 2)]
    with ThreadPoolExecutor(max_workers=2) as overlapping:
        figures += list(overlapping.map(load, range(max(0, len(steps) - 2), len(steps))))

    target = {row["tracking_num"]: Event.from_row(row) for row in read(spark, tables.target).collect()}
    stored_history = [Event.from_row(row) for row in read(spark, tables.history).collect()]
    all_events = [event for events_of in loaded.values() for event in events_of]
    wrong = {
        history_id: generated[int(history_id[1:])]
        for history_id, events_of in loaded.items()
        if {k: v for k, v in target.items() if k.startswith(history_id + "-")} != latest(events_of)
    }
    assert wrong == {}, f"{len(wrong)} of {len(generated)} histories differ from the model"
    assert len(stored_history) == len(set(stored_history)), "the history holds an event twice"
    assert set(stored_history) == history(all_events)
    assert all(rejected == 0 for rejected, _ in figures), figures
    assert read(spark, tables.target).where(F.col("tracking_num").contains("\t")).count() == 0


def _ties(generated: GeneratedHistory) -> set[tuple]:
    """(key, time) pairs of the history that have events of different content."""
    contents: dict[tuple, set[Event]] = {}
    for event in generated.events:
        contents.setdefault((event.tracking_num, event.last_update_timestamp), set()).add(event)
    return {pair for pair, distinct in contents.items() if len(distinct) > 1}


def test_the_histories_drawn_have_ties_repeats_and_replays():
    """The property above runs on histories that can tell a wrong rule apart, not only on simple ones."""
    generated = generate(HISTORIES)

    ties = sum(len(_ties(h)) > 0 for h in generated)
    replays = sum(len(h.loads) > len(h.batches) for h in generated)
    repeats = sum(sum(len(f) for f in h.files) > len(h.events) for h in generated)
    assert len(generated) == HISTORIES
    assert min(ties, replays, repeats) > HISTORIES // 5, (ties, replays, repeats)
