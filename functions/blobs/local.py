"""The folder blob store of the embedded default (`vwm up`): one file per blob under a root
folder (``VWM_BLOB_DIR``, by default ``blobs/`` in the data folder).

On disk a key's parts become folders and a file, each name marked so that a blob and a folder
never collide (S3 keeps ``a`` and ``a/b`` side by side; a folder cannot): ``skills/lint/1.tgz``
is ``d.skills/d.lint/f.1.tgz``. Writes in progress are ``t.<random>`` files beside their blob.

- A write is atomic and durable: a temporary file in the blob's folder, fsynced, then
  ``os.replace`` over the blob and an fsync of the folder. A reader sees the old bytes or the
  new ones; a crash leaves at most a ``t.`` file.
- Folders are 0700 and files 0600 (`functions.private_files`): packages are for the control
  plane only.
- Nothing is reached through a symbolic link: every step from the root is opened relative to
  the folder before it with ``O_NOFOLLOW``, so a link planted in the store (pointing anywhere)
  is refused, never followed.
- The blocking calls run in a worker thread (anyio), off the event loop.

Emptied folders are left in place: removing one could pull it from under a concurrent `put`
that has just opened it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from functions.blobs.errors import BlobNotFound, BlobStoreUnavailable
from functions.blobs.keys import check_key
from functions.private_files import DIR_MODE, FILE_MODE, private_dir

FOLDER_MARK = "d."
BLOB_MARK = "f."
TEMP_MARK = "t."

_T = TypeVar("_T")

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under a blob's name must not hang the read (no effect on a file).
_OPEN_BLOB = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LocalBlobStore:
    """Blobs as files under `root`, which is made (0700) if missing."""

    def __init__(self, root: Path) -> None:
        # Resolved once: a link in the configured path itself is the operator's choice.
        self.root = root.resolve()
        private_dir(self.root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    async def put(self, key: str, data: bytes) -> None:
        await self._in_thread(self._put, key, data)

    async def get(self, key: str) -> bytes:
        return await self._in_thread(self._get, key)

    async def delete(self, key: str) -> None:
        await self._in_thread(self._delete, key)

    async def exists(self, key: str) -> bool:
        return await self._in_thread(self._exists, key)

    async def _in_thread(self, call: Callable[..., _T], key: str, *args: bytes) -> _T:
        check_key(key)
        try:
            return await anyio.to_thread.run_sync(call, key, *args)
        except OSError as error:
            raise self._unavailable(error, key) from error

    # -- in the worker thread ------------------------------------------------------------------

    def _put(self, key: str, data: bytes) -> None:
        *folders, name = key.split("/")
        with self._folder(folders, create=True) as folder:
            temp = TEMP_MARK + secrets.token_hex(8)
            fd = os.open(temp, _CREATE_TEMP, FILE_MODE, dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, BLOB_MARK + name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
                raise
            os.fsync(folder)  # the rename itself survives a crash

    def _get(self, key: str) -> bytes:
        *folders, name = key.split("/")
        try:
            with self._folder(folders, create=False) as folder:
                fd = os.open(BLOB_MARK + name, _OPEN_BLOB, dir_fd=folder)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", BLOB_MARK + name)
            return file.read()

    def _delete(self, key: str) -> None:
        *folders, name = key.split("/")
        # A link in the blob's place is removed itself: unlink never follows it.
        with contextlib.suppress(FileNotFoundError), self._folder(folders) as folder:
            os.unlink(BLOB_MARK + name, dir_fd=folder)

    def _exists(self, key: str) -> bool:
        *folders, name = key.split("/")
        try:
            with self._folder(folders) as folder:
                info = os.stat(BLOB_MARK + name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(info.st_mode)

    @contextlib.contextmanager
    def _folder(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the folder holding a key's blob, opened step by step from the root
        without following links; made (0700) on the way with `create`, else FileNotFoundError (no folder, no blob)."""
        try:
            fd = os.open(self.root, _OPEN_FOLDER)
        except FileNotFoundError:
            if not create:
                raise
            private_dir(self.root)  # removed since start: make it again
            fd = os.open(self.root, _OPEN_FOLDER)
        try:
            for part in parts:
                child = _open_folder(fd, FOLDER_MARK + part, create=create)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _unavailable(self, error: OSError, key: str) -> BlobStoreUnavailable:
        where = f"the blob folder {str(self.root)!r}"
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EINVAL):
            return BlobStoreUnavailable(
                f"{where} holds something the store never makes on the way to {key!r} (a "
                f"symbolic link, or a file or folder in the wrong place: {error.strerror}); it is "
                "not followed: remove it",
                retryable=False,
                reason="foreign_entry",
                key=key,
            )
        return BlobStoreUnavailable(
            f"{where} cannot be used for {key!r} ({error.strerror}): check that it exists, is "
            "writable by the control plane's user and has free space (VWM_BLOB_DIR)",
            retryable=error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS),
            reason="folder_error",
            key=key,
        )


def _open_folder(parent: int, name: str, *, create: bool) -> int:
    """Open the folder `name` in `parent`, never through a link."""
    try:
        return os.open(name, _OPEN_FOLDER, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):  # a concurrent put made it
            os.mkdir(name, DIR_MODE, dir_fd=parent)
        return os.open(name, _OPEN_FOLDER, dir_fd=parent)
