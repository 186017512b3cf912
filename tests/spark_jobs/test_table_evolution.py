"""Tables written before a nullable column joined the contract gain it, and the next batch loads into it."""

from __future__ import annotations

from pyspark.sql import types as T

from spark_jobs.load import AUDIT_SCHEMA, TABLE_PROPERTIES
from spark_jobs.schema import KEY, TARGET_SCHEMA
from spark_jobs.tables import create_table_if_absent
from tests.conftest import SEED_FILES, expected_latest, typed_business_row
from tests.spark_jobs.helpers import BUSINESS, load_batch, read


def _without(schema: T.StructType, name: str) -> T.StructType:
    return T.StructType([field for field in schema.fields if field.name != name])


def test_target_history_and_audit_gain_the_columns_their_schema_adds(spark, tables):
    # As an earlier version would have created them: no address in target and history, no re-delivery count.
    for identifier in (tables.target, tables.history):
        create_table_if_absent(spark, identifier, _without(TARGET_SCHEMA, "address"), TABLE_PROPERTIES, cluster_by=KEY)
    audit = _without(AUDIT_SCHEMA, "files_redelivered")
    create_table_if_absent(spark, tables.audit, audit, TABLE_PROPERTIES, partition_by="batch_id")

    staged, merged = load_batch(spark, tables, SEED_FILES, "after-the-column")

    target, history, audit = (read(spark, t) for t in (tables.target, tables.history, tables.audit))
    # ADD COLUMNS appends: every column is there, the added one last.
    assert [t.schema.names[-1] for t in (target, history, audit)] == ["address", "address", "files_redelivered"]
    assert sorted(target.schema.names) == sorted(TARGET_SCHEMA.names)
    assert sorted(audit.schema.names) == sorted(AUDIT_SCHEMA.names)
    expected = sorted(typed_business_row(row) for row in expected_latest().values())
    assert sorted(tuple(row) for row in target.select(*BUSINESS).collect()) == expected
    assert target.where("address IS NOT NULL").count() > 0
    assert merged["rows_inserted"] == len(expected) == 23
    [record] = audit.collect()
    assert (record["status"], record["files_redelivered"], record["rows_read"]) == ("merged", 0, staged["rows_read"])
