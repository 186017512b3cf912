"""The stage job reading objects as GCS stores them, through Hadoop's GCS connector and the emulator."""

from __future__ import annotations

import gzip

from spark_jobs.stage_orders import stage_orders
from tests.conftest import SEED_FILES
from tests.dags.conftest import BUCKET
from tests.spark_jobs.helpers import read


def test_an_object_stored_gzip_encoded_is_rejected_whole_and_the_rest_loads(spark, tables, gcs):
    """``gsutil cp -Z`` stores a CSV gzip-compressed with ``Content-Encoding: gzip``: the connector refuses to
    read it, and that refusal is the file's, not the batch's."""
    seed = SEED_FILES[0].read_bytes()
    gcs.upload("input/plain.csv", seed)
    encoded = gcs.bucket.blob("input/encoded.csv")
    encoded.content_encoding = "gzip"
    encoded.upload_from_string(gzip.compress(seed), content_type="text/csv")
    inputs = [{"uri": f"gs://{BUCKET}/input/plain.csv"}, {"uri": f"gs://{BUCKET}/input/encoded.csv"}]

    metrics = stage_orders(spark, inputs, "encoded", tables.staging, tables.rejects, tables.audit, 1.0)

    outcomes = {f["uri"].rsplit("/", 1)[-1]: (f["status"], f["reason"]) for f in metrics["files"]}
    assert outcomes == {
        "plain.csv": ("loaded", None),
        "encoded.csv": (
            "rejected",
            "stored gzip-encoded (Content-Encoding: gzip), which the reader does not decompress: "
            "upload it uncompressed",
        ),
    }
    assert metrics["rows_read"] == seed.count(b"\n") - 1
    staged_sources = {r["_source_file"] for r in read(spark, tables.staging).collect()}
    assert staged_sources == {f"gs://{BUCKET}/input/plain.csv"}
