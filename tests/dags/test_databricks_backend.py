"""The real DAG with the real Databricks operators, talking to a loopback stand-in of the Jobs API.

The operator's protocol is the subject here, so the runs call the stub jobs (``tests.dags.stub_jobs``: the
real result line, no Spark); one test runs the real jobs through the stand-in, on the seed batch."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from order_tracking_load import layout
from order_tracking_load.run_spec import idempotency_token
from tests.conftest import SEED_FILES
from tests.dags.conftest import DAG_ID, run_dag, upload_seed
from tests.dags.databricks_stand_in import JobsApiStandIn
from tests.dags.stub_jobs import StubJobs
from tests.spark_jobs.helpers import HEADER

WHEEL = "/Volumes/main/order_tracking/artifacts/order_tracking_spark_jobs-0.1.0-py3-none-any.whl"
# docs/OPERATIONS.md's new_cluster example: DBR 15.4 LTS, Unity Catalog through the dedicated (single-user) access mode.
NEW_CLUSTER = {
    "spark_version": "15.4.x-scala2.12",
    "node_type_id": "n2-highmem-4",
    "num_workers": 1,
    "kind": "CLASSIC_PREVIEW",
    "data_security_mode": "DATA_SECURITY_MODE_DEDICATED",
}


def _wired(stand_in: JobsApiStandIn, monkeypatch: pytest.MonkeyPatch, connection: str | None = None) -> str:
    """Wire the stand-in in as ``databricks_default``, its tables catalog names in a new schema's name."""
    schema = f"spark_catalog.order_tracking_{uuid.uuid4().hex[:8]}"
    for name, value in stand_in.settings(schema, connection).items():
        monkeypatch.setenv(name, value)
    stand_in.schema = schema
    return schema


@pytest.fixture
def stubs() -> StubJobs:
    return StubJobs()


@pytest.fixture
def databricks(airflow_db, pipeline_env, monkeypatch, stubs):
    """The stand-in, its runs calling the stub jobs."""
    with JobsApiStandIn(jobs=stubs.entry_points) as stand_in:
        _wired(stand_in, monkeypatch)
        yield stand_in


def _loaded_once(stubs: StubJobs, rows: int = 94) -> None:
    """One batch merged, of the seed files' rows (a job run twice would have merged two, or failed)."""
    (merged,) = stubs.merged()
    assert (merged.rows_read, merged.rows_inserted, len(merged.files)) == (rows, rows, len(SEED_FILES))


def test_the_real_jobs_load_the_seed_batch_as_databricks_runs(spark, gcs, airflow_db, pipeline_env, monkeypatch):
    with JobsApiStandIn() as databricks:
        schema = _wired(databricks, monkeypatch)
        spark.sql(f"CREATE SCHEMA {schema}")
        upload_seed(gcs)

        outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert [(run["task_key"], run["end"]) for run in databricks.runs.values()] == [
        ("stage_orders", "SUCCESS"),
        ("merge_orders", "SUCCESS"),
    ]
    assert spark.table(f"{schema}.orders").count() == 23
    assert spark.table(f"{schema}.orders_staging").count() == 23
    assert len(gcs.names("archive/")) == len(SEED_FILES)
    assert gcs.names("input/") == []


@pytest.mark.parametrize(("compute", "cluster_starts"), [("serverless", 0), ("new_cluster", 2)])
def test_stage_and_merge_run_as_databricks_runs(gcs, databricks, stubs, monkeypatch, compute, cluster_starts):
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_COMPUTE", compute)
    monkeypatch.setenv("ORDER_TRACKING_DATABRICKS_NEW_CLUSTER", json.dumps(NEW_CLUSTER))
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    batch = layout.batch_key(outcome.run_id)
    stage, merge = databricks.submitted("stage_orders"), databricks.submitted("merge_orders")
    assert len(stage) == len(merge) == 1
    stage_task, merge_task = stage[0]["tasks"][0], merge[0]["tasks"][0]
    assert stage_task["python_wheel_task"] == {
        "package_name": "order_tracking_spark_jobs",
        "entry_point": "stage-orders",
        "named_parameters": {
            "manifest": f"gs://order-tracking/manifests/{batch}.json",
            "batch-id": batch,
            "staging-table": f"{databricks.schema}.orders_staging",
            "rejects-table": f"{databricks.schema}.orders_rejects",
            "audit-table": f"{databricks.schema}.orders_load_audit",
            "max-reject-fraction": "0.1",
        },
    }
    assert merge_task["python_wheel_task"]["entry_point"] == "merge-orders"
    assert merge_task["python_wheel_task"]["named_parameters"]["target-table"] == f"{databricks.schema}.orders"
    for job, payload in (("stage_orders", stage[0]), ("merge_orders", merge[0])):
        assert payload["idempotency_token"] == idempotency_token("order-tracking", DAG_ID, outcome.run_id, job, 0, 0)
    if compute == "serverless":
        assert stage[0]["environments"] == [
            {"environment_key": "order_tracking_jobs", "spec": {"environment_version": "2", "dependencies": [WHEEL]}}
        ]
    else:
        assert stage_task["libraries"] == [{"whl": WHEEL}]
    assert (
        sum("new_cluster" in task for payload in databricks.submissions for task in payload["tasks"]) == cluster_starts
    )

    # Every body sent passed the SDK's types (none was refused), and no run outlives its Airflow task.
    assert databricks.refused == []
    assert {payload["timeout_seconds"] for payload in databricks.submissions} == {str(120 * 60)}
    _loaded_once(stubs)
    assert len(gcs.names("archive/")) == len(SEED_FILES)
    assert gcs.names("input/") == []


