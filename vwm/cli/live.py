"""Printing a job's events live, as `vwm prompt` and `vwm job events` do.

Assistant text goes to stdout as it streams, so ``vwm prompt ... > answer.md`` captures just the
answer. Tool calls (one dim line each), warnings, the waiting spinner and the final status line go
to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from vwm.cli.output import cost_text, stderr, tokens_text
from vwm.sdk.models import Event, JobResult

TOOL_SUMMARY_CHARS = 100
_TOOL_SUMMARY_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description")


class LiveView:
    """Turns events into terminal output; remembers the job id and the result for the caller."""

    def __init__(self, console: Console | None = None) -> None:
        self._err = console or stderr()
        self._mid_line = False  # stdout ended without a newline
        self._block_streamed = False  # the current text block came as deltas already
        self.job_id: str | None = None
        self.result: JobResult | None = None

    def show(self, event: Event) -> None:
        self.job_id = self.job_id or event.job_id
        data = event.data
        match event.kind:
            case "text_delta":
                self._write(str(data.get("text", "")))
                self._block_streamed = True
            case "assistant_text":
                if not self._block_streamed:
                    self._write(str(data.get("text", "")))
                self._end_line()
                self._block_streamed = False
            case "tool_call":
                self._note(f"→ {data.get('name', 'tool')} {tool_summary(data.get('input'))}", "dim")
            case "tool_result" if data.get("is_error"):
                self._note(f"✗ {one_line(str(data.get('output', '')))}", "dim red")
            case "error":
                self._note(f"! {data.get('message', 'error')}", "yellow")
            case "job_finished":
                self.result = JobResult.from_event(event)
                self._note(final_line(self.result), "green" if self.result.ok else "red", wrap=True)
                if self.result.error and not self.result.ok:
                    self._note(f"error: {self.result.error}", "red", wrap=True)
            case _:
                pass  # usage, result, raw, stderr: in the final line, or not for people

    def follow(self, events: Iterable[Event]) -> JobResult | None:
        """Show every event, with a spinner (on a terminal) until the first one comes."""
        status = self._err.status("waiting for the worker…") if self._err.is_terminal else None
        if status is not None:
            status.start()
        try:
            for event in events:
                if status is not None:
                    status.stop()
                    status = None
                self.show(event)
        finally:
            if status is not None:
                status.stop()
            self._end_line()
        return self.result

    def _write(self, text: str) -> None:
        if text:
            typer.echo(text, nl=False)
            self._mid_line = not text.endswith("\n")

    def _end_line(self) -> None:
        if self._mid_line:
            typer.echo("")
            self._mid_line = False

    def _note(self, line: str, style: str, *, wrap: bool = False) -> None:
        """A line on stderr; unless ``wrap``, cut to the terminal's width."""
        self._end_line()
        text = Text(line, style=style, no_wrap=not wrap, overflow="fold" if wrap else "ellipsis")
        self._err.print(text, highlight=False, crop=not wrap)


def final_line(result: JobResult) -> str:
    parts = [
        result.status or "finished",
        tokens_text(result.usage),
        cost_text(result.cost_usd, result.cost_source),
    ]
    duration_ms = result.raw.get("duration_ms")
    if isinstance(duration_ms, int | float):
        parts.append(f"{duration_ms / 1000:.1f} s")
    if result.job_id:
        parts.append(result.job_id)
    return " · ".join(parts)


def tool_summary(tool_input: Any) -> str:
    """The most telling part of a tool's input, on one short line."""
    if isinstance(tool_input, dict):
        for key in _TOOL_SUMMARY_KEYS:
            if isinstance(tool_input.get(key), str):
                return one_line(tool_input[key])
    if tool_input in (None, {}, ""):
        return ""
    return one_line(tool_input if isinstance(tool_input, str) else json.dumps(tool_input))


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TOOL_SUMMARY_CHARS else text[: TOOL_SUMMARY_CHARS - 1] + "…"
