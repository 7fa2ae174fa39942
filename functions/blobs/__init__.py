"""Blob storage: skill packages by key, in a folder (`vwm up`) or an S3 bucket (production).

`BlobStore` (base.py) is the contract, with one contract test suite both implementations pass
(tests/blobs). Callers get a store from `open_blob_store(settings.blobs)` and see only the
Protocol and the errors: `BlobNotFound` (404), `BlobStoreUnavailable` (503) and
`InvalidBlobKey` (400, a `ValueError`), all `BlobStoreError`s. Every key goes through
`check_key` (keys.py) before any I/O, in every implementation. docs/operations.md, "Blob storage".
"""

from functions.blobs.base import BlobStore
from functions.blobs.errors import (
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailable,
    InvalidBlobKey,
)
from functions.blobs.factory import open_blob_store
from functions.blobs.keys import check_key

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailable",
    "InvalidBlobKey",
    "check_key",
    "open_blob_store",
]
