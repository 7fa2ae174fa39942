"""One TLS context per process, shared by every HTTP client.

httpx makes a new `ssl.SSLContext` for each client it builds, loading a CA bundle each time:
about 20 ms of CPU per client, paid when a harness starts (its publisher), on its first prompt
(its meter's client), and by the control plane for each broker loop or reply. A context is safe
to share once made, so it is made once (docs/performance.md).

Which CAs: those the environment names (``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, as httpx and
OpenSSL read them), else certifi's bundle. Every client trusts the same CAs, also those that
take no proxy from the environment (``trust_env=False``): a platform with a private CA sets it
once for all of VWM's connections.
"""

from __future__ import annotations

import os
import ssl

import httpx

# What httpx reads from the environment for its CAs when a client trusts the environment.
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def verified_context() -> ssl.SSLContext:
    """Certificates and host names verified, against the CAs above. Keyed by what the variables
    say now: a process whose environment changes (a warm pool member handed its session's)
    never uses a context made for other CAs."""
    named = _named_cas()
    context = _contexts.get(named)
    if context is None:  # two threads at once make two, and one is kept: harmless
        context = _contexts[named] = httpx.create_ssl_context(trust_env=any(named))
    return context


def has_verified_context() -> bool:
    """Whether `verified_context` has one made already for what the variables say now."""
    return _named_cas() in _contexts


_contexts: dict[tuple[str | None, ...], ssl.SSLContext] = {}


def _named_cas() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) or None for name in CA_VARIABLES)