@pytest.mark.parametrize("end_state", ["FAILED", "CANCELED", "INTERNAL_ERROR"])
def test_a_run_that_fails_on_every_try_fails_the_task_and_archives_nothing(gcs, databricks, monkeypatch, end_state):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "1")
    databricks.script["stage_orders"] = [end_state, end_state]
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "failed"
    assert outcome.tasks["stage_orders"] == "failed"
    assert outcome.tasks["archive_loaded_files"] == "upstream_failed"
    # The retry saw the first run's terminal state and submitted a fresh run, with a new token.
    tokens = [payload["idempotency_token"] for payload in databricks.submitted("stage_orders")]
    assert tokens == [idempotency_token("order-tracking", DAG_ID, outcome.run_id, "stage_orders", 0, n) for n in (0, 1)]
    # A run whose code failed without a result line is read through the audit record before a retry: it holds
    # none of this run, so the task is retried. A cancelled run or lost compute says nothing of the batch.
    reads = ["batch_report"] if end_state == "FAILED" else []
    assert [run["task_key"] for run in databricks.runs.values()] == 2 * ["stage_orders", *reads]
    assert databricks.submitted("merge_orders") == []
    assert gcs.names("input/") == [f"input/{path.name}" for path in SEED_FILES]
    assert gcs.names("archive/") == gcs.names("rejected/") == []


def test_a_retry_after_a_failed_run_submits_a_fresh_run_that_loads(gcs, databricks, stubs, monkeypatch):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "1")
    databricks.script["stage_orders"] = ["FAILED", "SUCCESS"]
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert [run["end"] for run in databricks.runs.values()] == ["FAILED", "FAILED", "SUCCESS", "SUCCESS"]
    keys = ["stage_orders", "batch_report", "stage_orders", "merge_orders"]  # the report found no record: retried
    assert [run["task_key"] for run in databricks.runs.values()] == keys
    assert len({payload["idempotency_token"] for payload in databricks.submitted("stage_orders")}) == 2
    _loaded_once(stubs)
    assert len(gcs.names("archive/")) == len(SEED_FILES)


def test_a_retry_re_attaches_to_a_run_still_going(gcs, databricks, stubs, monkeypatch, capfd):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "1")
    # The first try loses the Jobs API (503 on every runs/get it makes) while the run goes on.
    databricks.script["merge_orders"] = ["UNREACHABLE"]
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert len(databricks.submitted("merge_orders")) == 1
    assert [run["task_key"] for run in databricks.runs.values()] == ["stage_orders", "merge_orders"]
    out, err = capfd.readouterr()
    assert "API requests to Databricks failed 3 times" in out + err  # the first try failed
    assert "re-attaching to Databricks run 2 of an earlier try (RUNNING)" in out + err
    _loaded_once(stubs)


def test_in_a_task_group_the_task_reads_its_runs_output_by_the_specs_task_key(databricks):
    """The task id doubled as the run's task key: in a TaskGroup (``load.stage_orders``) the output lookup
    fell back to the parent run, which Databricks answers 400 for."""
    import pendulum
    from airflow.sdk import DAG, TaskGroup

    from order_tracking_load.settings import load_settings
    from order_tracking_load.spark_backends import JobResultFailed, spark_job

    databricks.script["stage_orders"] = ["RESULT_FAILED"]
    with DAG("grouped", start_date=pendulum.datetime(2026, 1, 1), schedule=None), TaskGroup("load"):
        stage = spark_job("stage_orders", {"manifest": "gs://b/m.json", "batch-id": "b1"}, load_settings())
    run_id = stage._hook.submit_run(stage.json)
    stage._hook.get_run(run_id)  # the stand-in's run is running at its first look, over at the next

    with pytest.raises(JobResultFailed, match=r"the job reports result 'failed': injected: the job reports a failure"):
        stage._finish(run_id, {})

    assert (stage.task_id, stage.task_key) == ("load.stage_orders", "stage_orders")


