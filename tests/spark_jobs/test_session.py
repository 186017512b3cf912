"""The local session: Delta from the jars ``make jars`` resolved (no Ivy), and the JVM's output kept aside."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

import pytest

from spark_jobs.session import SPARK_JARS, local_jars, process_output_to


def test_the_test_session_takes_delta_from_the_resolved_jars_not_ivy(spark):
    jars = spark.conf.get("spark.jars").split(",")
    assert spark.conf.get("spark.jars.packages", None) is None
    # Delta's jar at the delta-spark pin of this venv (4.4.0 on today's pins, 3.2.0 on the oldest runtime's).
    delta = f"-{importlib.metadata.version('delta-spark')}.jar"
    assert any(Path(jar).name.startswith("delta-spark_") and jar.endswith(delta) for jar in jars), jars
    assert any(Path(jar).name == "gcs-connector-4.0.0-shaded.jar" for jar in jars), jars


def test_jar_settings_name_jars_or_folders_of_jars(tmp_path, monkeypatch):
    folder = tmp_path / "jars"
    folder.mkdir()
    for name in ("b.jar", "a.jar", "notes.txt"):
        (folder / name).write_text("")
    monkeypatch.setenv(SPARK_JARS.env, f"{folder},/elsewhere/c.jar")
    assert local_jars() == [str(folder / "a.jar"), str(folder / "b.jar"), "/elsewhere/c.jar"]


def test_a_process_started_meanwhile_writes_to_the_file_and_not_here(tmp_path, capfd):
    output = tmp_path / "logs" / "attempt=1.spark.log"
    with process_output_to(output):
        subprocess.run(["sh", "-c", "echo to-stdout; echo to-stderr >&2"], check=True)
    subprocess.run(["sh", "-c", "echo after"], check=True)
    assert output.read_text() == "to-stdout\nto-stderr\n"
    assert capfd.readouterr() == ("after\n", "")


def test_a_refused_setting_puts_back_those_set_before_it(spark, monkeypatch):
    from pyspark.errors import PySparkException
    from pyspark.sql.conf import RuntimeConfig

    from spark_jobs.session import spark_conf
    from tests.spark_jobs.helpers import refusing_options

    refused: list[str] = []
    monkeypatch.setattr(RuntimeConfig, "set", refusing_options({"spark.sql.shuffle.partitions"}, refused))
    before = spark.conf.get("spark.sql.shuffle.partitions")
    settings = {"spark.sql.shuffle.partitions": "7", "spark.sql.refused.here": "x"}
    with pytest.raises(PySparkException, match="CONFIG_NOT_AVAILABLE"), spark_conf(spark, settings):
        raise AssertionError("the block must not run")
    assert refused == ["spark.sql.refused.here"]
    assert spark.conf.get("spark.sql.shuffle.partitions") == before != "7"
