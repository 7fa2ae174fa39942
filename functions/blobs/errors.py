"""The blob stores' error tree, on the control plane's one base (`functions.errors`).

Each kind states its HTTP status, code and whether a retry may help, so the edge answers any of
them the same way. Messages name the folder or the bucket and its endpoint, and say what to
check; they never hold a credential.
"""

from __future__ import annotations

from typing import Any

from functions.errors import FunctionsError


class BlobStoreError(FunctionsError):
    """Base of every error a blob store raises."""

    code = "blob_store_error"
    status = 500


class InvalidBlobKey(BlobStoreError, ValueError):
    """A key that is not a relative, /-separated name (`functions.blobs.keys.check_key`).
    A caller's mistake, refused before any I/O."""

    code = "invalid_blob_key"
    status = 400


class BlobNotFound(BlobStoreError):
    """No blob under this key (never put, or deleted)."""

    code = "blob_not_found"
    status = 404

    def __init__(self, key: str) -> None:
        super().__init__(f"no blob under the key {key!r} in the blob store", key=key)
        self.key = key


class BlobStoreUnavailable(BlobStoreError):
    """The store could not be used: unreachable, timed out, failing, or set up wrongly (a
    missing bucket, refused credentials, a folder that cannot be written). `details["reason"]`
    says which; `retryable` is narrowed to False where only an operator can fix it."""

    code = "blob_store_unavailable"
    status = 503
    retryable = True

    def __init__(self, message: str, /, *, retryable: bool | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if retryable is not None:
            self.retryable = retryable
