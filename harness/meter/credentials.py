"""The session's placeholder key, and its swap for the real one on the way to the provider.

The CLI is given a placeholder (`new_placeholder`) in the variable or config its adapter uses
for the key; the real key stays in the harness. The meter accepts a call only when it carries
the placeholder, in whichever place the CLI's client sends a key (`x-api-key`,
``Authorization: Bearer``, `x-goog-api-key`, or Gemini's `?key=`), and forwards it with the real
key in that same place. A call without it is refused: another process on the machine (another
session's agent, say) cannot spend this session's key through its meter.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

_BEARER = "bearer "
_KEY_HEADERS = frozenset({b"x-api-key", b"x-goog-api-key"})


def new_placeholder() -> str:
    """A key for the CLI that works nowhere but this session's meter."""
    return "vwm-meter-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class KeySwap:
    placeholder: str = field(repr=False)

    def _is_placeholder(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.placeholder.encode())

    def swap(
        self, headers: list[tuple[bytes, bytes]], query: bytes, real_key: str
    ) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        """The headers and query string to forward, the placeholder swapped for `real_key`
        (left out altogether when empty: a provider that takes no key); None when the request
        carries no placeholder (or some other key)."""
        swapped = False
        forwarded: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            lowered = name.lower()
            text = value.decode("latin-1")
            if lowered in _KEY_HEADERS:
                if not self._is_placeholder(text.strip()):
                    return None
                swapped = True
                if real_key:
                    forwarded.append((lowered, real_key.encode("latin-1")))
                continue
            if lowered == b"authorization":
                if not text.lower().startswith(_BEARER) or not self._is_placeholder(
                    text[len(_BEARER) :].strip()
                ):
                    return None
                swapped = True
                if real_key:
                    forwarded.append((lowered, b"Bearer " + real_key.encode("latin-1")))
                continue
            forwarded.append((name, value))
        if query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if any(name == "key" for name, _ in pairs):
                if not all(self._is_placeholder(v) for name, v in pairs if name == "key"):
                    return None
                swapped = True
                kept = [(n, v) for n, v in pairs if n != "key"]
                if real_key:
                    kept.append(("key", real_key))
                query = urlencode(kept).encode("latin-1")
        return (forwarded, query) if swapped else None
