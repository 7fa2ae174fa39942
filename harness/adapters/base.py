"""The adapter contract: what the job runner (`harness.jobs`) needs from each CLI adapter.

An adapter turns a `RunSpec` into a command line and environment (`Invocation`), writes the CLI's
config files under its isolated home (`write_config`), and makes a fresh stateful `Parser` per run
that turns the CLI's own JSON objects into normalized `AgentEvent`s. Adapters never start
processes, read the clock or the environment: everything they need comes in the `RunSpec`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eventing.agent_events import AgentEvent, CostSource, EventKind, RunSummary, Usage
from harness.errors import HarnessError

# The summary's error text when the CLI's output stopped before its terminal event.
MISSING_END = "the CLI output ended without a final event"
# A reported model name longer than this is not one (the telemetry column's width).
MAX_MODEL_CHARS = 200


@dataclass(frozen=True)
class ProviderConfig:
    """A model endpoint to point the CLI at. `base_url` is the root, without a path
    (``http://127.0.0.1:18002``); each adapter appends what its CLI expects."""

    base_url: str
    api_key: str
    custom: bool = True
    """An endpoint the runtime named (one model API for every call). False: the vendors' own
    endpoints, reached through the session's meter at `base_url` (opencode then configures its
    built-in vendor providers rather than one custom provider)."""


@dataclass(frozen=True)
class Prices:
    """USD per million tokens. `reasoning` defaults to the output price."""

    input: float
    cache_read: float
    cache_write: float
    output: float
    reasoning: float | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run of the CLI.

    `workspace` is the session workspace root; `cwd` is ``workspace/session_repo``, where the CLI
    runs; `home` holds all CLI config and state (so sessions survive a harness restart);
    `instruction_file` is the instruction file the harness wrote at the workspace root.
    """

    prompt: str
    workspace: Path
    cwd: Path
    home: Path
    instruction_file: Path
    binary: str
    model: str | None = None
    resume_id: str | None = None
    system_prompt: str | None = None
    provider: ProviderConfig | None = None


@dataclass(frozen=True)
class Invocation:
    """The command line, and only the variables the adapter sets: the runner merges them over a
    minimal base environment and always runs with stdin=/dev/null and cwd=`RunSpec.cwd`."""

    argv: list[str]
    env: dict[str, str]


class AdapterParseError(HarnessError):
    """The CLI wrote an event of a type the adapter knows, but without a key it needs."""

    status = 502
    code = "cli_output_malformed"


class AdapterConfigError(HarnessError):
    """The run cannot be set up as asked (for example a provider without a model for opencode)."""

    status = 400
    code = "cli_config_invalid"


class UnknownCli(HarnessError):
    status = 400
    code = "unknown_cli"


def event(kind: EventKind, **data: Any) -> AgentEvent:
    return AgentEvent(kind=kind, data=data)


def estimate_cost(usage: Usage, prices: Prices) -> float:
    """USD for `usage`. Reasoning tokens are part of `output`, so they are priced instead of, not
    on top of, output tokens."""
    reasoning_price = prices.output if prices.reasoning is None else prices.reasoning
    total = (
        usage.input * prices.input
        + usage.cache_read * prices.cache_read
        + usage.cache_write * prices.cache_write
        + max(0, usage.output - usage.reasoning) * prices.output
        + usage.reasoning * reasoning_price
    )
    return round(total / 1_000_000, 10)


class Parser(ABC):
    """Turns one run's CLI objects into normalized events. Stateful, pure, one per run.

    Subclasses implement `_feed` with ``match data.get("type")``; they read required keys with
    ``data["key"]`` so that a known event missing one becomes an `AdapterParseError`, and they end
    the run with `_end` when the CLI's terminal event arrives.
    """

    cli: str = ""

    def __init__(self, *, usage_baseline: Usage | None = None, prices: Prices | None = None):
        self._baseline = usage_baseline
        self._prices = prices
        self._session_id: str | None = None
        self._model: str | None = None
        self._announced = False
        self._final_text = ""
        self._usage = Usage()
        self._reported_cost: float | None = None
        self._last_error: str | None = None
        self._summary: RunSummary | None = None

    # -- the contract ----------------------------------------------------------------------------

    def feed(self, data: dict[str, Any]) -> list[AgentEvent]:
        try:
            return self._feed(data)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            kind = data.get("type") if isinstance(data, dict) else None
            raise AdapterParseError(
                f"the {self.cli} CLI wrote a {kind!r} event this adapter cannot read "
                f"({type(exc).__name__}: {exc}); the CLI's output format may have changed",
                cli=self.cli,
                event=data,
            ) from exc

    def finish(self, exit_code: int | None) -> list[AgentEvent]:
        """The terminal events if the output did not carry them; `exit_code` None = unknown."""
        if self.done:
            return []
        return self._end(is_error=True, error=self._missing_end(exit_code))

    @property
    def done(self) -> bool:
        return self._summary is not None

    @property
    def summary(self) -> RunSummary:
        if self._summary is not None:
            return self._summary
        return RunSummary(
            cli_session_id=self._session_id,
            final_text=self._final_text,
            usage=self._usage,
            model=self._model,
        )

    @property
    def usage_checkpoint(self) -> Usage | None:
        """What to pass as `usage_baseline` to the next run on this CLI session (codex only)."""
        return None

    # -- for subclasses --------------------------------------------------------------------------

    @abstractmethod
    def _feed(self, data: dict[str, Any]) -> list[AgentEvent]: ...

    def _session(self, session_id: str | None, model: str | None = None) -> list[AgentEvent]:
        """A `session_started` event the first time the CLI names its session."""
        if session_id and self._session_id is None:
            self._session_id = session_id
        if self._model is None:
            self._reported_model(model)
        if self._announced or self._session_id is None:
            return []
        self._announced = True
        return [
            event(EventKind.SESSION_STARTED, cli_session_id=self._session_id, model=self._model)
        ]

    def _reported_model(self, model: object) -> None:
        """The model the CLI names for the run, replacing an earlier one: a later, more exact
        report (the provider's answer after the start event's alias) wins. Not a name: ignored."""
        if isinstance(model, str) and model and len(model) <= MAX_MODEL_CHARS:
            self._model = model

    def _error(self, message: str, *, fatal: bool, code: str | None = None) -> AgentEvent:
        self._last_error = message
        return event(EventKind.ERROR, message=message, fatal=fatal, code=code)

    def _raw(self, data: dict[str, Any]) -> list[AgentEvent]:
        return [event(EventKind.RAW, event=data)]

    def _end(self, *, is_error: bool, error: str | None = None) -> list[AgentEvent]:
        """The terminal `usage` and `result` events, once per run."""
        if self.done:
            return []
        events = self._session(self._session_id)
        cost, source = self._cost()
        self._summary = RunSummary(
            cli_session_id=self._session_id,
            final_text=self._final_text,
            usage=self._usage,
            cost_usd=cost,
            cost_source=source,
            is_error=is_error,
            error=error if is_error else None,
            model=self._model,
        )
        events.append(
            event(EventKind.USAGE, **self._usage.model_dump(), cost_usd=cost, cost_source=source)
        )
        events.append(AgentEvent(kind=EventKind.RESULT, data=self._summary.model_dump(mode="json")))
        return events

    def _cost(self) -> tuple[float | None, CostSource | None]:
        if self._reported_cost is not None:
            return self._reported_cost, "reported"
        if self._prices is not None:
            return estimate_cost(self._usage, self._prices), "estimated"
        return None, None

    def _missing_end(self, exit_code: int | None) -> str:
        if exit_code is None:
            message = MISSING_END
        elif exit_code < 0:
            message = f"the CLI was stopped by signal {-exit_code} before its final event"
        else:
            message = f"the CLI exited with code {exit_code} without a final event"
        if self._last_error:
            message += f"; last error: {self._last_error}"
        return message


class Adapter(Protocol):
    """One coding-agent CLI. Implementations are stateless; `harness.adapters.ADAPTERS` lists them."""

    kind: str
    instruction_file_name: str

    def write_config(self, spec: RunSpec) -> None:
        """Create the CLI's config under `spec.home`; idempotent, and call it before every run."""
        ...

    def skills_dir(self, home: Path) -> Path | None:
        """The folder under the CLI home `home` where the CLI discovers user-level skills, one
        ``<name>/SKILL.md`` folder each (`harness.skills` installs them there); None when the
        CLI at its pinned version reads no skills. Never inside session_repo, which is pushed.
        docs/adapters.md ("Skills") says what each CLI does with them."""
        ...

    def invocation(self, spec: RunSpec) -> Invocation: ...

    def new_parser(
        self, *, usage_baseline: Usage | None = None, prices: Prices | None = None
    ) -> Parser: ...

    def is_unknown_session(self, exit_code: int | None, stderr: str) -> bool:
        """Whether a failed resumed run failed because the CLI has no record of the session id
        (then the harness starts a new CLI session instead of failing every later job)."""
        ...
