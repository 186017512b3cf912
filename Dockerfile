# Airflow 3 with what the local Spark backend needs: Java 17, pyspark + delta-spark, Delta's jars and the
# shaded GCS connector (resolved from jars/pom.xml, as `make jars` does), and the spark_jobs package (the
# same code the Databricks wheel ships).
FROM maven:3.9-eclipse-temurin-17 AS spark-jars
COPY jars/pom.xml /build/pom.xml
RUN mvn --quiet --batch-mode -f /build/pom.xml dependency:copy-dependencies -DoutputDirectory=/spark-jars

FROM apache/airflow:3.3.2

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=spark-jars --chown=airflow:0 /spark-jars /opt/spark-jars

USER airflow
COPY --chown=airflow:0 requirements.txt /opt/order-tracking/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/order-tracking/requirements.txt
COPY --chown=airflow:0 pyproject.toml /opt/order-tracking/pyproject.toml
COPY --chown=airflow:0 spark_jobs /opt/order-tracking/spark_jobs
RUN pip install --no-cache-dir --no-deps /opt/order-tracking
