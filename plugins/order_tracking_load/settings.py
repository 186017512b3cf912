"""Per-environment settings, read from documented ``ORDER_TRACKING_*`` environment variables.

Credentials are never settings: they live in the Airflow connections named here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from spark_jobs.environment import Setting

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("databricks", "local")
COMPUTE_KINDS = ("serverless", "existing_cluster", "new_cluster")
# The support matrix (docs/OPERATIONS.md, "Supported runtimes"): the oldest Databricks runtime of a cluster,
# and the oldest serverless environment version (2: Python 3.11, Databricks Connect 15.4).
OLDEST_RUNTIME = (15, 4)
OLDEST_SERVERLESS_ENVIRONMENT = 2
# A cluster's access modes that reach Unity Catalog (the jobs' three-part table names); a cluster created
# through the API without one has no Unity Catalog access at all.
UNITY_CATALOG_ACCESS_MODES = (
    "DATA_SECURITY_MODE_AUTO",
    "DATA_SECURITY_MODE_DEDICATED",
    "DATA_SECURITY_MODE_STANDARD",
    "SINGLE_USER",
    "USER_ISOLATION",
)
# The access modes' current names, which the Clusters API takes only with ``"kind": "CLASSIC_PREVIEW"`` (its
# legacy names, SINGLE_USER and USER_ISOLATION, without).
KIND_ONLY_ACCESS_MODES = ("DATA_SECURITY_MODE_AUTO", "DATA_SECURITY_MODE_DEDICATED", "DATA_SECURITY_MODE_STANDARD")
CLASSIC_PREVIEW = "CLASSIC_PREVIEW"
# What a serverless environment's ``dependencies`` take for a wheel: a workspace file or a volume path, or a URL.
_SERVERLESS_WHEEL = re.compile(r"^(/Volumes/|/Workspace/|https?://)")


# Every knob the DAG reads, in the order docs/CONFIGURATION.md lists them (generated from this: make docs).
SETTINGS: tuple[Setting, ...] = (
    Setting("ORDER_TRACKING_BUCKET", "order-tracking", "GCS bucket that receives the CSV files"),
    Setting("ORDER_TRACKING_INPUT_PREFIX", "input/", "prefix where new CSV files land"),
    Setting(
        "ORDER_TRACKING_ARCHIVE_PREFIX",
        "archive/",
        "loaded files move to `<prefix><date>/<hour>/<run>/` (the date and hour in the run id, UTC)",
    ),
    Setting("ORDER_TRACKING_REJECTED_PREFIX", "rejected/", "files rejected whole move to `<prefix><date>/<run>/`"),
    Setting("ORDER_TRACKING_MANIFEST_PREFIX", "manifests/", "one JSON manifest per run: the exact objects loaded"),
    Setting(
        "ORDER_TRACKING_SCHEDULE",
        "@hourly",
        "cron or preset, in UTC; each run's data interval runs from the previous tick to its own, and a "
        "backfill run replays what was archived in it. `none`: manual runs only, and then no backfill "
        "(Airflow backfills only periodic schedules)",
    ),
    Setting(
        "ORDER_TRACKING_DEPLOYMENT",
        "order-tracking",
        "names this Airflow deployment in Databricks idempotency tokens; give each deployment sharing a "
        "workspace its own",
    ),
    Setting(
        "ORDER_TRACKING_SPARK_BACKEND", "databricks", "`databricks` submits the run spec; `local` runs it in the worker"
    ),
    Setting("ORDER_TRACKING_GCP_CONN_ID", "google_cloud_default", "Airflow connection for GCS"),
    Setting("ORDER_TRACKING_DATABRICKS_CONN_ID", "databricks_default", "Airflow connection for Databricks"),
    Setting(
        "ORDER_TRACKING_DATABRICKS_WORKSPACE",
        "databricks-workspace",
        "workspace host, or its URL as in the connection, used only to name the target's Airflow Asset",
    ),
    Setting("ORDER_TRACKING_DATABRICKS_COMPUTE", "serverless", "`serverless`, `existing_cluster` or `new_cluster`"),
    Setting("ORDER_TRACKING_DATABRICKS_CLUSTER_ID", "", "cluster id when compute is `existing_cluster`"),
    Setting(
        "ORDER_TRACKING_DATABRICKS_NEW_CLUSTER",
        "",
        "JSON cluster spec when compute is `new_cluster`: DBR 15.4 or later, with a Unity Catalog "
        "`data_security_mode` (see [Operations](OPERATIONS.md#delivery-to-databricks))",
    ),
    Setting(
        "ORDER_TRACKING_SERVERLESS_ENVIRONMENT_VERSION",
        "2",
        "serverless environment version of the runs: 2 or later (Python 3.11)",
    ),
    Setting(
        "ORDER_TRACKING_WHEEL_URI",
        "",
        "where Databricks finds the jobs' wheel: the path `make deploy` prints (required on the databricks "
        "backend: a default would name a file no deploy writes); `gs://` only on clusters",
    ),
    Setting(
        "ORDER_TRACKING_TABLE_NAMESPACE", "main.order_tracking", "`catalog.schema` of the five tables (databricks)"
    ),
    Setting(
        "ORDER_TRACKING_LOCAL_TABLE_ROOT",
        str(REPO_ROOT / ".local" / "tables"),
        "folder of the five tables (local backend)",
        documented_default="`<repo>/.local/tables`",
    ),
    Setting(
        "ORDER_TRACKING_MAX_REJECT_FRACTION", "0.1", "stage fails when a larger share of a batch's rows is rejected"
    ),
    Setting("ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS", "3000", "how long the sensor waits before the run is skipped"),
    Setting("ORDER_TRACKING_SENSOR_POKE_SECONDS", "60", "how often the deferred sensor lists the input prefix"),
    Setting(
        "ORDER_TRACKING_GCS_RETRY_SECONDS",
        "120",
        "how long one GCS call retries, with backoff, before the task fails (and Airflow retries it)",
    ),
    Setting(
        "ORDER_TRACKING_DATABRICKS_POLL_SECONDS",
        "30",
        "how often a deferred Databricks task asks for its run's state",
    ),
    Setting("ORDER_TRACKING_RETRIES", "3", "task retries, with exponential backoff"),
    Setting("ORDER_TRACKING_RETRY_DELAY_SECONDS", "60", "first retry delay (backoff doubles it, up to 30 min)"),
    Setting("ORDER_TRACKING_TASK_TIMEOUT_MINUTES", "120", "execution timeout of each task"),
)
# What make deploy reads besides the table namespace above (scripts/deploy.py).
DEPLOY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ORDER_TRACKING_DEPLOY_VOLUME", "artifacts", "the Unity Catalog volume, in the table namespace, of the wheel"
    ),
)
_BY_ENV = {each.env: each for each in (*SETTINGS, *DEPLOY_SETTINGS)}

TABLE_NAMES = {
    "staging": "orders_staging",
    "rejects": "orders_rejects",
    "target": "orders",
    "history": "orders_history",
    "audit": "orders_load_audit",
}


def setting(env: str) -> Setting:
    """The registered setting of that variable (a KeyError names an unregistered one)."""
    return _BY_ENV[env]


def _value(env: str) -> str:
    return setting(env).read()


@dataclass(frozen=True)
class Tables:
    """The five tables, as the jobs' ``T`` identifiers (catalog names or paths)."""

    staging: str
    rejects: str
    target: str
    history: str
    audit: str