def test_a_run_that_succeeds_with_a_failed_job_result_fails_the_task(gcs, databricks, monkeypatch):
    databricks.script["stage_orders"] = ["RESULT_FAILED"]
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "failed"
    assert outcome.tasks["stage_orders"] == "failed"
    assert outcome.tasks["merge_orders"] == "upstream_failed"
    assert [run["end"] for run in databricks.runs.values()] == ["SUCCESS"]
    assert gcs.names("archive/") == []


# A refusal as the stage words one (``outcomes.reject_limit_error``, whose words tests/spark_jobs prove).
REFUSAL = (
    "1 of 1 rows rejected (100.0%), above the limit of 10.0%, and no file of it loads. "
    "Most rows rejected: gs://order-tracking/input/bad.csv (1 of 1)."
)


def test_a_failure_a_retry_cannot_change_fails_the_task_at_once_with_the_jobs_own_error(
    gcs, databricks, stubs, monkeypatch, capfd
):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "2")
    stubs.refuse["stage_orders"] = REFUSAL
    gcs.upload("input/bad.csv", HEADER + "1,,2023-01-01,,In Transit,x,2023-01-01 10:00:00\n")

    outcome = run_dag()

    assert (outcome.tasks["stage_orders"], outcome.tries["stage_orders"]) == ("failed", 1)
    assert [run["end"] for run in databricks.runs.values()] == ["FAILED"]
    out, err = capfd.readouterr()  # where Airflow writes the task's failure
    assert f"stage_orders failed, and a retry would fail the same way (not retried): Databricks run 1: {REFUSAL}" in (
        out + err
    )
    assert stubs.ran == ["stage_orders"]
    assert gcs.names("input/") == ["input/bad.csv"]


def test_a_final_failure_is_final_though_the_runs_logs_come_back_empty(gcs, databricks, stubs, monkeypatch, capfd):
    """The job's exit carries its result line, so the run's error says what the empty logs would have: it was
    retried, with fresh runs and backoff, though a retry would fail the same way."""
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "2")
    stubs.refuse["stage_orders"] = REFUSAL
    databricks.script["stage_orders"] = ["EMPTY_LOGS"]
    gcs.upload("input/bad.csv", HEADER + "1,,2023-01-01,,In Transit,x,2023-01-01 10:00:00\n")

    outcome = run_dag()

    assert (outcome.tasks["stage_orders"], outcome.tries["stage_orders"]) == ("failed", 1)
    assert [(run["end"], run["logs"]) for run in databricks.runs.values()] == [("FAILED", "")]
    out, err = capfd.readouterr()
    assert f"stage_orders failed, and a retry would fail the same way (not retried): Databricks run 1: {REFUSAL}" in (
        out + err
    )


def _newer(line: dict) -> dict:
    """A wheel deployed ahead of the plugin: a line version 2, a new figure, a new field on each file."""
    return {**line, "version": 2, "rows_quarantined": 0, "files": [{**f, "checksum": "c"} for f in line["files"]]}


def _older(line: dict) -> dict:
    """A wheel rolled back behind the plugin: no line version, and a figure it did not produce yet."""
    return {key: value for key, value in line.items() if key not in ("version", "history_rows_inserted")}


def test_a_run_that_left_no_result_at_all_is_final_when_its_audit_record_says_the_batch_was_refused(
    gcs, databricks, stubs, monkeypatch, capfd
):
    """Neither the logs nor the run's error hold the result line: the task reads the audit record this run
    wrote (a reject-limit refusal: final) before it retries. It retried, with fresh runs and backoff."""
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "2")
    stubs.refuse["stage_orders"] = REFUSAL
    databricks.script["stage_orders"] = ["NO_OUTPUT"]
    gcs.upload("input/bad.csv", HEADER + "1,,2023-01-01,,In Transit,x,2023-01-01 10:00:00\n")

    outcome = run_dag()

    assert (outcome.tasks["stage_orders"], outcome.tries["stage_orders"]) == ("failed", 1)
    runs = [(run["task_key"], run["end"]) for run in databricks.runs.values()]
    assert runs == [("stage_orders", "FAILED"), ("batch_report", "FAILED")]  # the report's refusal is its answer
    (report,) = databricks.submitted("batch_report")
    since = report["tasks"][0]["python_wheel_task"]["named_parameters"]["since"]
    assert since.endswith("+00:00")
    out, err = capfd.readouterr()
    assert "stage_orders failed, and a retry would fail the same way (not retried): Databricks run 1 left no " in (
        out + err
    )
    assert f"the audit record says 'stage_failed', so stage_orders did not succeed: {REFUSAL}" in out + err


