"""The blob store contract: bytes by key, whole objects only (skill packages: a few tens of MiB
at most). Implemented by `functions.blobs.local.LocalBlobStore` (a folder) and
`functions.blobs.s3.S3BlobStore` (any S3 API); tests/blobs holds the suite both pass.

Every method refuses a bad key with `InvalidBlobKey` before any I/O (`functions.blobs.keys`),
and raises `BlobStoreUnavailable` when the store cannot be used. `put` replaces a blob whole:
a concurrent `get` sees the old bytes or the new ones, never a mix.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under `key`; `BlobNotFound` if there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob under `key`; nothing happens if there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a blob is stored under `key`."""
        ...
