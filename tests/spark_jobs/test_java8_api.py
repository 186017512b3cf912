"""The jobs call no JDK API newer than Java 8: classic clusters before DBR 16 run JDK 8 by default.

Every JVM call the job code makes through py4j is recorded while it reads real files; each call that
lands on a JDK method is then written out as Java and compiled with ``javac --release 8``, which checks
it against Java 8's own API signatures (the JDK's ``ct.sym``).
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from py4j.java_gateway import JavaClass, JavaMember, JavaObject

from spark_jobs.extract import read_input_files
from tests.conftest import SEED_FILES

JOB_CODE = str(Path(__file__).resolve().parents[2] / "spark_jobs")
_PRIMITIVES = {
    int: ("int", "long"),
    bool: ("boolean",),
    float: ("double",),
    str: ("java.lang.String",),
    bytes: ("[B",),
    bytearray: ("[B",),
}


def javac() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home, "bin", "javac")) if home and Path(home, "bin", "javac").exists() else shutil.which("javac")
    if not found:
        pytest.fail("javac is needed to check the jobs' JVM calls against Java 8 (install a JDK 11+)")
    return found


def _called_from_job_code() -> bool:
    return any(frame.filename.startswith(JOB_CODE) for frame in inspect.stack()[2:12])


def record_jvm_calls(monkeypatch) -> list[tuple]:
    """Record (receiver, method name, args) of each py4j call made from ``spark_jobs/``."""
    calls: list[tuple] = []
    member_call, class_call = JavaMember.__call__, JavaClass.__call__

    def on_member(self, *args):
        if _called_from_job_code():
            # A static method's member has no container: its target is "z:<class name>".
            static = self.target_id[2:] if self.target_id.startswith("z:") else None
            calls.append((static or self.container, self.name, args))
        return member_call(self, *args)

    def on_class(self, *args):
        if _called_from_job_code():
            calls.append((self, "<init>", args))
        return class_call(self, *args)

    monkeypatch.setattr(JavaMember, "__call__", on_member)
    monkeypatch.setattr(JavaClass, "__call__", on_class)
    return calls


def _java_type(arg) -> str:
    return arg.getClass().getName() if isinstance(arg, JavaObject) else _PRIMITIVES[type(arg)][0]


def _accepts(spark, parameter, arg) -> bool:
    if isinstance(arg, JavaObject):
        return bool(parameter.isAssignableFrom(arg.getClass()))
    return parameter.getName() in _PRIMITIVES[type(arg)]


def _source_name(java_class) -> str:
    """A class as Java source names it: ``byte[]`` for ``[B``, ``a.B.C`` for ``a.B$C``."""
    return java_class.getCanonicalName()


def jdk_calls_as_java(spark, calls: list[tuple]) -> list[str]:
    """Each recorded call that resolves to a method or constructor of a ``java.*`` class, as a Java statement."""
    jvm = spark.sparkContext._jvm
    statements = []
    for receiver, name, args in calls:
        is_static = isinstance(receiver, str | JavaClass)
        fqn = receiver if isinstance(receiver, str) else getattr(receiver, "_fqn", None)
        runtime_class = jvm.java.lang.Class.forName(fqn) if is_static else receiver.getClass()
        candidates = runtime_class.getConstructors() if name == "<init>" else runtime_class.getMethods()
        matched = [
            member
            for member in candidates
            if (name == "<init>" or member.getName() == name)
            and len(member.getParameterTypes()) == len(args)
            and all(_accepts(spark, p, a) for p, a in zip(member.getParameterTypes(), args, strict=True))
        ]
        assert matched, f"no JVM member {name} of {runtime_class.getName()} takes {[_java_type(a) for a in args]}"
        for member in matched:
            owner = member.getDeclaringClass()
            if name != "<init>" and not is_public(jvm, owner):
                owner = public_declarer(jvm, runtime_class, member)
            if not owner.getName().startswith("java."):
                continue
            arguments = ", ".join(f"({_source_name(p)}) {_default(p)}" for p in member.getParameterTypes())
            if name == "<init>":
                statements.append(f"new {_source_name(owner)}({arguments});")
            elif is_static:
                statements.append(f"{_source_name(owner)}.{name}({arguments});")
            else:
                statements.append(f"(({_source_name(owner)}) null).{name}({arguments});")
    return statements


def is_public(jvm, java_class) -> bool:
    return bool(jvm.java.lang.reflect.Modifier.isPublic(java_class.getModifiers()))


def public_declarer(jvm, runtime_class, method):
    """The public class or interface through which code calls ``method`` of a non-public class."""
    seen, queue = set(), [runtime_class]
    while queue:
        current = queue.pop(0)
        if current is None or current.getName() in seen:
            continue
        seen.add(current.getName())
        if is_public(jvm, current):
            try:
                return current.getMethod(method.getName(), method.getParameterTypes()).getDeclaringClass()
            except Exception:  # noqa: BLE001 - py4j's NoSuchMethodException: this type does not declare it
                pass
        queue += [current.getSuperclass(), *current.getInterfaces()]
    raise AssertionError(f"no public type of {runtime_class.getName()} declares {method.getName()}")


def _default(parameter) -> str:
    return {"boolean": "false", "float": "0f", "double": "0d", "long": "0L"}.get(
        parameter.getName(), "0" if parameter.isPrimitive() else "null"
    )


def compiles_for_java_8(statements: list[str], folder: Path) -> subprocess.CompletedProcess:
    source = folder / "JobCalls.java"
    body = "\n        ".join(statements)
    source.write_text(f"class JobCalls {{\n    void calls() throws Exception {{\n        {body}\n    }}\n}}\n")
    return subprocess.run(
        [javac(), "--release", "8", "-nowarn", "-d", str(folder), str(source)], capture_output=True, text=True
    )


def test_every_jdk_call_of_the_stage_jobs_reader_exists_in_java_8(spark, monkeypatch, tmp_path):
    calls = record_jvm_calls(monkeypatch)
    files = read_input_files(spark, [{"uri": str(SEED_FILES[0])}])
    monkeypatch.undo()

    assert files[0].size == SEED_FILES[0].stat().st_size
    assert files[0].header.names  # the head was really read
    statements = jdk_calls_as_java(spark, calls)
    assert statements, "the reader made no JDK call: nothing was checked"
    compiled = compiles_for_java_8(statements, tmp_path)
    assert compiled.returncode == 0, f"not in Java 8's API:\n{compiled.stderr}"


def test_the_check_refuses_a_java_11_method(spark, tmp_path):
    # The check itself: InputStream.readNBytes(int) is Java 11, and javac --release 8 refuses it.
    compiled = compiles_for_java_8(["((java.io.InputStream) null).readNBytes(0);"], tmp_path)
    assert compiled.returncode != 0
    assert "readNBytes" in compiled.stderr
