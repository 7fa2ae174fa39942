"""The S3 store when the bucket cannot be used: a missing bucket, nothing listening, a silent or
failing server, refused or absent credentials. Each is a `BlobStoreUnavailable` (503) naming
the bucket and endpoint, reported in seconds, and no message or repr holds a secret. Real HTTP:
moto's S3 API, or a bare socket server where moto cannot misbehave."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from functions.blobs import BlobStoreUnavailable, open_blob_store
from functions.blobs.s3 import S3BlobStore
from functions.settings import BlobSettings, ControlPlaneSettings
from tests.support.moto_s3 import S3Server, free_port, moto_server
from tests.support.raw_server import raw_server, silent

SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"


KEY = "skills/lint/1.tar.gz"
OPERATIONS: dict[str, Callable[[S3BlobStore], Awaitable[object]]] = {
    "put": lambda store: store.put(KEY, b"x"),
    "get": lambda store: store.get(KEY),
    "delete": lambda store: store.delete(KEY),
    "exists": lambda store: store.exists(KEY),
}


def assert_no_secret(error: BlobStoreUnavailable, store: S3BlobStore) -> None:
    for text in (str(error), repr(error), str(error.to_body()), repr(store)):
        assert SECRET not in text


@pytest.mark.parametrize("operation", ["put", "get", "delete", "exists"])
async def test_a_bucket_that_does_not_exist_is_named(s3_server: S3Server, operation: str) -> None:
    store = open_blob_store(s3_server.blob_settings("vwm-no-such-bucket"))
    assert isinstance(store, S3BlobStore)
    with pytest.raises(BlobStoreUnavailable) as unavailable:
        await OPERATIONS[operation](store)
    error = unavailable.value
    assert error.code == "blob_store_unavailable"
    assert error.status == 503
    assert error.retryable is False  # only creating the bucket helps
    assert error.details["reason"] == "no_such_bucket"
    assert "'vwm-no-such-bucket' does not exist" in error.message
    assert s3_server.endpoint_url in error.message
    assert "VWM_S3_BUCKET" in error.message


async def test_an_endpoint_where_nothing_listens_fails_fast() -> None:
    """The production defaults (3 attempts, 5 s to connect): refused in seconds, not minutes."""
    url = f"http://127.0.0.1:{free_port()}"
    settings = BlobSettings(
        store="s3",
        bucket="skills",
        endpoint_url=url,
        access_key_id="AKIAEXAMPLE",
        secret_access_key=SECRET,
    )
    store = S3BlobStore(settings)
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable) as unavailable:
        await store.get("skills/lint/1.tar.gz")
    assert time.monotonic() - started < 15
    error = unavailable.value
    assert error.retryable is True
    assert error.details["reason"] == "unreachable"
    assert url in error.message and "'skills'" in error.message
    assert "VWM_S3_ENDPOINT_URL" in error.message
    assert_no_secret(error, store)


async def test_a_server_that_never_answers_times_out() -> None:
    with raw_server(silent) as server:
        settings = BlobSettings(
            store="s3",
            bucket="skills",
            endpoint_url=server.url,
            addressing_style="path",
            access_key_id="AKIAEXAMPLE",
            secret_access_key=SECRET,
            read_timeout_s=0.5,
            max_attempts=2,
        )
        store = S3BlobStore(settings)
        with pytest.raises(BlobStoreUnavailable) as unavailable:
            await store.get("k")
        assert unavailable.value.details["reason"] == "timeout"
        assert unavailable.value.retryable is True
        assert len(server.received) == 2  # the attempts are bounded
        assert_no_secret(unavailable.value, store)


def answer_503(conn: socket.socket, buffer: bytearray) -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    conn.sendall(head.encode() + (b"" if buffer.startswith(b"HEAD ") else body))


@pytest.mark.parametrize("operation", ["get", "exists"])
async def test_a_failing_server_is_unavailable_and_retryable(operation: str) -> None:
    with raw_server(answer_503) as server:
        settings = BlobSettings(
            store="s3", bucket="skills", endpoint_url=server.url, max_attempts=2,
            access_key_id="AKIAEXAMPLE", secret_access_key=SECRET,
        )  # fmt: skip
        store = S3BlobStore(settings)
        call = store.get("k") if operation == "get" else store.exists("k")
        with pytest.raises(BlobStoreUnavailable) as unavailable:
            await call
        error = unavailable.value
        assert error.details["reason"] == "server_error"
        assert error.retryable is True
        assert "HTTP 503" in error.message
        assert len(server.received) == 2


@pytest.fixture(scope="module")
def checking_server() -> Iterator[tuple[S3Server, str]]:
    """A moto server that checks credentials after its first request, which makes a bucket
    (moto knows no access key, so every later request is refused)."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as server:
        yield server, server.create_bucket()


@pytest.mark.parametrize("operation", ["put", "get", "delete", "exists"])
async def test_refused_credentials_say_what_to_check(
    checking_server: tuple[S3Server, str], operation: str
) -> None:
    server, bucket = checking_server
    settings = server.blob_settings(bucket, access_key_id="AKIAUNKNOWN", secret_access_key=SECRET)
    store = S3BlobStore(settings)
    with pytest.raises(BlobStoreUnavailable) as unavailable:
        await OPERATIONS[operation](store)
    error = unavailable.value
    assert error.details["reason"] == "access_denied"
    assert error.retryable is False
    assert "VWM_S3_ACCESS_KEY_ID" in error.message and "IAM role" in error.message
    assert_no_secret(error, store)


@pytest.fixture
def bare_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS credentials anywhere the default chain looks, and no instance metadata to ask."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


async def test_without_keys_the_default_aws_chain_is_used(
    s3_server: S3Server, s3_bucket: str, bare_aws_environment: pytest.MonkeyPatch
) -> None:
    """No keys in the settings: boto's chain finds them (here in the environment; in production
    IRSA's web identity or the instance profile)."""
    settings = s3_server.blob_settings(s3_bucket, access_key_id=None, secret_access_key=None)
    bare_aws_environment.setenv("AWS_ACCESS_KEY_ID", "from-the-chain")
    bare_aws_environment.setenv("AWS_SECRET_ACCESS_KEY", "from-the-chain")
    store = open_blob_store(settings)
    await store.put("k", b"via the chain")
    assert await store.get("k") == b"via the chain"


async def test_no_credentials_anywhere_is_reported(
    s3_server: S3Server, s3_bucket: str, bare_aws_environment: pytest.MonkeyPatch
) -> None:
    settings = s3_server.blob_settings(s3_bucket, access_key_id=None, secret_access_key=None)
    with pytest.raises(BlobStoreUnavailable) as unavailable:
        await open_blob_store(settings).get("k")
    assert unavailable.value.details["reason"] == "no_credentials"
    assert unavailable.value.retryable is False
    assert "IRSA" in unavailable.value.message


def test_the_secret_is_in_no_repr() -> None:
    env = {
        "VWM_DATA_DIR": "/nonexistent",
        "VWM_BLOB_STORE": "s3",
        "VWM_S3_BUCKET": "skills",
        "VWM_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "VWM_S3_SECRET_ACCESS_KEY": SECRET,
    }
    settings = ControlPlaneSettings.from_env(env)
    assert settings.blobs.secret_access_key == SECRET
    store = open_blob_store(settings.blobs)
    for text in (repr(settings), str(settings), repr(settings.blobs), repr(store), str(store)):
        assert SECRET not in text
        assert "AKIAEXAMPLE" not in text
    assert "skills" in repr(store)
