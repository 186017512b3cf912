"""A real GCS emulator (gcp-storage-emulator) on loopback, and a small client for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage


class GcsEmulator:
    """Starts ``gcp-storage-emulator`` in memory at ``STORAGE_EMULATOR_HOST`` with one bucket."""

    def __init__(self, bucket: str) -> None:
        self.endpoint = os.environ["STORAGE_EMULATOR_HOST"]
        address = urlparse(self.endpoint)
        self.host, self.port = address.hostname, address.port
        self.bucket_name = bucket
        self.process: subprocess.Popen | None = None

    def start(self) -> GcsEmulator:
        """Start the emulator and wait until it accepts connections."""
        executable = Path(sys.executable).with_name("gcp-storage-emulator")
        self.process = subprocess.Popen(
            [str(executable), "start", "--host", self.host, "--port", str(self.port), "--in-memory", "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"the GCS emulator did not start on {self.endpoint}")
        self.client = storage.Client(project="test", credentials=AnonymousCredentials())
        self.bucket = self.client.bucket(self.bucket_name)
        if not self.bucket.exists():
            self.client.create_bucket(self.bucket_name)
        return self

    def stop(self) -> None:
        """Stop the emulator."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def wipe(self) -> None:
        """Delete every object of the bucket."""
        for blob in list(self.client.list_blobs(self.bucket_name)):
            blob.delete()

    def upload(self, name: str, data: bytes | str) -> None:
        """Create or replace one object."""
        self.bucket.blob(name).upload_from_string(data)

    def names(self, prefix: str = "") -> list[str]:
        """Object names under a prefix, sorted."""
        return sorted(blob.name for blob in self.client.list_blobs(self.bucket_name, prefix=prefix))

    def read(self, name: str) -> bytes:
        """One object's content."""
        return self.bucket.blob(name).download_as_bytes()
