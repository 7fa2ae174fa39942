"""The blob store the settings name. Each implementation is imported only when chosen, so
`vwm up` on its folder never loads the AWS SDK."""

from __future__ import annotations

from functions.blobs.base import BlobStore
from functions.settings import BlobSettings


def open_blob_store(settings: BlobSettings) -> BlobStore:
    """A store for `settings` (`ControlPlaneSettings.blobs`). Cheap: the folder store makes its
    folder; the S3 store makes no connection until its first call."""
    if settings.store == "s3":
        from functions.blobs.s3 import S3BlobStore

        return S3BlobStore(settings)
    from functions.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.local_dir)
