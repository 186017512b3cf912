"""The archive step against the GCS emulator: exactly the listed object versions move, and a retry finishes."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from order_tracking_load import archive, manifests, sensing, storage
from order_tracking_load.settings import load_settings

NAMES = ["input/a.csv", "input/b.csv", "input/c.csv", "input/d.csv"]
FOLDER = "archive/2026-11-26/10/batch-1/"


def _listing(gcs) -> dict:
    """The run's listing, as list_new_files records it: each object's name and generation."""
    files = []
    for name in NAMES:
        blob = gcs.bucket.get_blob(name)
        relative = name.removeprefix("input/")
        files.append(
            {
                "uri": f"gs://{gcs.bucket_name}/{name}",
                "name": name,
                "generation": blob.generation,
                "archive_uri": f"gs://{gcs.bucket_name}/{FOLDER}{relative}",
                "rejected_uri": f"gs://{gcs.bucket_name}/rejected/2026-11-26/batch-1/{relative}",
            }
        )
    return {
        "batch_id": "batch-1",
        "batch_date": "2026-11-26",
        "replay": False,
        "files": files,
    }


def _loaded(listing: dict) -> dict:
    files = [{"uri": item["uri"], "status": "loaded", "reason": None} for item in listing["files"]]
    return {"result": "succeeded", "batch_id": listing["batch_id"], "files": files}


@pytest.fixture
def listed(gcs, pipeline_env) -> dict:
    for name in NAMES:
        gcs.upload(name, f"{name} first version\n")
    return _listing(gcs)


def test_an_object_overwritten_after_listing_stays_in_input_for_the_next_run(gcs, listed):
    gcs.upload("input/b.csv", "input/b.csv second version\n")  # a new generation, not the one loaded

    moved = archive.archive_loaded_files(load_settings(), listed, _loaded(listed), {})

    assert moved["left_in_input"] == ["input/b.csv"]
    assert moved["archived"] == [f"{FOLDER}a.csv", f"{FOLDER}c.csv", f"{FOLDER}d.csv"]
    assert gcs.names("input/") == ["input/b.csv"]
    assert gcs.read("input/b.csv") == b"input/b.csv second version\n"
    assert gcs.read(f"{FOLDER}a.csv") == b"input/a.csv first version\n"


def test_an_archive_that_fails_part_way_is_finished_by_the_retry(gcs, listed, monkeypatch):
    real_move, calls = archive._move, []

    def gcs_fails_after_two_moves(*args: object, **kwargs: object) -> str:
        calls.append(args[1])
        if len(calls) == 3:
            raise AirflowException("injected: GCS refused the copy")
        return real_move(*args, **kwargs)

    with monkeypatch.context() as outage:
        outage.setattr(archive, "_move", gcs_fails_after_two_moves)
        with pytest.raises(AirflowException, match="injected"):
            archive.archive_loaded_files(load_settings(), listed, _loaded(listed), {})
    assert gcs.names("input/") == ["input/c.csv", "input/d.csv"]

    retried = archive.archive_loaded_files(load_settings(), listed, _loaded(listed), {})

    # The two moved by the first try are recognised at their destination; the retry moves the rest.
    assert retried["archived"] == [f"{FOLDER}{name}" for name in ("a.csv", "b.csv", "c.csv", "d.csv")]
    assert retried["already_gone"] == retried["left_in_input"] == []
    assert gcs.names("input/") == []
    assert gcs.names("archive/") == [f"{FOLDER}{name}" for name in ("a.csv", "b.csv", "c.csv", "d.csv")]
    assert [gcs.read(f"{FOLDER}{name}") for name in ("a.csv", "d.csv")] == [
        b"input/a.csv first version\n",
        b"input/d.csv first version\n",
    ]


def test_a_backfill_run_with_nothing_archived_in_its_interval_is_skipped_at_once(gcs, pipeline_env):
    import time
    from datetime import UTC, datetime

    from airflow.providers.common.compat.sdk import AirflowSkipException
    from airflow.sdk.api.datamodels._generated import DagRunType

    from tests.dags.test_gcs_files import FakeDagRun

    gcs.upload("archive/2026-11-20/10/earlier/a.csv", "order_num\n")  # another date's archive
    gcs.upload("input/new.csv", "order_num\n")  # input is never a backfill's source
    start, end = datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)
    context = {
        "run_id": "backfill__2026-11-21T00:00:00+00:00",
        "dag_run": FakeDagRun(DagRunType.BACKFILL, start, end, start, end),
        "params": {"replay_date": None},
    }
    sensor = sensing.NewFilesSensor(task_id="wait_for_new_files", settings=load_settings())

    began = time.monotonic()
    with pytest.raises(AirflowSkipException) as skipped:
        sensor.execute(context)

    assert time.monotonic() - began < 5  # not the sensor timeout
    assert str(skipped.value) == (
        "nothing to replay: no archived files in gs://order-tracking/archive/<date>/<hour>/ "
        "from 2026-11-21/01 to 2026-11-22/00"
    )


def test_an_archived_object_is_never_overwritten_by_a_new_file_of_its_name(gcs, listed):
    # An earlier load of the same run id archived another a.csv under the same destination.
    gcs.upload(f"{FOLDER}a.csv", "archived earlier, another file\n")

    moved = archive.archive_loaded_files(load_settings(), listed, _loaded(listed), {})

    assert moved["left_in_input"] == ["input/a.csv"]
    assert gcs.read(f"{FOLDER}a.csv") == b"archived earlier, another file\n"
    assert gcs.names("input/") == ["input/a.csv"]
    assert moved["archived"] == [f"{FOLDER}b.csv", f"{FOLDER}c.csv", f"{FOLDER}d.csv"]


def test_a_move_cut_between_its_copy_and_its_delete_is_finished_by_the_retry(gcs, listed, monkeypatch):
    """The worst moment to stop: b.csv is in both input/ and the archive. The retry must delete, not copy again."""
    bucket_of = storage.bucket

    def bucket_that_dies_deleting_b(settings):
        bucket = bucket_of(settings)
        delete = bucket.delete_blob

        def delete_blob(name, **kwargs):
            if name == "input/b.csv":
                raise AirflowException("injected: the worker died after copying input/b.csv")
            return delete(name, **kwargs)

        bucket.delete_blob = delete_blob
        return bucket

    with monkeypatch.context() as cut:
        cut.setattr(storage, "bucket", bucket_that_dies_deleting_b)
        with pytest.raises(AirflowException, match="injected"):
            archive.archive_loaded_files(load_settings(), listed, _loaded(listed), {})
    assert gcs.names("input/") == ["input/b.csv", "input/c.csv", "input/d.csv"]
    assert gcs.names("archive/") == [f"{FOLDER}a.csv", f"{FOLDER}b.csv"]
    copied_generation = gcs.bucket.get_blob(f"{FOLDER}b.csv").generation

    retried = archive.archive_loaded_files(load_settings(), listed, _loaded(listed), {})

    assert retried["archived"] == [f"{FOLDER}{name}" for name in ("a.csv", "b.csv", "c.csv", "d.csv")]
    assert retried["left_in_input"] == retried["already_gone"] == []
    assert gcs.names("input/") == []
    # The copy the cut try made is the one kept: the retry recognised it and only deleted the input object.
    assert gcs.bucket.get_blob(f"{FOLDER}b.csv").generation == copied_generation
    assert gcs.read(f"{FOLDER}b.csv") == b"input/b.csv first version\n"


def test_a_cleared_run_reuses_its_manifest_instead_of_listing_again(gcs, pipeline_env):
    """A run's manifest is its batch: run again under the same id, it loads what it listed, not what is new."""
    from datetime import UTC, datetime

    from airflow.sdk.api.datamodels._generated import DagRunType

    from tests.dags.test_gcs_files import FakeDagRun

    at = datetime(2026, 11, 26, 10, tzinfo=UTC)
    context = {
        "run_id": "scheduled__2026-11-26T10:00:00+00:00",
        "dag_run": FakeDagRun(DagRunType.SCHEDULED, at, at, at, at),
        "params": {"replay_date": None},
    }
    settings = load_settings()
    gcs.upload("input/a.csv", "first\n")
    first = manifests.list_and_write_manifest(settings, context)
    archive.archive_loaded_files(settings, first, _loaded(first), context)

    # Run again under its id with input/ empty, the sensor does not wait (defer) for new files...
    waited = sensing.NewFilesSensor(task_id="wait_for_new_files", settings=settings).execute(context)
    gcs.upload("input/new.csv", "arrived after the run\n")
    # ...and the listing loads the run's own batch, not what is in input/ now.
    again = manifests.list_and_write_manifest(settings, context)

    batch = "scheduled__2026-11-26T10:00:00+00:00"
    assert again == first
    assert [(f["uri"], f["archive_uri"], f["rejected_uri"]) for f in again["files"]] == [
        (
            "gs://order-tracking/input/a.csv",
            f"gs://order-tracking/archive/2026-11-26/10/{batch}/a.csv",
            f"gs://order-tracking/rejected/2026-11-26/{batch}/a.csv",
        )
    ]
    assert gcs.names("archive/") == [f"archive/2026-11-26/10/{batch}/a.csv"]
    assert waited == []
    assert gcs.names("input/") == ["input/new.csv"]  # left for the next run


