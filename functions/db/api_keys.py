"""API keys at rest: issue, authenticate, revoke. Called by the control plane's auth middleware
and by `vwm up` (the first admin key); checking a key's scope against a path is the edge's job.

A key is `vwm_<id>_<secret>`. The id is public and the primary key; only the SHA-256 of the
secret is stored, so a leaked database does not leak usable keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from functions.db.columns import utcnow
from functions.db.errors import NotFoundError
from functions.db.models import ApiKey, ApiKeyScope

KEY_PREFIX = "vwm"
_TOUCH_EVERY = timedelta(minutes=1)


def due_for_touch(key: ApiKey) -> bool:
    """Whether a use of `key` now should be noted in `last_used_at`."""
    return key.last_used_at is None or utcnow() - key.last_used_at > _TOUCH_EVERY


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """Keys look like `vwm_<id>_<secret>`; the id is public, only the secret's hash is kept."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def issue(self, name: str, scope: ApiKeyScope | str) -> tuple[ApiKey, str]:
        """A new key and its full text, which is never stored: show it once."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        row = ApiKey(
            id=key_id, name=name, scope=ApiKeyScope(scope), secret_hash=hash_secret(secret)
        )
        self.db.add(row)
        self.db.flush()
        return row, f"{KEY_PREFIX}_{key_id}_{secret}"

    def authenticate(self, key: str) -> ApiKey | None:
        """The live key `key` names, or None. Reads only: `touch` notes the use."""
        prefix, _, rest = key.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != KEY_PREFIX or not key_id or not secret:
            return None
        row = self.db.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
            return None
        return row

    def touch(self, key_id: str) -> None:
        """Note that key `key_id` was used now (at most once a minute, whoever asks)."""
        row = self.db.get(ApiKey, key_id)
        if row is not None and due_for_touch(row):
            row.last_used_at = utcnow()

    def revoke(self, key_id: str) -> ApiKey:
        row = self.db.get(ApiKey, key_id)
        if row is None:
            raise NotFoundError("API key", key_id)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            self.db.flush()
        return row

    def list_all(self) -> list[ApiKey]:
        return list(self.db.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def has_admin(self) -> bool:
        """Whether any live admin key exists (`vwm up` issues the first one when not)."""
        query = select(ApiKey.id).where(
            ApiKey.scope == ApiKeyScope.ADMIN, ApiKey.revoked_at.is_(None)
        )
        return self.db.scalar(query.limit(1)) is not None
