"""The DAG parses with no connections, network or Variables, and has the expected shape and policy."""

from __future__ import annotations

import copy
import itertools
import socket
from pathlib import Path

import pytest

from tests.dags.conftest import DAG_ID

TASKS = [
    "wait_for_new_files",
    "list_new_files",
    "stage_orders",
    "merge_orders",
    "archive_loaded_files",
    "report_quarantined_files",
]


WHEEL = "/Volumes/main/order_tracking/artifacts/order_tracking_spark_jobs-0.1.0+20261207.g1-py3-none-any.whl"


def _bare(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("ORDER_TRACKING_", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)


def test_without_a_wheel_the_dag_does_not_parse_and_says_to_deploy_one(monkeypatch):
    """The default wheel path named a file make deploy never writes: every run failed on Databricks."""
    from airflow.dag_processing.dagbag import DagBag

    _bare(monkeypatch)
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))

    (error,) = bag.import_errors.values()
    assert error.strip().endswith(
        "ValueError: ORDER_TRACKING_WHEEL_URI is required on the databricks backend: run make deploy, which "
        "uploads the jobs' wheel under a version of its own and prints the value to set"
    )


@pytest.fixture
def dag(monkeypatch: pytest.MonkeyPatch):
    """The DAG parsed in a bare environment: no ORDER_TRACKING_* settings but the wheel `make deploy` printed,
    no connections, no network."""
    _bare(monkeypatch)
    monkeypatch.setenv("ORDER_TRACKING_WHEEL_URI", WHEEL)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the DAG file touched the network while parsing")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Variable

    monkeypatch.setattr(Variable, "get", refuse)
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_flow_is_sense_list_stage_merge_archive(dag):
    assert sorted(dag.task_ids) == sorted(TASKS)
    for upstream, downstream in itertools.pairwise(TASKS):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # Archiving also reads the listing and the stage result, and runs only if every upstream succeeded.
    archive = dag.get_task("archive_loaded_files")
    # Its data edges: the listing (the manifest) and the merge's result (each file's outcome); the merge's
    # batch comes from the stage. Each other edge joins neighbours, so the graph reads as the chain.
    assert archive.upstream_task_ids == {"list_new_files", "merge_orders"}
    assert dag.get_task("merge_orders").upstream_task_ids == {"stage_orders"}
    assert archive.trigger_rule == "all_success"
    # The report reads the stage result and what the archive moved, and ends the run.
    report = dag.get_task("report_quarantined_files")
    assert report.upstream_task_ids == {"archive_loaded_files"}
    assert (report.trigger_rule, report.downstream_task_ids) == ("all_success", set())


def test_scheduling_policy(dag):
    from airflow.sdk import CronDataIntervalTimetable

    # Data intervals, not trigger times: a backfill run replays what was archived within its interval.
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 * * * *", "UTC")  # @hourly
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert set(dag.tags) >= {"order-tracking", "databricks"}
    assert dag.doc_md.strip().startswith("# Order-tracking incremental load")
    # The DAG list shows the description, the trigger form each param's title: both were empty or raw.
    assert dag.description == "Order-tracking CSVs from GCS into Delta tables: sense, list, stage, merge, archive"
    assert {name: param.schema.get("title") for name, param in dag.params.items()} == {
        "replay_date": "Replay date",
        "max_reject_fraction": "Reject limit (fraction of rows)",
    }
    for task in dag.tasks:
        assert task.retries == 3, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.execution_timeout.total_seconds() == 7200, task.task_id
    assert dict(dag.params)["max_reject_fraction"] == 0.1
    assert dict(dag.params)["replay_date"] is None


def test_a_reject_limit_outside_0_to_1_is_refused_with_a_message_not_clamped(dag):
    from airflow.sdk.definitions.param import ParamValidationError

    schema = dag.params.get_param("max_reject_fraction").schema
    # The trigger form's number field clamps to a top-level minimum and maximum on blur (10 became 1,
    # "accept everything"): the range is stated where only validation reads it.
    assert ("minimum" in schema, "maximum" in schema) == (False, False)
    assert "from 0 to 1" in dag.params.get_param("max_reject_fraction").description
    params = copy.deepcopy(dag.params)  # setting a value validates it, as a trigger's conf is
    params["max_reject_fraction"] = 0.7
    with pytest.raises(ParamValidationError, match="10 is greater than the maximum of 1"):
        params["max_reject_fraction"] = 10
    with pytest.raises(ParamValidationError, match=r"-0\.5 is less than the minimum of 0"):
        params["max_reject_fraction"] = -0.5


def test_default_backend_is_deferrable_databricks_with_the_wheel(dag):
    from order_tracking_load.spark_backends import DatabricksSparkJobOperator

    sensor = dag.get_task("wait_for_new_files")
    assert sensor.deferrable is True
    assert (sensor.bucket, sensor.prefix, sensor.timeout) == ("order-tracking", "input/", 3000)
    for job, entry_point in (("stage_orders", "stage-orders"), ("merge_orders", "merge-orders")):
        operator = dag.get_task(job)
        assert isinstance(operator, DatabricksSparkJobOperator)
        assert operator.deferrable is True
        assert operator.databricks_conn_id == "databricks_default"
        (task,) = operator.json["tasks"]
        assert task["python_wheel_task"]["entry_point"] == entry_point
        assert task["environment_key"] == operator.json["environments"][0]["environment_key"]
    merge = dag.get_task("merge_orders")
    # Through an alias: the run adds an event on the target's Asset only when it changed the target.
    assert [alias.name for alias in merge.outlets] == ["order_tracking_target_updates"]
    assert merge.target.uri == "databricks://databricks-workspace/main/order_tracking/orders"
    assert (
        merge.json["tasks"][0]["python_wheel_task"]["named_parameters"]["target-table"] == "main.order_tracking.orders"
    )


def test_the_spark_tasks_take_their_batch_through_visible_data_edges(dag):
    from airflow.sdk import XComArg

    expected = {
        "stage_orders": {"manifest": ("list_new_files", "manifest_uri"), "batch-id": ("list_new_files", "batch_id")},
        "merge_orders": {"batch-id": ("stage_orders", "batch_id")},  # the batch the stage staged
    }
    for job, fields in expected.items():
        parameters = dag.get_task(job).json["tasks"][0]["python_wheel_task"]["named_parameters"]
        edges = {name: value for name, value in parameters.items() if isinstance(value, XComArg)}
        assert {name: (arg.operator.task_id, arg.key) for name, arg in edges.items()} == fields
    source = (Path(__file__).resolve().parents[2] / "plugins" / "order_tracking_load" / "run_spec.py").read_text()
    assert "xcom_pull" not in source
