"""The folder store beyond the contract: private modes, writes that leave no debris, links that
are never followed out of the root, a root removed while running."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.blobs import BlobNotFound, BlobStoreUnavailable, open_blob_store
from functions.blobs.local import LocalBlobStore
from functions.settings import BlobSettings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def names(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would leave files readable by everyone: the store must not rely on one."""
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


async def test_folders_are_0700_and_files_0600(tmp_path: Path, loose_umask: None) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    await store.put("skills/lint/1.0.0.tar.gz", b"x")
    assert mode(root) == 0o700
    folders = [p for p in root.rglob("*") if p.is_dir()]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(folders) == 2 and len(files) == 1
    assert {mode(p) for p in folders} == {0o700}
    assert mode(files[0]) == 0o600


def test_a_looser_existing_root_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    LocalBlobStore(root)
    assert mode(root) == 0o700


async def test_a_write_leaves_only_the_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    for n in range(3):
        await store.put("k", bytes([n]) * 1000)
    assert names(tmp_path) == ["f.k"]


async def test_a_failed_write_leaves_nothing_and_keeps_the_old_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put("k", b"old")
    with pytest.raises(TypeError):
        await store.put("k", "not bytes")  # type: ignore[arg-type]
    assert names(tmp_path) == ["f.k"]
    assert await store.get("k") == b"old"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the store's root with a file a link could lead to."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "f.secret").write_bytes(b"not the store's")
    return folder


async def test_a_linked_folder_is_not_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    (root / "d.skills").symlink_to(outside)
    with pytest.raises(BlobStoreUnavailable) as refused:
        await store.get("skills/secret")
    assert refused.value.details["reason"] == "foreign_entry"
    assert refused.value.retryable is False
    assert str(root) in refused.value.message
    with pytest.raises(BlobStoreUnavailable):
        await store.put("skills/new", b"x")
    with pytest.raises(BlobStoreUnavailable):
        await store.exists("skills/secret")
    with pytest.raises(BlobStoreUnavailable):
        await store.delete("skills/secret")
    assert names(outside) == ["f.secret"]
    assert (outside / "f.secret").read_bytes() == b"not the store's"


async def test_a_linked_blob_is_not_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    (root / "f.k").symlink_to(outside / "f.secret")
    with pytest.raises(BlobStoreUnavailable):
        await store.get("k")
    assert not await store.exists("k")
    # A put replaces the link itself, a delete removes it: the target is never touched.
    await store.put("k", b"mine")
    assert not (root / "f.k").is_symlink()
    assert await store.get("k") == b"mine"
    (root / "f.k").unlink()
    (root / "f.k").symlink_to(outside / "f.secret")
    await store.delete("k")
    assert not (root / "f.k").exists() and not (root / "f.k").is_symlink()
    assert (outside / "f.secret").read_bytes() == b"not the store's"


async def test_a_fifo_in_a_blobs_place_does_not_hang_a_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    os.mkfifo(tmp_path / "f.k")
    with pytest.raises(BlobStoreUnavailable):
        await store.get("k")


async def test_a_root_removed_while_running_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    root.rmdir()
    assert not await store.exists("k")
    with pytest.raises(BlobNotFound):
        await store.get("k")
    await store.delete("k")
    await store.put("k", b"x")
    assert mode(root) == 0o700
    assert await store.get("k") == b"x"


async def test_an_unwritable_folder_is_unavailable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes regardless of modes")
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    root.chmod(0o500)
    try:
        with pytest.raises(BlobStoreUnavailable) as unavailable:
            await store.put("k", b"x")
    finally:
        root.chmod(0o700)
    assert unavailable.value.details["reason"] == "folder_error"
    assert "VWM_BLOB_DIR" in unavailable.value.message


def test_the_local_store_does_not_load_the_aws_sdk(tmp_path: Path) -> None:
    script = (
        "import sys, pathlib\n"
        "from functions.blobs import open_blob_store\n"
        "from functions.settings import BlobSettings\n"
        f"open_blob_store(BlobSettings(local_dir=pathlib.Path({str(tmp_path)!r})))\n"
        "print(sorted(m for m in ('aioboto3', 'botocore', 'boto3') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "[]"


def test_the_factory_picks_the_store_the_settings_name(tmp_path: Path) -> None:
    local = open_blob_store(BlobSettings(local_dir=tmp_path / "b"))
    assert isinstance(local, LocalBlobStore)
    assert local.root == tmp_path / "b"
