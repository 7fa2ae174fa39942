"""The ledger: one entry per request the fake provider served, with the usage it reported.

Written by the app (on the server's event loop), read by tests from other threads, hence the lock.
Keys are never stored: only `key_id`, a short SHA-256 prefix that tells keys apart.

Two sums of usage. `counted_usage()`: the agent's turns (calls that offered tools), which is what
a CLI that leaves its side calls out of its own total reports. `billed_usage()`: every model call,
side calls too: what the provider would bill, what a meter that sees every call must add up to,
and what a CLI whose total includes its side calls reports. `mark()` and `after_seq=` take the
entries of one job out of a ledger shared by many.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from fake_provider.usage import ZERO, Usage

# What an entry keeps of the text a CLI offered the model (its system prompt, the context blocks it
# put in user messages, each tool's description), so a test can see what a CLI put there (its
# skills, its instructions) without the ledger growing with every request's full body. Longer
# text is cut at the limit.
SYSTEM_LIMIT = 256 * 1024
TOOL_DESCRIPTION_LIMIT = 16 * 1024


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def key_id(api_key: str | None) -> str | None:
    """A stable, non-reversible id of an API key (first 12 hex digits of its SHA-256)."""
    if not api_key:
        return None
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LedgerEntry:
    """One request. `kind` is "model" for a model call, else what the endpoint was for.

    `counted` is true for model calls that offered tools (an agent's turn) and were answered.
    Auxiliary calls (no tools offered: titles, routing, summaries) report `AUX`, not zero, but
    are not counted: the counted sum is what a CLI that leaves its side calls out of its own total
    reports. `usage` is what the client could read off the wire (zero for a refused call).
    """

    seq: int
    time: float
    api: str
    method: str
    path: str
    kind: str
    status: int
    model: str | None = None
    key_id: str | None = None
    stream: bool = False
    tools_offered: tuple[str, ...] = ()
    tool_descriptions: tuple[str, ...] = ()
    """Each offered tool's description ("" for none), in the order of `tools_offered`."""
    system: str = ""
    """The request's system prompt (system and developer messages, instructions), clipped."""
    injected_context: str = ""
    """The context blocks the CLI put in user messages (Claude Code's `<system-reminder>`s,
    Codex's `<environment_context>`, ...), clipped."""
    prompt: str = ""
    answer: dict[str, Any] = field(default_factory=dict)
    usage: Usage = ZERO
    counted: bool = False
    finished: bool = True
    """False while a streamed answer is still being sent (or after the client went away)."""

    def offers(self, text: str) -> bool:
        """Whether `text` was offered to the model by the CLI rather than asked by its user: in
        the system prompt, an injected context block or a tool's description."""
        return (
            text in self.system
            or text in self.injected_context
            or any(text in d for d in self.tool_descriptions)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "api": self.api,
            "method": self.method,
            "path": self.path,
            "kind": self.kind,
            "status": self.status,
            "model": self.model,
            "key_id": self.key_id,
            "stream": self.stream,
            "tools_offered": list(self.tools_offered),
            "tool_descriptions": list(self.tool_descriptions),
            "system": self.system,
            "injected_context": self.injected_context,
            "prompt": self.prompt,
            "answer": self.answer,
            "usage": self.usage.as_dict(),
            "counted": self.counted,
            "finished": self.finished,
        }


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._next_seq = 1

    def record(self, **fields: Any) -> LedgerEntry:
        with self._lock:
            entry = LedgerEntry(seq=self._next_seq, time=time.time(), **fields)
            self._next_seq += 1
            self._entries.append(entry)
            return entry

    def mark_finished(self, seq: int) -> None:
        with self._lock:
            for index, entry in enumerate(self._entries):
                if entry.seq == seq:
                    self._entries[index] = replace(entry, finished=True)
                    return

    def mark(self) -> int:
        """The seq of the last entry recorded so far (0 before any): pass it as `after_seq` later
        to take only what came after, such as one job's calls. `reset()` keeps marks valid."""
        with self._lock:
            return self._next_seq - 1

    def entries(
        self, *, key: str | None = None, kind: str | None = None, after_seq: int | None = None
    ) -> list[LedgerEntry]:
        """Entries in order, optionally only those made with API key `key`, of one kind, or
        recorded after the entry `after_seq` (see `mark()`)."""
        wanted = key_id(key) if key is not None else None
        with self._lock:
            return [
                entry
                for entry in self._entries
                if (wanted is None or entry.key_id == wanted)
                and (kind is None or entry.kind == kind)
                and (after_seq is None or entry.seq > after_seq)
            ]

    def model_calls(
        self, *, key: str | None = None, after_seq: int | None = None
    ) -> list[LedgerEntry]:
        return self.entries(key=key, kind="model", after_seq=after_seq)

    def counted_usage(self, *, key: str | None = None, after_seq: int | None = None) -> Usage:
        """Sum of the usage reported to counted calls (agent turns): what a CLI that leaves its
        side calls out of its own total reports."""
        calls = self.model_calls(key=key, after_seq=after_seq)
        return Usage.total(call.usage for call in calls if call.counted)

    def billed_usage(self, *, key: str | None = None, after_seq: int | None = None) -> Usage:
        """Sum of the usage reported to every model call, counted or not: what the provider
        would bill. The fake bills what it reports, so a Chat stream that did not ask for usage
        (no `stream_options.include_usage`) is billed nothing, and a refused call nothing."""
        return Usage.total(call.usage for call in self.model_calls(key=key, after_seq=after_seq))

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def as_dict(self) -> dict[str, Any]:
        entries = self.entries()
        calls = [entry for entry in entries if entry.kind == "model"]
        return {
            "entries": [entry.as_dict() for entry in entries],
            "counted_usage": Usage.total(c.usage for c in calls if c.counted).as_dict(),
            "billed_usage": Usage.total(c.usage for c in calls).as_dict(),
        }