@dataclass(frozen=True)
class LoadSettings:
    """Everything the DAG needs to know about its environment."""

    bucket: str
    input_prefix: str
    archive_prefix: str
    rejected_prefix: str
    manifest_prefix: str
    schedule: str | None
    backend: str
    gcp_conn_id: str
    databricks_conn_id: str
    databricks_workspace: str
    deployment: str
    compute: str
    cluster_id: str
    new_cluster: dict
    serverless_environment: str
    wheel_uri: str
    tables: Tables
    max_reject_fraction: float
    sensor_timeout: timedelta
    poke_interval: timedelta
    gcs_retry: timedelta
    databricks_poll: timedelta
    retries: int
    retry_delay: timedelta
    task_timeout: timedelta


def load_settings() -> LoadSettings:
    """Read the settings from the environment, failing early and clearly on a bad value."""
    backend = _value("ORDER_TRACKING_SPARK_BACKEND")
    if backend not in BACKENDS:
        raise ValueError(f"ORDER_TRACKING_SPARK_BACKEND must be one of {BACKENDS}, not {backend!r}")
    compute = _value("ORDER_TRACKING_DATABRICKS_COMPUTE")
    if compute not in COMPUTE_KINDS:
        raise ValueError(f"ORDER_TRACKING_DATABRICKS_COMPUTE must be one of {COMPUTE_KINDS}, not {compute!r}")
    new_cluster_text = _value("ORDER_TRACKING_DATABRICKS_NEW_CLUSTER")
    new_cluster = json.loads(new_cluster_text) if new_cluster_text else {}
    environment = _value("ORDER_TRACKING_SERVERLESS_ENVIRONMENT_VERSION")
    if backend == "databricks":
        _check_compute(compute, _value("ORDER_TRACKING_DATABRICKS_CLUSTER_ID"), new_cluster, environment)
        _check_wheel_uri(compute, _value("ORDER_TRACKING_WHEEL_URI"))

    if backend == "local":
        root = _value("ORDER_TRACKING_LOCAL_TABLE_ROOT").rstrip("/")
        tables = Tables(**{role: f"{root}/{name}" for role, name in TABLE_NAMES.items()})
    else:
        namespace = _value("ORDER_TRACKING_TABLE_NAMESPACE")
        if namespace.count(".") != 1:
            raise ValueError(f"ORDER_TRACKING_TABLE_NAMESPACE must be catalog.schema, not {namespace!r}")
        tables = Tables(**{role: f"{namespace}.{name}" for role, name in TABLE_NAMES.items()})
    schedule = _value("ORDER_TRACKING_SCHEDULE")
    return LoadSettings(
        bucket=_value("ORDER_TRACKING_BUCKET"),
        input_prefix=_prefix(_value("ORDER_TRACKING_INPUT_PREFIX")),
        archive_prefix=_prefix(_value("ORDER_TRACKING_ARCHIVE_PREFIX")),
        rejected_prefix=_prefix(_value("ORDER_TRACKING_REJECTED_PREFIX")),
        manifest_prefix=_prefix(_value("ORDER_TRACKING_MANIFEST_PREFIX")),
        schedule=None if schedule.lower() in ("", "none") else schedule,
        backend=backend,
        gcp_conn_id=_value("ORDER_TRACKING_GCP_CONN_ID"),
        databricks_conn_id=_value("ORDER_TRACKING_DATABRICKS_CONN_ID"),
        databricks_workspace=workspace_host(_value("ORDER_TRACKING_DATABRICKS_WORKSPACE")),
        deployment=_value("ORDER_TRACKING_DEPLOYMENT"),
        compute=compute,
        cluster_id=_value("ORDER_TRACKING_DATABRICKS_CLUSTER_ID"),
        new_cluster=new_cluster,
        serverless_environment=environment,
        wheel_uri=_value("ORDER_TRACKING_WHEEL_URI"),
        tables=tables,
        max_reject_fraction=float(_value("ORDER_TRACKING_MAX_REJECT_FRACTION")),
        sensor_timeout=timedelta(seconds=float(_value("ORDER_TRACKING_SENSOR_TIMEOUT_SECONDS"))),
        poke_interval=timedelta(seconds=float(_value("ORDER_TRACKING_SENSOR_POKE_SECONDS"))),
        gcs_retry=timedelta(seconds=float(_value("ORDER_TRACKING_GCS_RETRY_SECONDS"))),
        databricks_poll=timedelta(seconds=float(_value("ORDER_TRACKING_DATABRICKS_POLL_SECONDS"))),
        retries=int(_value("ORDER_TRACKING_RETRIES")),
        retry_delay=timedelta(seconds=float(_value("ORDER_TRACKING_RETRY_DELAY_SECONDS"))),
        task_timeout=timedelta(minutes=float(_value("ORDER_TRACKING_TASK_TIMEOUT_MINUTES"))),
    )


