"""Where the meter sends a call, and with which key.

A runtime with a provider URL sends every call there with its credential. A runtime without
one uses the vendors' own endpoints: each call goes to the vendor whose API it speaks (the path
tells), with that vendor's key from the harness's environment, as the CLI would have used it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Upstream:
    root: str
    """Scheme, host and port (no path): the request's path is appended as the CLI sent it."""
    key: str = field(repr=False)


@dataclass(frozen=True)
class Vendor:
    root: str
    key_env: tuple[str, ...]


ANTHROPIC = Vendor("https://api.anthropic.com", ("ANTHROPIC_API_KEY",))
OPENAI = Vendor("https://api.openai.com", ("OPENAI_API_KEY", "CODEX_API_KEY"))
GOOGLE = Vendor("https://generativelanguage.googleapis.com", ("GEMINI_API_KEY", "GOOGLE_API_KEY"))

# The vendor variables the harness reads the keys from: never passed on to the CLI.
VENDOR_KEY_ENV = (*ANTHROPIC.key_env, *OPENAI.key_env, *GOOGLE.key_env)


def vendor_of(path: str) -> Vendor:
    """The vendor whose API `path` belongs to: Gemini's are versioned ``/v1beta``, ``/v1alpha``
    or name a ``models/...:method``; Anthropic's are ``/v1/messages...``; the rest are OpenAI's."""
    bare = path.split("?", 1)[0]
    if bare.startswith(("/v1beta/", "/v1alpha/")) or (
        bare.startswith("/v1/models/") and ":" in bare
    ):
        return GOOGLE
    if bare.startswith(("/v1/messages", "/v1/complete")):
        return ANTHROPIC
    return OPENAI


class Upstreams:
    """The upstream of each call: the configured provider's, else the vendor's by path."""

    def __init__(
        self, provider_root: str | None, provider_key: str, environ: Mapping[str, str]
    ) -> None:
        self._fixed = Upstream(provider_root, provider_key) if provider_root else None
        self._vendor_keys = {
            vendor.root: next((environ[n] for n in vendor.key_env if environ.get(n)), "")
            for vendor in (ANTHROPIC, OPENAI, GOOGLE)
        }

    @property
    def configured(self) -> Upstream | None:
        """The provider the runtime named, None for the vendors' own endpoints."""
        return self._fixed

    def for_path(self, path: str) -> Upstream:
        if self._fixed is not None:
            return self._fixed
        root = vendor_of(path).root
        return Upstream(root, self._vendor_keys[root])
