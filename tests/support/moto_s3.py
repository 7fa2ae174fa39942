"""An S3 API for tests: moto in server mode, as its own process on a free loopback port, and
fresh, uniquely named buckets on it. Real HTTP: aioboto3 talks to it as to any S3 endpoint
(moto's in-process decorators do not intercept aioboto3).

`s3_server` is session-scoped, so each pytest process (each xdist worker) starts its own server
on its own port; buckets are uniquely named besides, so tests never share one by accident. Use
the fixtures from a conftest, as the other shared fixtures are::

    from tests.support.moto_s3 import s3_bucket, s3_server

    __all__ = ["s3_bucket", "s3_server"]

`moto_server(env)` starts another one, e.g. with ``INITIAL_NO_AUTH_ACTION_COUNT`` to make it
check credentials (moto accepts any by default).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest

from functions.settings import BlobSettings

ACCESS_KEY_ID = "vwm-test-access-key"
SECRET_ACCESS_KEY = "vwm-test-secret-key"
REGION = "us-east-1"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """A running moto server and the dummy credentials to use with it."""

    endpoint_url: str
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    region: str = REGION

    def client(self) -> Any:
        """A plain (synchronous) boto3 client: a test's own eyes on the bucket."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def create_bucket(self, hint: str = "vwm") -> str:
        """Make a bucket named after `hint` and a random suffix; returns its name."""
        name = f"{hint}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def blob_settings(self, bucket: str, **overrides: Any) -> BlobSettings:
        """`BlobSettings` of an S3 store on `bucket` of this server."""
        fields: dict[str, Any] = {
            "store": "s3",
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "addressing_style": "path",
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }
        return BlobSettings(**{**fields, **overrides})

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The ``VWM_*`` variables that point a control plane process at `bucket`."""
        return {
            "VWM_BLOB_STORE": "s3",
            "VWM_S3_BUCKET": bucket,
            "VWM_S3_ENDPOINT_URL": self.endpoint_url,
            "VWM_S3_REGION": self.region,
            "VWM_S3_PREFIX": prefix,
            "VWM_S3_ADDRESSING_STYLE": "path",
            "VWM_S3_ACCESS_KEY_ID": self.access_key_id,
            "VWM_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(env: Mapping[str, str] | None = None) -> Iterator[S3Server]:
    """A moto server process on a free loopback port, stopped on exit. A port taken between
    choosing and binding it (another worker) makes it try another."""
    for _ in range(3):
        port = free_port()
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
            try:
                url = f"http://127.0.0.1:{port}"
                if _wait_until_up(process, url):
                    yield S3Server(url)
                    return
                log.seek(0)
                output = log.read().decode(errors="replace")
                if "Address already in use" not in output:
                    raise RuntimeError(f"moto server did not start:\n{output[-2000:]}")
            finally:
                _stop(process)
    raise RuntimeError("moto server: no free port after 3 tries")


def _wait_until_up(process: subprocess.Popen[bytes], url: str) -> bool:
    """True once the server answers; False if it exited first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{url}/moto-api/").status_code == 200:
                    return True
            time.sleep(0.05)
    raise RuntimeError(f"moto server at {url} did not answer within {START_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """This test process's moto server (real HTTP on a loopback port)."""
    with moto_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket of its own for the test."""
    return s3_server.create_bucket()
