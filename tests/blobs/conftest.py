"""Fixtures for the blob store tests: the S3 API of moto in server mode (tests/support/moto_s3.py),
one server per test process and a new bucket per test."""

from __future__ import annotations

from tests.support.moto_s3 import s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]
