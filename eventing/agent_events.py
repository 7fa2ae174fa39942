"""The normalized agent event schema: one shape for the output of every coding-agent CLI.

Adapters in `harness.adapters` turn each CLI's own JSON lines into these events; the harness stamps
them with a job id and sequence number and streams them; the control plane stores and relays them.

Event kinds and their `data`:

- ``session_started``  ``{cli_session_id, model}``: the CLI announced its session (resume) id.
- ``text_delta``       ``{text}``: a piece of assistant text while it streams (token level).
- ``assistant_text``   ``{text}``: one complete block of assistant text.
- ``tool_call``        ``{id, name, input}``: the agent invoked a tool.
- ``tool_result``      ``{id, output, is_error}``: a tool finished.
- ``usage``            ``Usage`` fields plus ``cost_usd`` and ``cost_source``: the run's total.
- ``result``           ``RunSummary`` fields: the run ended (terminal; exactly one per run).
- ``error``            ``{message, fatal, code}``: an error the CLI reported; ``fatal`` false means
                       it is a warning or a retry and the run goes on.
- ``raw``              ``{event}``: a CLI event of a type the adapter does not know, passed through.
- ``stderr``           ``{tail}``: the bounded tail of the CLI's stderr, sent once at the end.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from eventing.lazy_models import LazyModel


class EventKind(StrEnum):
    SESSION_STARTED = "session_started"
    TEXT_DELTA = "text_delta"
    ASSISTANT_TEXT = "assistant_text"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    USAGE = "usage"
    RESULT = "result"
    ERROR = "error"
    RAW = "raw"
    STDERR = "stderr"
    # Not the CLI's: one model call through the session's meter as it ended
    # (`eventing.model_calls.ModelCall`), logged and streamed with the rest.
    MODEL_CALL = "model_call"


CostSource = Literal["reported", "estimated"]
UsageSource = Literal["metered", "cli"]


class Usage(LazyModel):
    """Token counts of one run, normalized across CLIs.

    ``input`` never includes cached tokens: ``input + cache_read + cache_write`` is the whole prompt.
    ``output`` is every generated token, reasoning included; ``reasoning`` is the part of ``output``
    that was reasoning, never to be added on top of it.
    """

    model_config = ConfigDict(frozen=True)

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in _USAGE_FIELDS})

    def __sub__(self, other: Usage) -> Usage:
        """The difference of two cumulative counts, never below zero (a reset thread)."""
        return Usage(
            **{name: max(0, getattr(self, name) - getattr(other, name)) for name in _USAGE_FIELDS}
        )


_USAGE_FIELDS = tuple(Usage.model_fields)


class AgentEvent(LazyModel):
    """One normalized event as an adapter produces it, before the harness numbers it."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    data: dict[str, Any] = Field(default_factory=dict)


class RunSummary(LazyModel):
    """What one CLI run came to. Also the ``data`` of the terminal ``result`` event."""

    cli_session_id: str | None = None
    final_text: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    cost_source: CostSource | None = None
    is_error: bool = False
    error: str | None = None
    # The model the CLI said it ran (its provider's answer, else its start event), None when its
    # output names none (codex and opencode never do): telemetry then keeps the model asked for.
    model: str | None = None
    # Where `usage` comes from: "metered" when the session's proxy measured every model call
    # (`usage` is their sum, `eventing.model_calls.metered_total`, and the CLI's own report is
    # kept in `cli_usage`), "cli" when it is the CLI's report (no proxy, or an older harness).
    cli_usage: Usage | None = None
    usage_source: UsageSource = "cli"
    usage_mismatch: bool = False  # metered and CLI-reported totals differ
