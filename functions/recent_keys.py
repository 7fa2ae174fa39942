"""API keys this process authenticated in the last few seconds.

Every request presents its key, and looking it up was a read transaction (a worker-thread hop,
a session, a query) on the path of every call, the lightest included: under load a
``GET /v1/sessions/{id}`` waited for the thread pool mostly to learn what it learned a moment
before (docs/performance.md). A key found live is remembered for `TTL_S` seconds.

What that costs: a key revoked in the database (`ApiKeys.revoke`) still works in a process that
found it live for up to `TTL_S` seconds more. Wrong and revoked keys are never remembered (each
costs its lookup), and what is kept is the SHA-256 of the presented key, never the key itself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

TTL_S = 5.0
# Beyond this many remembered keys the oldest half is dropped: a bound, not an LRU (a process
# sees a handful of keys; a flood of distinct live keys only costs lookups again).
MAX_KEYS = 1024


class RecentKeys:
    def __init__(self, ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._found: dict[bytes, tuple[str, float]] = {}  # digest -> (scope, remembered until)
        self._lock = threading.Lock()

    def scope(self, presented: str) -> str | None:
        """The scope remembered for `presented`, None when it is not (or no longer) known."""
        digest = _digest(presented)
        with self._lock:
            found = self._found.get(digest)
            if found is None:
                return None
            scope, until = found
            if self._clock() >= until:
                del self._found[digest]
                return None
            return scope

    def remember(self, presented: str, scope: str) -> None:
        with self._lock:
            if len(self._found) >= MAX_KEYS:
                for digest in list(self._found)[: MAX_KEYS // 2]:
                    del self._found[digest]
            self._found[_digest(presented)] = (scope, self._clock() + self._ttl_s)


def _digest(presented: str) -> bytes:
    return hashlib.sha256(presented.encode()).digest()
