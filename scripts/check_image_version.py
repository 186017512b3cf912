"""CI check: the Dockerfile's base image is the Airflow version that requirements.txt pins."""

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
