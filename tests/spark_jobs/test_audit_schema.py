"""An audit table written by an earlier version (without the re-delivery columns) keeps working."""

from __future__ import annotations

from pyspark.sql import types as T

from spark_jobs.load import AUDIT_FILE, AUDIT_SCHEMA
from tests.conftest import SEED_FILES
from tests.spark_jobs.helpers import load_batch, read

NEW_FILE_FIELDS = ("fingerprint", "redelivery_of")


def test_an_older_audit_table_gains_the_new_columns_and_the_next_batch_loads(spark, tables):
    old_file = T.StructType([f for f in AUDIT_FILE.fields if f.name not in NEW_FILE_FIELDS])
    old_schema = T.StructType(
        [
            T.StructField("files", T.ArrayType(old_file)) if f.name == "files" else f
            for f in AUDIT_SCHEMA.fields
            if f.name != "files_redelivered"
        ]
    )
    spark.createDataFrame([], old_schema).write.format("delta").save(tables.audit)

    staged, _ = load_batch(spark, tables, SEED_FILES[:1], "after-upgrade")

    audit = read(spark, tables.audit)
    # ADD COLUMNS appends: the columns are all there, the added ones last.
    assert sorted(audit.schema.names) == sorted(AUDIT_SCHEMA.names)
    assert audit.schema.names[-1] == "files_redelivered"
    assert sorted(audit.schema["files"].dataType.elementType.names) == sorted(AUDIT_FILE.names)
    [record] = audit.collect()
    assert (record["status"], record["files_redelivered"], record["rows_read"]) == ("merged", 0, staged["rows_read"])
    assert record["files"][0]["fingerprint"].startswith(f"{staged['rows_read']}:")
