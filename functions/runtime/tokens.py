"""Harness tokens, derived and never stored: token = HMAC-SHA256(key, session id).

A session's harness accepts one bearer token (``VWM_SESSION_TOKEN``). The control plane derives
it from the session id under one secret key whenever it needs it, so no token sits in a row, a
handle or a log, and `RuntimeBackend.endpoint` stays free of I/O. The key comes from
``VWM_TOKEN_KEY_FILE`` in production (a Kubernetes Secret mounted as a file, shared by every
function) or, by default, from ``<data dir>/harness-token.key``, made 0600 on first use.

The token is the same for every launch of a session (see docs/runtime.md for why). Changing the
key changes every token: running harnesses then refuse the control plane, and the backend
replaces each on its next `ensure_running`.

Used by the runtime backends (`functions.runtime.local`) and built by `functions.context`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from functions.runtime.errors import TokenKeyUnavailable

logger = logging.getLogger(__name__)

KEY_FILE_NAME = "harness-token.key"
MIN_KEY_BYTES = 32
# Domain separation: the same key must never yield a token that means something else.
_LABEL = b"vwm harness token v1\0"
_CHARGE_LABEL = b"vwm charge token v1\0"


class TokenKey:
    """The secret the harness tokens are derived from. Never printed: its repr hides it."""

    def __init__(self, secret: bytes, source: str) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise TokenKeyUnavailable(
                f"the harness token key in {source} has {len(secret)} bytes; it needs at least "
                f"{MIN_KEY_BYTES} (make one with `openssl rand -base64 48`)"
            )
        self._secret = secret
        self.source = source

    def __repr__(self) -> str:
        return f"TokenKey(source={self.source!r})"

    def token(self, session_id: str) -> str:
        """The bearer token of `session_id`'s harness (43 URL-safe characters)."""
        return self._derive(_LABEL, session_id)

    def charge_token(self, session_id: str) -> str:
        """The bearer token `session_id`'s meter charges its budget with (functions.budgets):
        under its own label, so it never equals, nor opens what, the harness token does."""
        return self._derive(_CHARGE_LABEL, session_id)

    def _derive(self, label: bytes, session_id: str) -> str:
        digest = hmac.new(self._secret, label + session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @classmethod
    def from_file(cls, path: Path) -> TokenKey:
        """A key an operator provides (``VWM_TOKEN_KEY_FILE``): its content, surrounding
        whitespace stripped. It must exist: a missing production key is a deployment error."""
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise TokenKeyUnavailable(
                f"cannot read the harness token key file {path} ({exc.strerror}); check "
                "VWM_TOKEN_KEY_FILE and that the Secret is mounted"
            ) from None
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            logger.warning(
                "the harness token key file is readable by other users; mount it with mode 0400",
                extra={"path": str(path)},
            )
        return cls(secret, str(path))

    @classmethod
    def in_folder(cls, folder: Path) -> TokenKey:
        """The key in `folder` (the data folder), made with 48 random bytes on first use. Two
        processes starting at once agree: the file appears whole (written aside, then linked)
        and the first link wins."""
        path = folder / KEY_FILE_NAME
        if not path.exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            aside = folder / f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, base64.b64encode(secrets.token_bytes(48)) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(aside, path)
                logger.info("harness token key created", extra={"path": str(path)})
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                aside.unlink()
        elif stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
            logger.warning("harness token key was readable by others; now 0600")
        return cls.from_file(path)
