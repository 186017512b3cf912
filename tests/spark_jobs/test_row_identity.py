"""A record's file and line number are its file's own, whatever Spark's packing of files into partitions.

Record ids come from ``monotonically_increasing_id``, which depends on how files are packed into
partitions. Where the compute keeps no rows (serverless refuses ``persist``), each action reads the
files again and may pack them otherwise (another parallelism after autoscaling, another size mix): the
staged and rejected rows must still be the same, line for line.
"""

from __future__ import annotations

from functools import reduce

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame

from spark_jobs import reading
from spark_jobs.stage_orders import stage_orders
from tests.spark_jobs.helpers import HEADER, read, write_csv

_RUN_COLUMNS = {"_ingested_at", "rejected_at", "_batch_id", "batch_id", "_superseded_events"}


def _files(directory):
    """Four small files; the same keys recur across them with equal times, so the tie-break (file, line) counts."""
    files = []
    for n in range(4):
        rows = [
            f"{n}{i},K{i % 5},2023-01-01,,Shipped,addr {n}-{i},2023-01-0{1 + i % 3} 10:00:00\n" for i in range(6 + n)
        ]
        rows.insert(2 + n, f"not-a-number,K9,2023-01-01,,Shipped,bad {n},2023-01-01 10:00:00\n")
        files.append(write_csv(directory, f"part_{n}.csv", HEADER + "".join(rows)))
    return files


def _stage(spark, root, files, batch="identity") -> tuple[list, list]:
    stage_orders(
        spark, [{"uri": str(f)} for f in files], batch, f"{root}/staging", f"{root}/rejects", f"{root}/audit", 0.5
    )

    def rows(table):
        frame = read(spark, table)
        kept = [c for c in frame.columns if c not in _RUN_COLUMNS]
        return sorted(tuple(row) for row in frame.select(*kept).collect())

    return rows(f"{root}/staging"), rows(f"{root}/rejects")


_REFUSED = []


def _refuse_persist(self, *args, **kwargs):
    _REFUSED.append(self)
    raise PySparkException(message="[NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported.")


def test_staged_and_rejected_rows_do_not_depend_on_partition_packing(spark, tmp_path, monkeypatch):
    files = _files(tmp_path / "in")
    staged, rejected = _stage(spark, tmp_path / "baseline", files)

    # The rejected rows sit on line 4 + n of file n (the header is line 1).
    assert [(row[0].rsplit("/", 1)[1], row[1]) for row in rejected] == [(f"part_{n}.csv", 4 + n) for n in range(4)]
    assert len(staged) == 5  # keys K0..K4

    assert _stage(spark, tmp_path / "reversed", list(reversed(files))) == (staged, rejected)

    # No rows kept, and the counting action packs the files otherwise than the writes do: there, each file
    # is read by a scan of its own, last file first, so every file starts a partition of its own.
    parse_batch, record_counts = reading.parse_batch, reading.record_counts
    batch_files = []

    def remember_files(spark, files):
        batch_files[:] = files
        return parse_batch(spark, files)

    def count_packed_otherwise(parsed: DataFrame) -> DataFrame:
        scans = [parse_batch(parsed.sparkSession, [item]) for item in reversed(batch_files)]
        return record_counts(reduce(DataFrame.unionByName, scans))

    with monkeypatch.context() as serverless:
        # The session's own DataFrame class: on PySpark 4 the classic DataFrame overrides the abstract one's persist.
        serverless.setattr(type(spark.range(1)), "persist", _refuse_persist)
        serverless.setattr(reading, "parse_batch", remember_files)
        serverless.setattr(reading, "record_counts", count_packed_otherwise)
        unkept = _stage(spark, tmp_path / "unkept-repacked", files)
    assert len(_REFUSED) == 1  # the stage really kept no rows
    assert unkept == (staged, rejected)


def test_the_line_number_is_the_records_position_in_its_file(spark, tmp_path):
    files = _files(tmp_path / "in")
    staged, _ = _stage(spark, tmp_path / "t", files)
    columns = read(spark, str(tmp_path / "t" / "staging")).columns
    kept = [c for c in columns if c not in _RUN_COLUMNS]
    source, line, address = kept.index("_source_file"), kept.index("_line_number"), kept.index("address")
    for row in staged:
        n, i = (int(part) for part in row[address].removeprefix("addr ").split("-"))
        assert row[source].endswith(f"part_{n}.csv")
        assert row[line] == 2 + i + (1 if i >= 2 + n else 0)  # the rejected row sits before it in the file
