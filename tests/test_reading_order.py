"""Each job reads one way, checked on its source (no Spark): its job function calls the reading layer, then the
transforms, then the load layer, and never goes back to a layer it has left (read, then validate and collapse,
then write). The merge job's reads and writes are all the order tables' (``load``)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from types import ModuleType

from spark_jobs import merge_orders, stage_orders

# The layers a job function goes through, in order, by the module a called name is imported from.
LAYERS = {"spark_jobs.reading": "read", "spark_jobs.extract": "read", "spark_jobs.transform": "transform"}
LAYERS["spark_jobs.load"] = "load"
ORDER = ("read", "transform", "load")


def layers_called(source: str, function: str) -> list[tuple[str, str]]:
    """The (layer, name) of each call in ``function`` to a name the module imports from a layer, in the order
    Python makes them (a call's arguments before it)."""
    tree = ast.parse(source)
    imported = {
        alias.asname or alias.name: LAYERS[node.module]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module in LAYERS
        for alias in node.names
    }
    (body,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
    called: list[tuple[str, str]] = []

    class Calls(ast.NodeVisitor):
        def visit_Call(self, call: ast.Call) -> None:
            self.generic_visit(call)  # its arguments are called first
            if isinstance(call.func, ast.Name) and call.func.id in imported:
                called.append((imported[call.func.id], call.func.id))

    Calls().visit(body)
    return called


def going_back(called: list[tuple[str, str]]) -> list[str]:
    """Each call to a layer before the furthest one reached so far: where a job goes back."""
    furthest, back = 0, []
    for layer, name in called:
        step = ORDER.index(layer)
        if step < furthest:
            back.append(f"{name} ({layer}) after {ORDER[furthest]}")
        furthest = max(furthest, step)
    return back


def _source(module: ModuleType) -> str:
    return inspect.getsource(module)


def test_the_stage_reads_then_transforms_then_loads():
    called = layers_called(_source(stage_orders), "stage_orders")

    assert going_back(called) == []
    assert [layer for layer in ORDER if layer in {layer for layer, _ in called}] == list(ORDER)
    assert called[0] == ("read", "read_batch")


def test_the_merge_calls_the_load_layer_alone():
    called = layers_called(_source(merge_orders), "merge_orders")

    assert {layer for layer, _ in called} == {"load"}
    assert [name for _, name in called] == [
        "read_merge_input",
        "ensure_current_state_tables",
        "merge_batch",
        "record_merge",
    ]


def test_a_job_that_goes_back_to_a_layer_it_left_is_named():
    source = textwrap.dedent(
        """
        from spark_jobs.load import write_staging
        from spark_jobs.reading import read_batch
        from spark_jobs.transform import valid_rows as checked

        def job(spark):
            batch = read_batch(spark, [])
            write_staging(checked(batch), "t", "b")
            return checked(read_batch(spark, []))
        """
    )

    assert going_back(layers_called(source, "job")) == [
        "read_batch (read) after load",
        "checked (transform) after load",
    ]
