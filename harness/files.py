"""File operations on a session's workspace that can never touch anything outside it.

Called by the HTTP layer's file routes with paths straight from the caller. Two defences:

1. `resolve_in_workspace` refuses a path that names anything outside the root: absolute paths,
   ``..`` components, NUL bytes, and symlinks anywhere in the path that lead out.
2. The operations then reach the resolved location one directory at a time from the root with
   ``O_NOFOLLOW``, so a symlink swapped in after the check (the agent works in the same folder
   at the same time) makes the call fail instead of escaping. Writes replace the final name
   with ``rename`` and deletes use ``unlink`` / fd-based ``rmtree``: neither follows a symlink.

What may be touched inside the workspace (hidden and read-only areas) is a `PathPolicy`'s call,
made on the resolved location after step 1, so a symlink cannot lead around it either.

Paths are never URL-decoded here: ``%2e%2e`` is a file of that name, inside the workspace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from harness.errors import BadRequest, Forbidden, NotFound, PathOutsideWorkspace, PayloadTooLarge
from harness.path_policy import CONFINED, Access, PathPolicy

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_READ_CHUNK = 1 << 20


def resolve_in_workspace(
    root: Path, user_path: str, *, allow_root: bool = False, follow_final: bool = True
) -> Path:
    """The absolute location `user_path` names inside `root`, or PathOutsideWorkspace.

    `allow_root`: whether the path may name the root itself (listing may; file operations not).
    `follow_final`: resolve a symlink in the last component too. Off for operations that act on
    the link itself (delete) — the parent folders are still resolved and checked.
    """
    base = root.resolve()
    parts = _relative_parts(user_path, allow_root)
    if not parts:
        return base
    if follow_final:
        target = _resolve(base.joinpath(*parts), user_path)
    else:
        target = _resolve(base.joinpath(*parts[:-1]), user_path) / parts[-1]
    if not target.is_relative_to(base):
        raise _outside(user_path, "it leads through a symbolic link to a place outside it")
    if target == base and not allow_root:
        raise _outside(user_path, "it names the workspace root; name a file or folder inside it")
    return target


def list_dir(root: Path, path: str = ".", policy: PathPolicy = CONFINED) -> list[dict[str, Any]]:
    """The entries of a folder, sorted by name. Symlinks are listed as such and never followed;
    entries the policy hides are left out."""
    base = root.resolve()
    target = resolve_in_workspace(base, path, allow_root=True)
    policy.check(base, target, Access.READ, path)
    rel_dir = target.relative_to(base)
    entries: list[dict[str, Any]] = []
    with _os_errors(path):
        fd = _open_dir(base, target)
        try:
            # scandir works on its own duplicate of the descriptor; entry.stat uses fstatat.
            with os.scandir(fd) as scan:
                for entry in scan:
                    if policy.is_hidden(PurePosixPath((rel_dir / entry.name).as_posix())):
                        continue
                    info = entry.stat(follow_symlinks=False)
                    kind = _kind(info.st_mode)
                    entries.append(
                        {
                            "name": entry.name,
                            "path": (rel_dir / entry.name).as_posix(),
                            "type": kind,
                            "size": 0 if kind == "dir" else info.st_size,
                            "mtime": info.st_mtime,
                        }
                    )
        finally:
            os.close(fd)
    return sorted(entries, key=lambda entry: entry["name"])


def read_file(root: Path, path: str, max_bytes: int, policy: PathPolicy = CONFINED) -> bytes:
    base = root.resolve()
    target = resolve_in_workspace(base, path)
    policy.check(base, target, Access.READ, path)
    with _os_errors(path):
        dir_fd = _open_dir(base, target.parent)
        try:
            fd = os.open(target.name, _READ_FLAGS, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise BadRequest(f"{path!r} is a folder; list it instead of reading it", path=path)
            if not stat.S_ISREG(info.st_mode):
                raise BadRequest(f"{path!r} is not a regular file", path=path)
            if info.st_nlink > 1 and policy.hidden:
                # A hard link is a second name for a file, maybe one in a hidden area; which
                # one cannot be told from here, so no file with two names is served.
                raise Forbidden(
                    f"{path!r} has {info.st_nlink} hard links and may be another name for "
                    "harness-managed state; copy it to a new file to read it",
                    path=path,
                )
            if info.st_size > max_bytes:
                raise _too_large(path, info.st_size, max_bytes)
            data = _read_at_most(fd, max_bytes + 1)
        finally:
            os.close(fd)
    if len(data) > max_bytes:  # the file grew after fstat
        raise _too_large(path, len(data), max_bytes)
    return data


def write_file(
    root: Path, path: str, data: bytes, max_bytes: int, policy: PathPolicy = CONFINED
) -> dict[str, Any]:
    """Create or replace a file atomically, creating parent folders; returns what was written."""
    if len(data) > max_bytes:
        raise _too_large(path, len(data), max_bytes)
    base = root.resolve()
    # Where the name leads (a final symlink that points out or into a protected area is refused
    # like any other path), and the name itself, which the rename below replaces.
    policy.check(base, resolve_in_workspace(base, path), Access.CHANGE, path)
    target = resolve_in_workspace(base, path, follow_final=False)
    policy.check(base, target, Access.CHANGE, path)
    name = target.name
    tmp_name = f".vwm-tmp-{secrets.token_hex(8)}"
    with _os_errors(path):
        dir_fd = _open_dir(base, target.parent, create=True)
        try:
            existing = _lstat_or_none(name, dir_fd)
            if existing is not None:
                _check_replaceable(path, existing.st_mode)
            mode = stat.S_IMODE(existing.st_mode) if existing else 0o644
            try:
                _write_new(tmp_name, dir_fd, data, mode)
                # rename replaces whatever entry has that name (even a symlink swapped in since
                # the check) and never writes through it.
                os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name, dir_fd=dir_fd)
                raise
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return {
        "path": target.relative_to(base).as_posix(),
        "size": len(data),
        "created": existing is None,
    }


def delete_path(
    root: Path, path: str, recursive: bool = False, policy: PathPolicy = CONFINED
) -> dict[str, Any]:
    """Delete a file, a symlink (the link only) or, with `recursive`, a folder and its contents."""
    base = root.resolve()
    target = resolve_in_workspace(base, path, follow_final=False)
    policy.check_subtree(base, target, path)
    with _os_errors(path):
        dir_fd = _open_dir(base, target.parent)
        try:
            info = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
            kind = _kind(info.st_mode)
            if kind == "dir":
                if not recursive:
                    raise BadRequest(
                        f"{path!r} is a folder; pass recursive=true to delete it with its contents",
                        path=path,
                    )
                # The fd-based rmtree never follows a symlink inside the tree out of it.
                shutil.rmtree(target.name, dir_fd=dir_fd)
            else:
                os.unlink(target.name, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    return {"path": target.relative_to(base).as_posix(), "type": kind}


# -- helpers ----------------------------------------------------------------------------------


def _relative_parts(user_path: str, allow_root: bool) -> list[str]:
    if not isinstance(user_path, str):
        raise BadRequest("a path must be a string", path=repr(user_path))
    if "\x00" in user_path:
        raise _outside(user_path, "it contains a NUL byte")
    if PurePosixPath(user_path).is_absolute():
        raise _outside(user_path, "it is absolute; use a path relative to the workspace root")
    components = user_path.split("/")
    if ".." in components:
        raise _outside(user_path, "it contains '..'; use a path relative to the workspace root")
    parts = [part for part in components if part not in ("", ".")]
    if not parts and not allow_root:
        raise _outside(user_path, "it names the workspace root; name a file or folder inside it")
    return parts


def _resolve(path: Path, user_path: str) -> Path:
    try:
        return path.resolve()
    except RuntimeError:  # Python 3.11 reports a symlink loop this way
        raise BadRequest(f"{user_path!r} runs into a symbolic link loop", path=user_path) from None
    except OSError as exc:  # a component changed kind while it was being resolved
        raise BadRequest(
            f"{user_path!r} changed while it was being resolved ({exc.strerror}); try again",
            path=user_path,
        ) from None


def _open_dir(base: Path, directory: Path, *, create: bool = False) -> int:
    """A descriptor of `directory`, reached from `base` one component at a time, never through a
    symlink. `directory` comes from `resolve_in_workspace`, so a symlink met here was swapped in
    after the check: ``O_NOFOLLOW`` turns that into ELOOP instead of an escape."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in directory.relative_to(base).parts:
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _os_errors(path: str) -> Iterator[None]:
    """Turn what the OS says into errors a caller can act on."""
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"{path!r} does not exist in the workspace", path=path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _outside(path, "a symbolic link appeared in it while it was in use") from None
        if exc.errno == errno.ENOTDIR:
            raise BadRequest(f"{path!r}: a part of it is a file, not a folder", path=path) from None
        if exc.errno == errno.ENAMETOOLONG:
            raise BadRequest(f"{path!r} is too long a name", path=path) from None
        if exc.errno == errno.EISDIR:
            raise BadRequest(f"{path!r} is a folder", path=path) from None
        raise


def _lstat_or_none(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _check_replaceable(path: str, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise BadRequest(
            f"{path!r} is a symbolic link; write to the file it points to instead", path=path
        )
    if stat.S_ISDIR(mode):
        raise BadRequest(f"{path!r} is a folder; a file cannot replace it", path=path)
    if not stat.S_ISREG(mode):
        raise BadRequest(f"{path!r} is not a regular file", path=path)


def _write_new(name: str, dir_fd: int, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # the umask must not narrow an existing file's mode
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(_READ_CHUNK, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"  # FIFO, socket, device


def _outside(user_path: str, why: str) -> PathOutsideWorkspace:
    return PathOutsideWorkspace(f"path {user_path!r} is refused: {why}", path=user_path)


def _too_large(path: str, size: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{path!r} is {size} bytes, over the limit of {max_bytes}; "
        "fetch it another way (e.g. commit and push it)",
        path=path,
        size=size,
        max_bytes=max_bytes,
    )
