"""The CLI adapters, one module per coding-agent CLI, registered in one literal mapping.

`harness.settings` checks `VWM_CLI` against `ADAPTERS`; `harness.app` picks the adapter with
`get_adapter`. The contract every adapter meets is in `harness.adapters.base`.
"""

from __future__ import annotations

from harness.adapters.base import Adapter, UnknownCli
from harness.adapters.claude import ClaudeAdapter
from harness.adapters.codex import CodexAdapter
from harness.adapters.gemini import GeminiAdapter
from harness.adapters.opencode import OpencodeAdapter

ADAPTERS: dict[str, Adapter] = {
    "claude": ClaudeAdapter(),
    "codex": CodexAdapter(),
    "gemini": GeminiAdapter(),
    "opencode": OpencodeAdapter(),
}


def get_adapter(kind: str) -> Adapter:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise UnknownCli(
            f"no adapter for the CLI {kind!r}; choose one of {', '.join(ADAPTERS)}", cli=kind
        ) from None


__all__ = ["ADAPTERS", "Adapter", "get_adapter"]
