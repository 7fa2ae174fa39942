"""One TLS context per process, shared by every HTTP client.

httpx makes a new `ssl.SSLContext` for each client it builds, loading certifi's CA bundle each
time: about 20 ms of CPU per client, paid when a harness starts (its publisher), on its first
prompt (its meter's client), and by the control plane for each broker loop or reply. A context
is safe to share once made, so it is made once (docs/performance.md).
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx

# What httpx reads from the environment for its CAs when a client trusts the environment.
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def verified_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """What ``httpx.AsyncClient(trust_env=trust_env)`` would make by default: certifi's CAs,
    certificates and host names verified (`trust_env`: honour SSL_CERT_FILE / SSL_CERT_DIR).
    Without those variables both kinds of client get the same context."""
    return _context(trust_env and any(os.environ.get(name) for name in CA_VARIABLES))


@functools.cache
def _context(from_environment: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=from_environment)
