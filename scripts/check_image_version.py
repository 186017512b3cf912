"""CI check: the Dockerfile's base image is the Airflow version that requirements.txt pins, and the Delta
jars that jars/pom.xml resolves (for `make jars` and the image) are those of the delta-spark and pyspark pins."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    base = re.search(r"^FROM apache/airflow:(\d+\.\d+\.\d+)\S*$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    if not pinned or not base:
        print("cannot find apache-airflow==X in requirements.txt or FROM apache/airflow:X in Dockerfile")
        return 1
    if pinned.group(1) != base.group(1):
        print(f"Dockerfile uses apache/airflow:{base.group(1)} but requirements.txt pins {pinned.group(1)}")
        return 1
    print(f"Dockerfile base image and requirements.txt agree on Airflow {pinned.group(1)}")
    return check_delta_jars()


def check_delta_jars() -> int:
    """jars/pom.xml's Delta artifact matches requirements.txt's delta-spark and pyspark (major.minor) pins."""
    requirements = (REPO / "requirements.txt").read_text()
    pom = (REPO / "jars" / "pom.xml").read_text()
    delta = re.search(r"^delta-spark==(\S+)$", requirements, re.MULTILINE)
    spark = re.search(r"^pyspark==(\d+\.\d+)\.", requirements, re.MULTILINE)
    jar_version = re.search(r"<delta.version>(.+?)</delta.version>", pom)
    artifact = re.search(r"<delta.artifact>(.+?)</delta.artifact>", pom)
    if not (delta and spark and jar_version and artifact):
        print("cannot find the delta-spark and pyspark pins, or <delta.version> and <delta.artifact> in jars/pom.xml")
        return 1
    expected = f"delta-spark_{spark.group(1)}_2.13"
    if (jar_version.group(1), artifact.group(1)) != (delta.group(1), expected):
        print(
            f"jars/pom.xml resolves {artifact.group(1)}:{jar_version.group(1)}, but requirements.txt needs "
            f"{expected}:{delta.group(1)}"
        )
        return 1
    print(f"jars/pom.xml and requirements.txt agree on {expected}:{delta.group(1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