def _prefix(value: str) -> str:
    """A GCS prefix with exactly one trailing slash (none at the start)."""
    return value.strip("/") + "/"


def workspace_host(value: str) -> str:
    """The workspace's host, whether given as a host or as the connection's URL (``https://host/``)."""
    host = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", value.strip()).split("/", 1)[0]
    if not host or not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", host):
        raise ValueError(f"ORDER_TRACKING_DATABRICKS_WORKSPACE must be a host or https://host, not {value!r}")
    return host


def runtime_version(spark_version: str) -> tuple[int, int] | None:
    """(major, minor) of a Databricks runtime key such as ``15.4.x-scala2.12``; None if it names none."""
    found = re.match(r"^(\d+)\.(\d+)\.", spark_version or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def _check_compute(compute: str, cluster_id: str, new_cluster: dict, environment: str) -> None:
    """Refuse a compute the jobs cannot run on, naming the setting to change."""
    if compute == "existing_cluster" and not cluster_id:
        raise ValueError("ORDER_TRACKING_DATABRICKS_CLUSTER_ID is required when compute is existing_cluster")
    if compute == "serverless" and not (environment.isdigit() and int(environment) >= OLDEST_SERVERLESS_ENVIRONMENT):
        raise ValueError(
            f"ORDER_TRACKING_SERVERLESS_ENVIRONMENT_VERSION must be {OLDEST_SERVERLESS_ENVIRONMENT} or later "
            f"(environment 1 runs Python 3.10; the jobs need 3.11), not {environment!r}"
        )
    if compute != "new_cluster":
        return
    if not new_cluster:
        raise ValueError("ORDER_TRACKING_DATABRICKS_NEW_CLUSTER (a JSON cluster spec) is required for new_cluster")
    version = runtime_version(new_cluster.get("spark_version", ""))
    if version is None or version < OLDEST_RUNTIME:
        raise ValueError(
            "ORDER_TRACKING_DATABRICKS_NEW_CLUSTER: spark_version must be Databricks Runtime "
            f"{'.'.join(map(str, OLDEST_RUNTIME))} or later (e.g. 15.4.x-scala2.12), not "
            f"{new_cluster.get('spark_version')!r}"
        )
    if new_cluster.get("data_security_mode") not in UNITY_CATALOG_ACCESS_MODES:
        raise ValueError(
            "ORDER_TRACKING_DATABRICKS_NEW_CLUSTER: data_security_mode must be one of "
            f"{', '.join(UNITY_CATALOG_ACCESS_MODES)}, not {new_cluster.get('data_security_mode')!r}: "
            "a cluster created without one has no Unity Catalog access, and the jobs' tables are in Unity Catalog"
        )
    mode = new_cluster["data_security_mode"]
    if mode in KIND_ONLY_ACCESS_MODES and new_cluster.get("kind") != CLASSIC_PREVIEW:
        legacy = {"DATA_SECURITY_MODE_DEDICATED": "SINGLE_USER", "DATA_SECURITY_MODE_STANDARD": "USER_ISOLATION"}
        instead = f", or name the mode {legacy[mode]}" if mode in legacy else ""
        raise ValueError(
            f'ORDER_TRACKING_DATABRICKS_NEW_CLUSTER: data_security_mode {mode} needs "kind": "{CLASSIC_PREVIEW}" '
            f"beside it (the Clusters API takes the modes' current names only with that kind): add it{instead}"
        )


def _check_wheel_uri(compute: str, wheel_uri: str) -> None:
    """A wheel is required (each deploy writes one of its own name); serverless environments install
    dependencies from volumes, workspace files or URLs only."""
    if not wheel_uri:
        raise ValueError(
            "ORDER_TRACKING_WHEEL_URI is required on the databricks backend: run make deploy, which uploads the "
            "jobs' wheel under a version of its own and prints the value to set"
        )
    if compute == "serverless" and not _SERVERLESS_WHEEL.match(wheel_uri):
        raise ValueError(
            "ORDER_TRACKING_WHEEL_URI must be a /Volumes/ or /Workspace/ path (or a URL) on serverless compute, "
            f"not {wheel_uri!r}: make deploy uploads the wheel to a volume and prints its path"
        )