def test_a_newer_and_an_older_wheel_run_under_todays_plugin(gcs, databricks, stubs, caplog):
    """A rolling upgrade meets both: the plugin reads the fields it knows. A field it did not know failed every
    task whose run succeeded, on every retry."""
    databricks.versions.update(stage_orders=_newer, merge_orders=_older)
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert [run["end"] for run in databricks.runs.values()] == ["SUCCESS", "SUCCESS"]
    assert len(gcs.names("archive/")) == len(SEED_FILES)
    _loaded_once(stubs)
    assert (
        "JobMetrics: ignoring field rows_quarantined, written by another version of the jobs or the plugin "
        "(line version 2; this one reads version 1)"
    ) in caplog.text


def test_a_rate_limited_submit_is_retried_into_one_run(gcs, databricks, stubs):
    databricks.throttle_submits = 1
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert databricks.throttled == 1
    assert len(databricks.submitted("stage_orders")) == 1
    assert [run["task_key"] for run in databricks.runs.values()] == ["stage_orders", "merge_orders"]
    _loaded_once(stubs)


def test_killing_the_task_cancels_its_databricks_run(databricks):
    from order_tracking_load.settings import load_settings
    from order_tracking_load.spark_backends import DatabricksSparkJobOperator

    operator = DatabricksSparkJobOperator(task_id="merge_orders", run_spec={"tasks": []}, settings=load_settings())
    operator.run_id = 42

    operator.on_kill()

    assert databricks.cancelled == [42]


def test_cancelling_a_deferred_task_cancels_the_run_it_submitted(databricks):
    """The task defers while its run goes on; the trigger it hands the triggerer is what a user's mark-failed or
    clear kills (``BaseTrigger.on_kill``), and it must cancel that very run."""
    import asyncio
    import types

    from airflow.providers.common.compat.sdk import TaskDeferred

    from order_tracking_load.run_spec import stage_parameters
    from order_tracking_load.settings import load_settings
    from order_tracking_load.spark_backends import spark_job

    databricks.script["stage_orders"] = ["LONG"]  # RUNNING until cancelled: the task defers
    settings = load_settings()
    listing = {"manifest_uri": "gs://order-tracking/manifests/manual__cancel.json", "batch_id": "manual__cancel"}
    operator = spark_job("stage_orders", stage_parameters(settings, listing), settings)
    dag_run = types.SimpleNamespace(run_id="manual__cancel", clear_number=0)
    pushed: dict = {}
    ti = types.SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"dag_run": dag_run, "run_id": "manual__cancel", "params": {}, "ti": ti})
    (submitted_run,) = databricks.runs

    asyncio.run(deferred.value.trigger.on_kill())

    assert databricks.cancelled == [submitted_run] == [pushed["run_id"]]
    assert databricks._state(databricks.runs[submitted_run])["result_state"] == "CANCELED"


FAKE_TOKEN = "dapi0f1e2d3c4b5a69788796a5b4c3d2e1f0-FAKE"
FAKE_KEY_MATERIAL = "FAKE-GCP-PRIVATE-KEY-MATERIAL-7f3a9c"


def test_no_credential_reaches_logs_xcom_or_rendered_fields(gcs, databricks, monkeypatch, capfd, caplog):
    # The emulator needs ``is_anonymous``, which the Google hook refuses beside ``keyfile_dict``; the fake key
    # rides in the connection's password instead, so it is loaded with the connection on every GCS call.
    private_key = f"-----BEGIN PRIVATE KEY-----\n{FAKE_KEY_MATERIAL}\n-----END PRIVATE KEY-----\n"
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", databricks.connection_json(token=FAKE_TOKEN))
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        json.dumps(
            {
                "conn_type": "google_cloud_platform",
                "password": private_key,
                "extra": {"is_anonymous": True, "project": "test"},
            }
        ),
    )
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert databricks.authorizations == {f"Bearer {FAKE_TOKEN}"}  # the token was used, over the wire only
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = session.query(XComModel).filter_by(dag_id=DAG_ID, run_id=outcome.run_id).all()
        rendered = session.query(RenderedTaskInstanceFields).filter_by(dag_id=DAG_ID, run_id=outcome.run_id).all()
        searched = {
            "xcom": [json.dumps(x.value, default=str) for x in xcoms],
            "rendered fields": [json.dumps(r.rendered_fields, default=str) for r in rendered],
        }
    out, err = capfd.readouterr()
    log_files = [p for p in Path(os.environ["AIRFLOW_HOME"], "logs").rglob("*") if p.is_file()]
    searched["task output and logs"] = [out, err, caplog.text, *(p.read_text(errors="replace") for p in log_files)]
    assert {"list_new_files", "stage_orders", "merge_orders"} <= {x.task_id for x in xcoms}
    assert {r.task_id for r in rendered} >= {"stage_orders", "merge_orders"}
    assert "manifest" in " ".join(searched["rendered fields"])  # the rendered run specs were searched
    assert "merge_orders loaded batch" in caplog.text + out + err  # the load summary was searched
    for secret in (FAKE_TOKEN, FAKE_KEY_MATERIAL):
        leaks = {where: sum(secret in text for text in texts) for where, texts in searched.items()}
        assert leaks == dict.fromkeys(searched, 0), secret


