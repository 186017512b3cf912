"""PySpark jobs of the order-tracking incremental load: ``stage_orders`` and ``merge_orders``.

The same modules run on a Databricks cluster (as wheel entry points) and on local Spark with Delta.
"""
