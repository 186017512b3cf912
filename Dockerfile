# Airflow 3 with what the local Spark backend needs: Java 17, pyspark + delta-spark, the shaded GCS
# connector, and the spark_jobs package (the same code the Databricks wheel ships).
FROM apache/airflow:3.3.2

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ADD --chown=airflow:0 --chmod=644 \
    https://repo1.maven.org/maven2/com/google/cloud/bigdataoss/gcs-connector/4.0.0/gcs-connector-4.0.0-shaded.jar \
    /opt/spark-jars/gcs-connector-4.0.0-shaded.jar

USER airflow
COPY --chown=airflow:0 requirements.txt /opt/order-tracking/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/order-tracking/requirements.txt
COPY --chown=airflow:0 pyproject.toml /opt/order-tracking/pyproject.toml
COPY --chown=airflow:0 spark_jobs /opt/order-tracking/spark_jobs
RUN pip install --no-cache-dir --no-deps /opt/order-tracking
