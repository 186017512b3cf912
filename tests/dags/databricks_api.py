"""What the Databricks REST API accepts, read from the Databricks SDK's own typed classes.

``refusals(JobsAPI.submit, body)`` lists what is wrong with a request body: a field the SDK's types do
not define, a required field missing, a value of the wrong type or outside an enum, or a field the SDK
documents as replaced ("Use ``environment_version`` instead"). The stand-in answers such a request 400,
as Databricks answers a malformed one.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import importlib
import inspect
import itertools
import sys
import types
import typing
from collections.abc import Callable
from typing import Any


@functools.cache
def _replaced_fields(cls: type) -> frozenset[str]:
    """Fields whose docstring in the SDK's source says they are deprecated or replaced."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    replaced = set()
    for field, doc in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            text = doc.value.value.lower()
            if "deprecated" in text or text.startswith("use ``"):
                replaced.add(field.target.id)
    return frozenset(replaced)


def _hints(owner: Any) -> dict[str, Any]:
    """Type hints of an SDK class or method; the SDK imports its sibling services (``compute`` ...) lazily."""
    names = dict(vars(sys.modules[owner.__module__]))
    for service in ("compute", "catalog", "files", "iam", "jobs", "workspace"):
        if not isinstance(names.get(service), types.ModuleType):
            names[service] = importlib.import_module(f"databricks.sdk.service.{service}")
    return typing.get_type_hints(owner, globalns=names, localns=names)  # a field named `compute` shadows it


def _check(hint: Any, value: Any, path: str, errors: list[str]) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        options = [arg for arg in args if arg is not type(None)]
        if value is None:
            return
        _check(options[0], value, path, errors)
    elif origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _check(args[0], item, f"{path}[{index}]", errors)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(args[1], item, f"{path}.{key}", errors)
    elif dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        required = {
            f.name
            for f in dataclasses.fields(hint)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        _check_fields(hint.__name__, required, _hints(hint), _replaced_fields(hint), value, path, errors)
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value not in {member.value for member in hint}:
            errors.append(f"{path}: {value!r} is not one of {sorted(member.value for member in hint)}")
    elif hint is int:
        # The API's JSON takes 64-bit integers as numbers or numeric strings (the provider sends strings).
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            errors.append(f"{path}: expected an integer, got {value!r}")
    elif hint is bool:
        if not isinstance(value, bool) and value not in ("true", "false"):
            errors.append(f"{path}: expected a boolean, got {value!r}")
    elif hint is str and not isinstance(value, str):
        errors.append(f"{path}: expected a string, got {value!r}")


def _check_fields(
    owner: str,
    required: set[str],
    hints: dict[str, Any],
    replaced: frozenset[str],
    value: dict,
    path: str,
    errors: list[str],
) -> None:
    for key in value:
        if key not in hints:
            errors.append(f"{path}.{key}: unknown field of {owner}")
        elif key in replaced:
            errors.append(f"{path}.{key}: {owner} documents it as deprecated or replaced")
        else:
            _check(hints[key], value[key], f"{path}.{key}", errors)
    for name in sorted(required - set(value)):
        errors.append(f"{path}.{name}: required by {owner}, missing")


def refusals(method: Callable, body: dict) -> list[str]:
    """What the SDK's signature of ``method`` (e.g. ``JobsAPI.submit``) refuses in a request body."""
    parameters = {name: p for name, p in inspect.signature(method).parameters.items() if name != "self"}
    required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty}
    hints = {name: hint for name, hint in _hints(method).items() if name in parameters}
    errors: list[str] = []
    _check_fields(method.__qualname__, required, hints, frozenset(), body, method.__name__, errors)
    return errors


# The access modes' current names, which the Clusters API takes only with ``kind`` (the SDK's ClusterSpec:
# "The following modes can only be used with `kind`").
_KIND_ONLY_MODES = {"DATA_SECURITY_MODE_AUTO", "DATA_SECURITY_MODE_DEDICATED", "DATA_SECURITY_MODE_STANDARD"}


def submit_cross_field_refusals(body: dict) -> list[str]:
    """What the Jobs API refuses across fields of a ``runs/submit`` body, beyond each field's type: a new
    cluster with an access mode's current name and no ``kind``; a serverless task (no cluster) with
    ``libraries``, which serverless takes from its environment's ``dependencies`` only."""
    errors = []
    for index, task in enumerate(body.get("tasks") or []):
        path = f"submit.tasks[{index}]"
        cluster = task.get("new_cluster") or {}
        if cluster.get("data_security_mode") in _KIND_ONLY_MODES and not cluster.get("kind"):
            errors.append(f"{path}.new_cluster: data_security_mode {cluster['data_security_mode']} needs kind")
        if not (task.get("new_cluster") or task.get("existing_cluster_id")) and task.get("libraries"):
            errors.append(f"{path}.libraries: serverless compute takes libraries from its environment only")
    return errors


def refusals_of(cls: type, body: dict, path: str = "") -> list[str]:
    """What the SDK's dataclass ``cls`` refuses in ``body``."""
    errors: list[str] = []
    _check(cls, body, path or cls.__name__, errors)
    return errors