def test_an_unreadable_run_is_never_submitted_twice_and_only_a_run_that_does_not_exist_is(
    gcs, databricks, stubs, monkeypatch
):
    monkeypatch.setenv("ORDER_TRACKING_RETRIES", "2")
    # Stage: runs/get answers 503 for 6 calls while the run goes on. The first try fails after the hook's
    # 3; the second try cannot read it either (3 more): the run may still be going, so that try fails
    # without submitting; the third re-attaches. Merge: after the first try's 3 answers of 503, the run
    # does not exist (the API's 400 "Run … does not exist"): the second try submits a fresh run.
    databricks.unreachable_gets = 6
    databricks.script["stage_orders"] = ["UNREACHABLE"]
    databricks.script["merge_orders"] = ["GONE"]
    upload_seed(gcs)

    outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert [run["task_key"] for run in databricks.runs.values()] == ["stage_orders", "merge_orders", "merge_orders"]
    stage_tokens = {payload["idempotency_token"] for payload in databricks.submitted("stage_orders")}
    assert stage_tokens == {idempotency_token("order-tracking", DAG_ID, outcome.run_id, "stage_orders", 0, 0)}
    assert [status for run_id, status in databricks.get_answers if run_id == 1][:6] == [503] * 6
    assert (2, 400) in databricks.get_answers
    _loaded_once(stubs)
    assert len(gcs.names("archive/")) == len(SEED_FILES)


def test_a_run_whose_output_lost_its_figures_reports_them_from_the_audit_record(
    gcs, monkeypatch, airflow_db, pipeline_env, stubs, tmp_path
):
    # docs/OPERATIONS.md's OAuth service principal (client id and secret, "service_principal_oauth": true) over
    # HTTPS, OpenLineage's parent-job injection on, and a stage run whose runs/get-output has no logs.
    with JobsApiStandIn(tls=True, jobs=stubs.entry_points) as databricks:
        schema = _wired(databricks, monkeypatch, databricks.connection_json(service_principal_oauth=True))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", databricks.ca_file)
        monkeypatch.setenv("AIRFLOW__OPENLINEAGE__SPARK_INJECT_PARENT_JOB_INFO", "true")
        monkeypatch.setenv(
            "AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "file", "log_file_path": str(tmp_path / "ol.json")})
        )
        databricks.script["stage_orders"] = ["EMPTY_LOGS"]
        upload_seed(gcs)

        outcome = run_dag()

    assert outcome.state == "success", outcome.tasks
    assert databricks.refused == []
    # OAuth: every API call carried a token the token endpoint issued for the client id and secret.
    assert databricks.access_tokens
    assert databricks.authorizations == {f"Bearer {token}" for token in databricks.access_tokens}
    # OpenLineage's context reached both jobs' named parameters, and they ran.
    for job in ("stage_orders", "merge_orders"):
        (payload,) = databricks.submitted(job)
        context = json.loads(payload["tasks"][0]["python_wheel_task"]["named_parameters"]["OPENLINEAGE_CONTEXT"])
        assert context["parent"]["job"]["name"] == f"{DAG_ID}.{job}"
    # The stage's empty output: one batch_report run read the figures back, which the archive used.
    (report,) = databricks.submitted("batch_report")
    assert report["tasks"][0]["python_wheel_task"]["named_parameters"] == {
        "job": "stage_orders",
        "batch-id": layout.batch_key(outcome.run_id),
        "audit-table": f"{schema}.orders_load_audit",
    }
    assert [run["task_key"] for run in databricks.runs.values()] == ["stage_orders", "batch_report", "merge_orders"]
    _loaded_once(stubs)
    assert len(gcs.names("archive/")) == len(SEED_FILES)
