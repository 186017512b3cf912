"""The parts of ``docker-compose.yaml``, run natively on loopback: no Docker engine runs here.

Everything the stack's behaviour depends on is read from the compose file itself, so the two cannot
drift: the Airflow services' environment, their commands and health checks, the metadata database's
user, password and name, fake-gcs-server's version, flags and preloaded data. What a container gets
from Docker is given natively instead, and only that:

- service names become 127.0.0.1 addresses on free ports (``NativeAddresses``);
- the image's ``/opt/airflow`` is a fresh AIRFLOW_HOME whose ``dags`` and ``plugins`` are the repo's
  folders (the compose file bind-mounts them); ``/opt/spark-jars`` is the repo's ``.jars`` (``make jars``);
- servers bind 127.0.0.1 where a container binds 0.0.0.0 behind a port published on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from airflow.utils.net import get_hostname
from cryptography.fernet import Fernet

from tests.conftest import REPO, free_port
from tests.dags.airflow_services import AIRFLOW, AirflowServices

COMPOSE_FILE = REPO / "docker-compose.yaml"
FAKE_GCS = REPO / ".tools" / "bin" / "fake-gcs-server"  # make tools: built from the compose file's tag
# The official image's entry point runs fake-gcs-server with ``-data /data``; the compose command follows.
FAKE_GCS_IMAGE_ARGUMENTS = ("-data", "/data")
REQUIRE_ENV = "ORDER_TRACKING_REQUIRE_COMPOSE_PARITY"  # .ci/run sets it: a missing part fails, never skips


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's variable syntax: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``."""

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        value = variables.get(name, "")
        if operator == ":?" and not value:
            raise ValueError(f"compose requires {name}: {argument}")
        if operator == ":-" and not value:
            return argument
        return value

    parts = text.split("$$")
    return "$".join(re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", substitute, part) for part in parts)


def postgres_binaries() -> Path | None:
    """The folder of initdb and pg_ctl, if PostgreSQL is installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return installed[-1].parent if installed else None


def missing_postgres() -> list[str]:
    """PostgreSQL, if this machine lacks it: the compose file's metadata database, and backfill's."""
    return ["PostgreSQL (initdb, pg_ctl): apt-get install postgresql"] if postgres_binaries() is None else []


def missing_parts() -> list[str]:
    """What this machine lacks to run the compose file's parts."""
    missing = missing_postgres()
    if not FAKE_GCS.exists():
        missing.append(f"fake-gcs-server at {FAKE_GCS.relative_to(REPO)}: make tools (needs Go)")
    if not any((REPO / ".jars").glob("delta-spark_*.jar")):
        missing.append("the Spark jars in .jars/: make jars")
    return missing


def require(missing: list[str], what: str) -> None:
    """Fail when ``missing`` names parts and CI requires them (``REQUIRE_ENV``); skip, naming them, elsewhere."""
    if not missing:
        return
    message = f"{what} missing here: " + "; ".join(missing)
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class NativeAddresses:
    """Where each compose service listens here."""

    postgres: int
    fake_gcs: int
    api_server: int
    scheduler_health: int

    @classmethod
    def free(cls) -> NativeAddresses:
        return cls(free_port(), free_port(), free_port(), free_port())

    def rewrite(self, text: str, home: Path) -> str:
        """A compose value with service names, ports and container paths as they are here."""
        for compose_address, native in (
            ("@postgres/", f"@127.0.0.1:{self.postgres}/"),
            ("//fake-gcs:4443", f"//127.0.0.1:{self.fake_gcs}"),
            ("//localhost:4443", f"//127.0.0.1:{self.fake_gcs}"),
            ("//airflow-apiserver:8080", f"//127.0.0.1:{self.api_server}"),
            ("//localhost:8080", f"//127.0.0.1:{self.api_server}"),
            ("//localhost:8974", f"//127.0.0.1:{self.scheduler_health}"),
            ("/opt/spark-jars", str(REPO / ".jars")),
            ("/opt/airflow", str(home)),
        ):
            text = text.replace(compose_address, native)
        return text


class PostgresServer:
    """PostgreSQL as the compose file's ``postgres`` service: its user, password and database."""

    def __init__(self, service: dict, port: int) -> None:
        self.user = service["environment"]["POSTGRES_USER"]
        self.password = service["environment"]["POSTGRES_PASSWORD"]
        self.database = service["environment"]["POSTGRES_DB"]
        self.port = port
        self.bin = postgres_binaries()
        # PostgreSQL refuses to run as root: run it as the postgres account then, in a folder it owns.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.folder = Path(tempfile.mkdtemp(prefix="order-tracking-postgres-"))

    def _run(self, *command: str, env: dict[str, str] | None = None) -> None:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, env=env)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"

    def start(self) -> PostgresServer:
        password_file = self.folder / "password"
        password_file.write_text(self.password)
        if self.as_user:
            shutil.chown(self.folder, "postgres")
            shutil.chown(password_file, "postgres")
        data = self.folder / "data"
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={password_file}",
            "--auth-host=scram-sha-256", "--auth-local=trust",
        )  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "start")  # fmt: skip
        self._run(str(self.bin / "createdb"), "-h", str(self.folder), "-p", str(self.port),
                  "-U", self.user, self.database)  # fmt: skip
        return self

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


