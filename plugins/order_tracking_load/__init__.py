"""Building blocks of the ``order_tracking_incremental_load`` DAG: settings, the Spark run spec, the
two Spark backends (Databricks and local), and the GCS steps (sense, list and manifest, archive)."""
