"""What a blob key may be: the one check every store runs on a key before any I/O, so a key
that one implementation takes, the other takes too, and none ever names something outside the
store (a folder's parent, another prefix of the bucket).

A key is a relative, /-separated name: no empty key, no leading ``/``, no empty, ``.`` or
``..`` part, no backslash, no control (non-printable) character; at most 1024 UTF-8 bytes
(S3's limit) and each part at most 250 bytes (a file name, with room for the folder store's
marker).
"""

from __future__ import annotations

from functions.blobs.errors import InvalidBlobKey

MAX_KEY_BYTES = 1024
MAX_PART_BYTES = 250


def check_key(key: str) -> str:
    """`key` itself if it is a valid blob key, else `InvalidBlobKey` saying why."""
    problem = _problem(key)
    if problem is None:
        return key
    shown = key[:120] if isinstance(key, str) else type(key).__name__
    raise InvalidBlobKey(
        f"blob key {shown!r} {problem}: use a relative, /-separated name such as "
        "'skills/lint/1.0.0.tar.gz'",
        key=shown,
    )


def _problem(key: object) -> str | None:
    if not isinstance(key, str):
        return "is not a string"
    if not key:
        return "is empty"
    if key.startswith("/"):
        return "is absolute"
    if "\\" in key:
        return "has a backslash"
    # str.isprintable is False for control, format and separator characters (not the space).
    if not key.isprintable():
        return "has a control character"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    parts = key.split("/")
    if "" in parts:
        return "has an empty part (// or a trailing /)"
    if "." in parts or ".." in parts:
        return "has a '.' or '..' part"
    if any(len(part.encode()) > MAX_PART_BYTES for part in parts):
        return f"has a part longer than {MAX_PART_BYTES} bytes"
    return None
