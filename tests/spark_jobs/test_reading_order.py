"""Each job reads one way: following the SparkSession from the job's function, a reader never comes back
to a module it has left (read, then validate and collapse, then write)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession

import spark_jobs
from spark_jobs.merge_orders import merge_orders
from spark_jobs.stage_orders import stage_orders
from tests.conftest import SEED_FILES

PACKAGE = Path(spark_jobs.__file__).parent
_SPARK_VALUES = (SparkSession, DataFrame, Column)


def _caller(frame) -> str:
    """The file of the frame that called ``frame``, looking through ``contextlib``'s own frames."""
    caller = frame.f_back
    while caller is not None and caller.f_code.co_filename.endswith("contextlib.py"):
        caller = caller.f_back
    return caller.f_code.co_filename if caller is not None else ""


def modules_entered_from(job_module: str, run: Callable[[], dict]) -> tuple[list[str], dict]:
    """The ``spark_jobs`` modules that calls from ``job_module`` enter with a session, a DataFrame or a Column
    in hand, in the order entered (calls in a row to one module counted once), and what ``run`` returned."""
    entered: list[str] = []
    generators = set()

    def profile(frame, event, _) -> None:
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(str(PACKAGE)) or id(frame) in generators:
            return
        if code.co_flags & inspect.CO_GENERATOR:
            generators.add(id(frame))  # a generator's later resumptions are not calls
        module = Path(code.co_filename).name
        if module == job_module or _caller(frame) != str(PACKAGE / job_module):
            return
        holds_spark = any(isinstance(value, _SPARK_VALUES) for value in frame.f_locals.values())
        if holds_spark and (not entered or entered[-1] != module):
            entered.append(module)

    sys.setprofile(profile)
    try:
        result = run()
    finally:
        sys.setprofile(None)
    return entered, result


def test_the_stage_then_the_merge_each_read_one_way(spark, tables):
    inputs = [{"uri": str(SEED_FILES[0])}]

    stage_entered, staged = modules_entered_from(
        "stage_orders.py",
        lambda: stage_orders(spark, inputs, "one-way", tables.staging, tables.rejects, tables.audit),
    )
    merge_entered, merged = modules_entered_from(
        "merge_orders.py",
        lambda: merge_orders(spark, "one-way", tables.staging, tables.target, tables.history, tables.audit),
    )

    assert staged["rows_staged"] == merged["rows_inserted"] > 0
    # Read (the files, parsed once), then validate and collapse, then write; the merge's reads and writes
    # are all the order tables' (``load``), over the generic Delta layer it alone calls.
    assert stage_entered == ["reading.py", "transform.py", "load.py"]
    assert merge_entered == ["load.py"]
