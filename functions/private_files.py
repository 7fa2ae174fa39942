"""Folders and files only the control plane's own user can read (0700 folders, 0600 files).

The data folder holds the SQLite database, the harness-token key, harness logs and session
workspaces: nothing in it is for other users of the machine. `vwm up` calls `secure_data_dir` on
start (it also tightens a folder made by an older version); the local runtime backend makes its
session folders and log files with `private_dir` and `open_private_append`; the SQLite engine
creates the database file with `create_private_file` before SQLite does (SQLite then gives the
``-wal``/``-shm``/``-journal`` files the database file's mode).

Only what the control plane itself makes is tightened: the content of a session's workspace is
the agent's business (the harness runs with umask 077, so what it makes is private anyway).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
# Files SQLite keeps beside a database file.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _tighten(path: Path, mode: int) -> bool:
    """Take group and other permissions away from `path` (not following a symlink); True if
    it had any."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
        return False
    os.chmod(path, stat.S_IMODE(info.st_mode) & mode)  # not a link: lchmod is not portable
    return True


def private_dir(path: Path) -> bool:
    """Make `path` (and missing parents) and leave it 0700 (parents keep the umask's mode);
    True if an existing folder was looser and got tightened."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return _tighten(path, DIR_MODE)  # a folder made here already is 0700 (less the umask)


def create_private_file(path: Path) -> bool:
    """Create an empty 0600 file unless one exists; True if it was created here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def open_private_append(path: Path) -> BinaryIO:
    """Open `path` for appending, creating it 0600, and tighten it if it was looser."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & FILE_MODE)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def secure_data_dir(data_dir: Path, database: Path | None = None) -> list[Path]:
    """Make the data folder private: the folder, the database file and its side files, the
    key file, ``logs/`` and its files, ``sessions/`` and each session's folder (not what is
    inside a workspace). Returns the paths that were looser and got tightened, for the log."""
    tightened: list[Path] = []
    if private_dir(data_dir):
        tightened.append(data_dir)
    files = [entry for entry in data_dir.iterdir() if entry.is_file()]
    if database is not None:
        files += [database.with_name(database.name + side) for side in ("", *SQLITE_SIDE_FILES)]
    for folder_name in ("logs", "sessions"):
        folder = data_dir / folder_name
        if not folder.is_dir():
            continue
        for entry in [folder, *folder.iterdir()]:
            if entry.is_dir() and _tighten(entry, DIR_MODE):
                tightened.append(entry)
            elif entry.is_file():
                files.append(entry)
    for path in dict.fromkeys(files):  # the database may sit in the data folder too
        if path.is_file() and _tighten(path, FILE_MODE):
            tightened.append(path)
    return tightened
