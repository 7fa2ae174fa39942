"""One TLS context per process, shared by every HTTP client.

httpx makes a new `ssl.SSLContext` for each client it builds, loading certifi's CA bundle each
time: about 20 ms of CPU per client, paid when a harness starts (its publisher), on its first
prompt (its meter's client), and by the control plane for each broker loop or reply. A context
is safe to share once made, so it is made once (docs/performance.md).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def verified_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """What ``httpx.AsyncClient(trust_env=trust_env)`` would make by default: certifi's CAs,
    certificates and host names verified (`trust_env`: honour SSL_CERT_FILE / SSL_CERT_DIR)."""
    return httpx.create_ssl_context(trust_env=trust_env)
