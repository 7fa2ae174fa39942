"""Which URLs a subscription may deliver to (its `sink` and its dead-letter sink).

The same policy as repository URLs (`functions.repo_policy`), read for HTTP: http or https only,
no credentials in the URL (they would be stored and logged; a sink authenticates by other
means), no whitespace or control characters, a host. A sink on this machine (``localhost``,
a loopback or unspecified address) is a local URL: allowed only where local repositories are
(the ``allow_local_repos`` setting, on in `vwm up`), since a control plane in a cluster would
otherwise POST to itself. Errors are `RepoPolicyError` (422) with codes ``sink_url_invalid``
and ``sink_url_not_allowed``.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from urllib.parse import urlsplit

from functions.repo_policy import ALLOW_LOCAL_REPOS, RepoPolicyError

MAX_URL_CHARS = 2048


def is_local_host(host: str) -> bool:
    """``localhost`` (and names under it), a loopback or an unspecified address."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_sink_url(url: str, *, allow_local: bool, what: str = "the sink") -> str:
    """`url` if a subscription may deliver to it; raises `RepoPolicyError` saying what to fix."""

    def invalid(problem: str) -> RepoPolicyError:
        return RepoPolicyError(f"{what} {problem}", code="sink_url_invalid", field=what)

    if not url:
        raise invalid("is empty; give an http:// or https:// URL")
    if len(url) > MAX_URL_CHARS:
        raise invalid(f"is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in url):
        raise invalid("contains whitespace or control characters; remove them")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError as exc:
        raise invalid(f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise invalid("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise invalid("must not carry credentials (user:password@); remove them")
    if not host:
        raise invalid("has no host")
    if is_local_host(host) and not allow_local:
        raise RepoPolicyError(
            f"{what} {host} is on this machine, which this control plane refuses (as it does "
            "local repositories); use a sink other services can reach, or an admin can allow "
            'local sinks with PUT /v1/admin/settings/allow_local_repos {"value": true}',
            code="sink_url_not_allowed",
            setting=ALLOW_LOCAL_REPOS,
        )
    return url
