"""The S3 blob store of production: a bucket of any S3 API (AWS S3, MinIO, R2 ...) through
aioboto3, every key under an optional prefix.

Client lifetime: a client per call. The functions scale to zero and touch blobs rarely (an
upload, a download when a session starts), so a pool kept open would seldom be reused, while
a client is bound to the event loop it was opened on and a store object outlives loops (one per
functions-framework app, per `vwm up`, per test). A client per call needs no closing, so the
Protocol has no lifetime to manage. It costs a connection per call and tens of milliseconds on
the event loop (making the client, loading the CA bundle): fine for a few calls per request; if
blobs ever become hot, keep one client for an app's lifespan instead. The `aioboto3.Session` is
kept: it caches the service model and the credentials it resolved (from the settings, or the
default chain: environment, IRSA's web identity, the instance profile).

Failures are `BlobStoreUnavailable` naming the bucket and its endpoint, with a `reason` detail
(``unreachable``, ``timeout``, ``server_error``, ``no_such_bucket``, ``access_denied``,
``no_credentials``, ``refused``); a missing key is `BlobNotFound`. Credentials appear in no
message and no repr. The client gives up after `BlobSettings.max_attempts` tries bounded by its
connect and read timeouts, so a store that is down is reported in seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from functions.blobs.errors import BlobNotFound, BlobStoreUnavailable
from functions.blobs.keys import check_key
from functions.settings import BlobSettings

# Error codes of S3 APIs that mean "these credentials may not do this".
_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
# Codes of a service that is failing or shedding load: the same call may succeed later.
_TRANSIENT = {"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown"}
_PERMISSIONS = "s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket"


class S3BlobStore:
    """Blobs as objects ``<prefix>/<key>`` in `settings.bucket`."""

    def __init__(self, settings: BlobSettings) -> None:
        if not settings.bucket:
            raise ValueError("an S3 blob store needs a bucket (VWM_S3_BUCKET)")
        self.bucket = settings.bucket
        prefix = settings.prefix.strip("/")
        self.prefix = check_key(prefix) + "/" if prefix else ""
        self.endpoint_url = settings.endpoint_url
        self.endpoint = settings.endpoint_url or f"AWS S3 ({settings.region})"
        # Without keys, boto's default chain finds them (IRSA, instance profile, environment).
        self._session = aioboto3.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
        )
        # Other S3 APIs lag behind AWS's newest default checksums (botocore 1.36), and some
        # refuse requests that carry them: send and check them only where an operation requires.
        checksums = "when_required" if settings.endpoint_url else "when_supported"
        self._config = AioConfig(
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            s3={"addressing_style": settings.addressing_style},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, {self.endpoint!r})"

    def object_key(self, key: str) -> str:
        """The object's key in the bucket: the prefix, then `key` (checked)."""
        return self.prefix + check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        name = self.object_key(key)
        async with self._client(key) as s3:
            await s3.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType="application/octet-stream"
            )

    async def get(self, key: str) -> bytes:
        name = self.object_key(key)
        async with self._client(key) as s3:
            response = await s3.get_object(Bucket=self.bucket, Key=name)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    async def delete(self, key: str) -> None:
        name = self.object_key(key)
        async with self._client(key) as s3:
            # S3 answers 204 whether or not the object was there.
            await s3.delete_object(Bucket=self.bucket, Key=name)

    async def exists(self, key: str) -> bool:
        name = self.object_key(key)
        async with self._client(key) as s3:
            try:
                await s3.head_object(Bucket=self.bucket, Key=name)
                return True
            except ClientError as error:
                if _status(error) != 404:
                    raise
            # A HEAD's 404 has no body to tell a missing key from a missing bucket.
            try:
                await s3.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                if _status(error) == 404:
                    raise self._no_bucket(key) from error
                raise
            return False

    @asynccontextmanager
    async def _client(self, key: str) -> AsyncIterator[Any]:
        """A client for one call; what goes wrong inside becomes this package's errors."""
        try:
            async with self._session.client(
                "s3", endpoint_url=self.endpoint_url, config=self._config
            ) as client:
                yield client
        except ClientError as error:
            raise self._refused(error, key) from error
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as error:
            raise self._unavailable(
                f"found no usable AWS credentials for {self._where()} ({type(error).__name__}): "
                "set VWM_S3_ACCESS_KEY_ID and VWM_S3_SECRET_ACCESS_KEY, or give the pod an IAM "
                "role (IRSA)",
                key,
                reason="no_credentials",
                retryable=False,
            ) from error
        except (BotoCoreError, OSError) as error:
            timeout = isinstance(error, ReadTimeoutError | TimeoutError)
            raise self._unavailable(
                f"could not reach {self._where()} ({type(error).__name__}): check "
                "VWM_S3_ENDPOINT_URL, and that this network reaches it (DNS, firewall, proxy)",
                key,
                reason="timeout" if timeout else "unreachable",
            ) from error

    def _refused(self, error: ClientError, key: str) -> BlobNotFound | BlobStoreUnavailable:
        code, status = _code(error), _status(error)
        if code == "NoSuchKey" or (status == 404 and code in ("404", "NotFound")):
            return BlobNotFound(key)
        if code == "NoSuchBucket":
            return self._no_bucket(key)
        answered = f"{code or 'an error'} (HTTP {status})"
        if code in _DENIED or status == 403:
            return self._unavailable(
                f"{self._where()} refused the credentials: {answered}. Check "
                "VWM_S3_ACCESS_KEY_ID and VWM_S3_SECRET_ACCESS_KEY, or the pod's IAM role: it "
                f"needs {_PERMISSIONS} on the bucket",
                key,
                reason="access_denied",
                retryable=False,
            )
        if code in _TRANSIENT or status >= 500:
            return self._unavailable(
                f"{self._where()} answered {answered}: the service is failing or shedding load; "
                "try again later",
                key,
                reason="server_error",
            )
        return self._unavailable(
            f"{self._where()} refused the request: {answered}. Check VWM_S3_REGION, "
            "VWM_S3_ENDPOINT_URL and VWM_S3_ADDRESSING_STYLE",
            key,
            reason="refused",
            retryable=False,
        )

    def _no_bucket(self, key: str) -> BlobStoreUnavailable:
        return self._unavailable(
            f"the S3 bucket {self.bucket!r} does not exist at {self.endpoint}: create it, or "
            "check VWM_S3_BUCKET and VWM_S3_ENDPOINT_URL",
            key,
            reason="no_such_bucket",
            retryable=False,
        )

    def _where(self) -> str:
        return f"the S3 bucket {self.bucket!r} at {self.endpoint}"

    def _unavailable(
        self, message: str, key: str, *, reason: str, retryable: bool = True
    ) -> BlobStoreUnavailable:
        return BlobStoreUnavailable(
            message,
            retryable=retryable,
            reason=reason,
            bucket=self.bucket,
            endpoint=self.endpoint,
            key=key,
        )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