def test_the_report_tells_a_file_replaced_after_listing_from_one_to_fix(pipeline_env):
    """A file fixed in input/ after its run listed it stays there for the next run: nothing to do. It was told
    to "fix each file and upload it again" with the files that do need it."""
    settings = load_settings()
    bucket = f"gs://{settings.bucket}"
    fixed = {
        "uri": f"{bucket}/input/fixed.csv",
        "status": "rejected",
        "reason": "changed since it was listed: 200 bytes then, 229 now",
        "rows": 3,
    }
    moved = {
        "archived": ["archive/2026-11-26/10/b/good.csv"],
        "rejected": ["rejected/2026-11-26/b/bad.csv"],
        "left_in_input": ["input/fixed.csv"],
        "already_gone": [],
        "files": 3,
        "quarantined": [
            {
                "uri": f"{bucket}/input/bad.csv",
                "status": "rejected",
                "reason": "missing required columns: status",
                "rows": 2,
            },
            fixed,
        ],
    }

    with pytest.raises(AirflowFailException) as failure:
        archive.report_quarantined_files(settings, moved)

    assert str(failure.value) == (
        "2 of 3 files quarantined; the other files loaded and are archived. "
        f"Quarantined: {bucket}/input/bad.csv (missing required columns: status, 2 rows). They are moved to "
        f"{bucket}/rejected/2026-11-26/b/bad.csv. Fix each file and upload it to the input folder again: the next "
        "run loads it. Replaced in the input folder after the run listed them, so not loaded: "
        f"{bucket}/input/fixed.csv (changed since it was listed: 200 bytes then, 229 now, 3 rows). "
        "They stay there, and the next run loads "
        f"the version there: nothing to do. Their rows are in {settings.tables.rejects}."
    )