class FakeGcsServer:
    """fake-gcs-server with the compose service's flags and its volumes as the preloaded data."""

    def __init__(self, service: dict, addresses: NativeAddresses, folder: Path) -> None:
        self.port = addresses.fake_gcs
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data = folder / "data"
        for volume in service.get("volumes", []):  # e.g. ./tests/data/seed/x.csv:/data/order-tracking/input/x.csv:ro
            source, target = volume.split(":")[:2]
            destination = self.data / Path(target).relative_to("/data")
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(REPO / source, destination)
        arguments = [*FAKE_GCS_IMAGE_ARGUMENTS, *service["command"]]
        arguments = [addresses.rewrite(argument, folder) for argument in arguments]
        arguments[arguments.index("-data") + 1] = str(self.data)
        arguments[arguments.index("-port") + 1] = str(self.port)
        self.command = [str(FAKE_GCS), *arguments, "-host", "127.0.0.1"]
        self.log = folder / "fake-gcs.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> FakeGcsServer:
        self.process = subprocess.Popen(self.command, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"fake-gcs-server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def airflow_environment(compose: dict, addresses: NativeAddresses, home: Path) -> dict[str, str]:
    """``x-airflow-common``'s environment, interpolated as ``make .env`` and compose would, rewritten for here."""
    variables = {**os.environ, "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()}
    common = compose["x-airflow-common"]["environment"]
    env = {name: addresses.rewrite(interpolate(str(value), variables), home) for name, value in common.items()}
    compose_only = re.compile(r"/opt/|//(postgres|fake-gcs|airflow-)")
    leftovers = {name: value for name, value in env.items() if compose_only.search(value)}
    assert not leftovers, f"compose values with no native counterpart: {leftovers}"
    return env


def native_only(addresses: NativeAddresses) -> dict[str, str]:
    """What Docker gives a container and a native process must be told: loopback binds and free ports."""
    return {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(addresses.scheduler_health),
    }


class ComposeStack:
    """postgres, fake-gcs, airflow-init, then the four Airflow services, as the compose file defines them."""

    def __init__(self, folder: Path, speed_ups: dict[str, str]) -> None:
        self.compose = compose_file()
        self.addresses = NativeAddresses.free()
        self.home = folder / "airflow"
        self.home.mkdir(parents=True)
        for mounted in ("dags", "plugins"):
            (self.home / mounted).symlink_to(REPO / mounted)
        for created in ("logs", "config", "tables"):  # airflow-init's mkdir
            (self.home / created).mkdir()
        services = self.compose["services"]
        self.postgres = PostgresServer(services["postgres"], self.addresses.postgres)
        self.fake_gcs = FakeGcsServer(services["fake-gcs"], self.addresses, folder)
        init_env = services["airflow-init"]["environment"]
        variables = dict(os.environ)
        self.username = interpolate(init_env["_AIRFLOW_WWW_USER_USERNAME"], variables)
        self.password = interpolate(init_env["_AIRFLOW_WWW_USER_PASSWORD"], variables)
        self.env = {
            **airflow_environment(self.compose, self.addresses, self.home),
            **native_only(self.addresses),
            **speed_ups,
        }
        assert (init_env["_AIRFLOW_DB_MIGRATE"], init_env["_AIRFLOW_WWW_USER_CREATE"]) == ("true", "true")
        # What the image's entry point does for airflow-init's _AIRFLOW_DB_MIGRATE and _AIRFLOW_WWW_USER_CREATE.
        init = (
            ("db", "migrate"),
            ("users", "create", "--username", self.username, "--password", self.password, "--role", "Admin",
             "--firstname", "Airflow", "--lastname", "Admin", "--email", "airflowadmin@example.com"),
        )  # fmt: skip
        self.airflow = AirflowServices(
            self.home, self.env, self.addresses.api_server, (self.username, self.password), init
        )
        self.tables = self.home / "tables"

    def service_commands(self) -> dict[str, str]:
        """The Airflow services' compose commands."""
        return {
            name: service["command"]
            for name, service in self.compose["services"].items()
            if isinstance(service.get("command"), str)
        }

    def start(self) -> ComposeStack:
        self.postgres.start()
        self.fake_gcs.start()
        self.airflow.start()
        return self

    def stop(self) -> None:
        self.airflow.stop()
        self.fake_gcs.stop()
        self.postgres.stop()

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        """Run a compose service's health check here."""
        test = self.compose["services"][service]["healthcheck"]["test"]
        kind, arguments = test[0], [self.addresses.rewrite(argument, self.home) for argument in test[1:]]
        # In the image, airflow is on the PATH, and a container's HOSTNAME is the hostname its jobs record.
        path = f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**self.airflow.env, "HOSTNAME": get_hostname(), "PATH": path}
        if service == "postgres":  # pg_isready inside the container asks the local socket
            arguments += ["-h", "127.0.0.1", "-p", str(self.addresses.postgres)]
        if kind == "CMD-SHELL":
            return subprocess.run(["sh", "-c", interpolate(arguments[0], env)], env=env, capture_output=True, text=True)
        return subprocess.run(arguments, env=env, capture_output=True, text=True)
