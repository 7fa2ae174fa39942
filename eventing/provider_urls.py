"""A model provider's root URL: what a runtime's ``provider_base_url`` (the admin API) and the
harness's ``VWM_PROVIDER_BASE_URL`` hold.

Defined once, here, because both edges take it. Every adapter appends its CLI's own path to the
root (``/v1/messages``, ``/v1/responses``, ``/v1/chat/completions``, ``/v1beta/models/...``), so
a URL that already ends in its API version would be doubled into ``/v1/v1/...``: `provider_root`
strips a trailing ``/v1`` or ``/v1beta`` (and slashes) instead of refusing it, keeps any path
prefix a gateway needs (``https://gw.example/openai/v1`` → ``https://gw.example/openai``), and
refuses what no adapter could append to: a query, a fragment, credentials in the URL (they would
be stored and logged; the key belongs in ``credential_ref``), or a whole endpoint.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from eventing.errors import VwmError

MAX_URL_CHARS = 500

PROVIDER_ROOT_RULE = (
    "the provider's root URL, http(s)://host[:port][/prefix], without a query, a fragment, "
    "credentials or an endpoint path; the CLIs append /v1/... themselves"
)

# An API version as the last path segment: stripped, the adapters add their own.
_TRAILING_VERSION = re.compile(r"/(?:v1|v1beta)/*$")
# What a CLI appends: a URL ending in one is an endpoint, not a root.
_ENDPOINT = re.compile(r"/(?:v1/messages|v1/responses|v1/chat/completions|v1beta/models(?:/.*)?)$")


class ProviderUrlError(VwmError, ValueError):
    """The URL cannot be a provider root; the message says why and what to give instead. Each
    edge reports it its own way: a field error of the admin API, a harness setting error."""

    status = 422
    code = "invalid_provider_url"


def provider_root(url: str) -> str:
    """`url` as the provider's root: scheme and host kept, a trailing API version and slashes
    removed. Raises `ProviderUrlError`."""
    if len(url) > MAX_URL_CHARS or not url.isascii() or any(c.isspace() for c in url):
        raise ProviderUrlError(
            f"must be at most {MAX_URL_CHARS} ASCII characters without spaces: "
            + PROVIDER_ROOT_RULE
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # a port that is not a number raises here
    except ValueError:
        raise ProviderUrlError(f"is not a URL: {PROVIDER_ROOT_RULE}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ProviderUrlError(f"must be an http(s) URL with a host: {PROVIDER_ROOT_RULE}")
    if parts.username is not None or parts.password is not None:
        raise ProviderUrlError(
            "must not hold credentials (user:password@): name the key's variable or Secret in "
            "credential_ref instead"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ProviderUrlError(
            f"must have no query (?...) or fragment (#...): {PROVIDER_ROOT_RULE}"
        )
    path = parts.path.rstrip("/")
    if _ENDPOINT.search(path):
        raise ProviderUrlError(
            f"names an endpoint ({path}), not the provider's root: drop the endpoint path, "
            "e.g. https://api.example.com, not https://api.example.com/v1/messages"
        )
    path = _TRAILING_VERSION.sub("", path).rstrip("/")
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # an IPv6 literal keeps its brackets
        netloc = f"[{parts.hostname}]" + ("" if port is None else f":{port}")
    return f"{parts.scheme.lower()}://{netloc}{path}"
