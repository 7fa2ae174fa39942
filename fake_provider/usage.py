"""Token usage in one normalized shape, shared by the ledger, the script and every wire API.

Each wire module encodes a `Usage` into its API's own fields and decodes those fields back; the
ledger stores the decoded value, so it holds exactly what a client could read off the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Usage:
    """Tokens of one model call.

    `input` is the uncached prompt (prompt minus `cache_read` minus `cache_write`). `output` is
    every generated token, reasoning included (that is how all four APIs bill); `reasoning` is the
    part of `output` that was reasoning, so it is never added on top of `output`.
    """

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        """The whole prompt: uncached, cache-read and cache-written tokens."""
        return self.input + self.cache_read + self.cache_write

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input=self.input + other.input,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
            output=self.output + other.output,
            reasoning=self.reasoning + other.reasoning,
        )

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        result = cls()
        for usage in usages:
            result = result + usage
        return result

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Usage:
        return cls(**{name: int(data.get(name, 0)) for name in cls.__dataclass_fields__})


ZERO = Usage()

# What every counted model call (an agent's turn) reports: a 100-token prompt of which 5 were read
# from the cache and 7 written to it, and 12 output tokens of which 3 were reasoning. An API without
# a field for a part (no cache writes in Chat Completions or Gemini, no reasoning count in
# Anthropic) folds it into the nearest field it has, so the prompt stays 100 and the output 12.
FIXED = Usage(input=88, cache_read=5, cache_write=7, output=12, reasoning=3)

# What every auxiliary model call reports (no tools offered: a title, a routing decision, a
# summary). Not zero, so a side call a meter missed shows as a difference. Only uncached input and
# output, which every API has fields for, so each API reports exactly this, nothing folded. FIXED
# always reads from the cache and AUX never does, so a sum of both tells how many of each it holds.
AUX = Usage(input=20, output=4)
