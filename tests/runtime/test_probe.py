"""Readiness probes (functions.runtime.probe): a client is made for every readiness wait, and
each uses the process's one TLS context (eventing.tls), which verifies certificates."""

from __future__ import annotations

import ssl

from eventing.tls import verified_context
from functions.runtime import probe


async def test_probe_clients_use_the_process_tls_context() -> None:
    shared = verified_context()
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    for _ in range(2):
        async with probe.client(1.0) as http:
            # httpx keeps the context its connections wrap sockets with on the pool.
            assert http._transport._pool._ssl_context is shared  # type: ignore[attr-defined]
