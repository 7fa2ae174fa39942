"""The blob store contract (`functions.blobs.BlobStore`), one suite run on every implementation:
the folder store on a temporary folder, and the S3 store against moto's S3 API over real HTTP
(a new bucket per test, every key under a prefix)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from functions.blobs import (
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    check_key,
    open_blob_store,
)
from functions.settings import BlobSettings
from tests.support.moto_s3 import S3Server

PREFIX = "tenant/skills"


@dataclass
class Subject:
    """A store under test, another store beside it on the same folder or bucket, and a look at
    what is physically stored there (file paths under the folder, or object keys)."""

    store: BlobStore
    neighbour: BlobStore
    stored: Callable[[], list[str]]


def local_subject(tmp_path: Path) -> Subject:
    def stored() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())

    return Subject(
        store=open_blob_store(BlobSettings(local_dir=tmp_path / "blobs")),
        neighbour=open_blob_store(BlobSettings(local_dir=tmp_path / "other")),
        stored=stored,
    )


def s3_subject(server: S3Server, bucket: str) -> Subject:
    def stored() -> list[str]:
        listed = server.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    return Subject(
        store=open_blob_store(server.blob_settings(bucket, prefix=PREFIX)),
        neighbour=open_blob_store(server.blob_settings(bucket, prefix="tenant/other")),
        stored=stored,
    )


@pytest.fixture(params=["local", "s3"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "local":
        return local_subject(tmp_path)
    server: S3Server = request.getfixturevalue("s3_server")
    return s3_subject(server, request.getfixturevalue("s3_bucket"))


@pytest.fixture
def store(subject: Subject) -> BlobStore:
    return subject.store


async def test_both_stores_are_blob_stores(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)


async def test_a_blob_comes_back_as_it_was_put(store: BlobStore) -> None:
    await store.put("skills/lint/1.0.0.tar.gz", b"package")
    assert await store.get("skills/lint/1.0.0.tar.gz") == b"package"
    assert await store.exists("skills/lint/1.0.0.tar.gz")


async def test_put_replaces_the_blob(store: BlobStore) -> None:
    await store.put("k", b"first, and longer than the second")
    await store.put("k", b"second")
    assert await store.get("k") == b"second"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(range(256)) * 4,
        b"\r\n\x00\r\x1a\n",  # line endings, NUL, ^Z: nothing may be translated
        os.urandom(3 * 1024 * 1024 + 17),
    ],
    ids=["empty", "every-byte", "line-endings", "3MiB-random"],
)
async def test_the_bytes_are_exact(store: BlobStore, data: bytes) -> None:
    await store.put("skills/x/1.zip", data)
    assert await store.get("skills/x/1.zip") == data


async def test_a_missing_key_is_not_found(store: BlobStore) -> None:
    assert not await store.exists("skills/none/1.tar.gz")
    with pytest.raises(BlobNotFound) as missing:
        await store.get("skills/none/1.tar.gz")
    assert missing.value.code == "blob_not_found"
    assert missing.value.status == 404
    assert missing.value.details == {"key": "skills/none/1.tar.gz"}


async def test_delete_removes_and_is_idempotent(store: BlobStore) -> None:
    await store.delete("never/put")  # nothing there: no error
    await store.put("a/b", b"x")
    await store.delete("a/b")
    assert not await store.exists("a/b")
    with pytest.raises(BlobNotFound):
        await store.get("a/b")
    await store.delete("a/b")


async def test_exists_follows_put_and_delete(store: BlobStore) -> None:
    assert not await store.exists("k")
    await store.put("k", b"")
    assert await store.exists("k")  # an empty blob exists too
    await store.delete("k")
    assert not await store.exists("k")


async def test_a_key_and_keys_under_it_live_side_by_side(store: BlobStore) -> None:
    """As in S3, ``a`` may be a blob while ``a/b`` is one too (a folder cannot be both)."""
    await store.put("a", b"1")
    await store.put("a/b", b"2")
    await store.put("a/b/c", b"3")
    assert [await store.get(k) for k in ("a", "a/b", "a/b/c")] == [b"1", b"2", b"3"]
    assert not await store.exists("a/b/c/d")
    await store.delete("a/b")
    assert await store.get("a") == b"1"
    assert await store.get("a/b/c") == b"3"


@pytest.mark.parametrize(
    "key",
    ["skills/ünïcode/1.0 beta.tar.gz", "d.x/f.y/t.z", "a..b/...c/.hidden", "x" * 250],
    ids=["unicode-and-space", "marker-like", "dots-in-names", "longest-part"],
)
async def test_unusual_but_valid_keys_work(store: BlobStore, key: str) -> None:
    await store.put(key, key.encode())
    assert await store.get(key) == key.encode()


BAD_KEYS = {
    "empty": "",
    "absolute": "/etc/passwd",
    "parent": "skills/../../etc/passwd",
    "only-parent": "..",
    "dot": "skills/./x",
    "empty-part": "skills//x",
    "trailing-slash": "skills/x/",
    "backslash": "skills\\x",
    "nul": "skills/x\x00",
    "newline": "skills/x\n",
    "delete-char": "skills/\x7f",
    "too-long": "k" * 1025,
    "part-too-long": "a/" + "p" * 251,
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
async def test_a_bad_key_is_refused_by_every_method_before_any_io(
    subject: Subject, key: str
) -> None:
    store = subject.store
    with pytest.raises(ValueError, match="blob key") as refused:
        check_key(key)
    assert isinstance(refused.value, InvalidBlobKey)
    assert refused.value.code == "invalid_blob_key"
    assert refused.value.status == 400
    for call in (
        store.put(key, b"x"),
        store.get(key),
        store.delete(key),
        store.exists(key),
    ):
        with pytest.raises(InvalidBlobKey, match="blob key"):
            await call
    assert subject.stored() == []


async def test_stores_on_one_place_keep_apart(subject: Subject) -> None:
    """Two stores on the same bucket (other prefixes) or beside each other (other folders)
    see only their own blobs."""
    await subject.store.put("k", b"mine")
    await subject.neighbour.put("k", b"theirs")
    assert await subject.store.get("k") == b"mine"
    await subject.neighbour.delete("k")
    assert await subject.store.get("k") == b"mine"
    assert not await subject.neighbour.exists("k")


async def test_many_calls_at_once(store: BlobStore) -> None:
    payloads = {f"skills/s{i}/1.tar.gz": os.urandom(1000 + i) for i in range(8)}
    await asyncio.gather(*(store.put(key, data) for key, data in payloads.items()))
    got = await asyncio.gather(*(store.get(key) for key in payloads))
    assert got == list(payloads.values())
    await asyncio.gather(*(store.delete(key) for key in payloads))
    assert not any(await asyncio.gather(*(store.exists(key) for key in payloads)))


async def test_a_concurrent_reader_sees_one_whole_version(store: BlobStore) -> None:
    """Puts of one key racing with gets: every get returns one of the versions whole."""
    versions = [bytes([n]) * (256 * 1024) for n in range(6)]
    await store.put("race", versions[0])
    results = await asyncio.gather(
        *(store.put("race", data) for data in versions[1:]),
        *(store.get("race") for _ in range(10)),
    )
    for got in results:
        assert got is None or got in versions
    assert await store.get("race") in versions[1:]


async def test_s3_objects_live_under_the_prefix(s3_server: S3Server, s3_bucket: str) -> None:
    """Checked with a plain boto3 client: the object is ``<prefix>/<key>``, exactly the bytes."""
    store = open_blob_store(s3_server.blob_settings(s3_bucket, prefix="/vwm/skills/"))
    await store.put("lint/1.0.0.tar.gz", b"\x1f\x8b package")
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["vwm/skills/lint/1.0.0.tar.gz"]
    body = client.get_object(Bucket=s3_bucket, Key="vwm/skills/lint/1.0.0.tar.gz")["Body"]
    assert body.read() == b"\x1f\x8b package"
    # An object put beside the prefix is not the store's.
    client.put_object(Bucket=s3_bucket, Key="lint/1.0.0.tar.gz", Body=b"other")
    assert await store.get("lint/1.0.0.tar.gz") == b"\x1f\x8b package"


async def test_s3_without_a_prefix_uses_the_key_as_is(s3_server: S3Server, s3_bucket: str) -> None:
    store = open_blob_store(s3_server.blob_settings(s3_bucket))
    await store.put("lint/1.tar.gz", b"x")
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["lint/1.tar.gz"]