def test_the_sensor_says_what_it_waits_for_before_and_while_it_waits(gcs, pipeline_env, caplog, capfd):
    """A deferred sensor showed only "trigger starting" for its whole wait."""
    import asyncio
    import logging
    import time
    from datetime import UTC, datetime

    from airflow.exceptions import TaskDeferred
    from airflow.sdk.api.datamodels._generated import DagRunType

    from tests.dags.test_gcs_files import FakeDagRun

    caplog.set_level(logging.INFO)
    start, end = datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 26, 1, tzinfo=UTC)
    context = {
        "run_id": "scheduled__2026-11-26T00:00:00+00:00",
        "dag_run": FakeDagRun(DagRunType.SCHEDULED, start, end, start, end),
        "params": {"replay_date": None},
    }
    sensor = sensing.NewFilesSensor(task_id="wait_for_new_files", settings=load_settings())

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    trigger = deferred.value.trigger
    trigger.deadline = time.time() + 1.5

    async def events():
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(events())

    assert event.payload["status"] == "timeout"
    assert (
        "no object under gs://order-tracking/input/ yet: waiting for one in the triggerer, for up to 3 s "
        "(listing every 1 s); a wait in vain skips the run"
    ) in caplog.text
    # The trigger logs through structlog, as in the triggerer: to the console here.
    assert "nothing under gs://order-tracking/input/ yet; looking every 1 s until 20" in "".join(capfd.readouterr())
