"""How `vwm events tail` prints one CloudEvent: a line for people, or a JSON object for programs.

The line is ``time type session=… job=… seq=… summary``, with ``-`` for an attribute the event does
not carry (then ``id=`` for a prompt request, ``cause=`` for the events of the job it asked for),
and a summary of its data on one line: the text and tool calls of a ``job.output``
batch, the status (and error) a job ended with, what a session or prompt event is about.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from eventing.events import PROMPT_REQUESTED, VwmEvent
from eventing.events import payloads as p
from eventing.events.envelope import format_time

MAX_SUMMARY = 300


def event_line(event: VwmEvent) -> str:
    when = format_time(event.time) if event.time is not None else "-"
    columns = [
        when,
        event.type,
        f"session={event.sessionid or '-'}",
        f"job={event.jobid or '-'}",
        f"seq={event.seq if event.seq is not None else '-'}",
    ]
    if event.type == PROMPT_REQUESTED:  # what its job's events name as their cause
        columns.append(f"id={event.id}")
    cause = _causation_id(event)
    if cause:
        columns.append(f"cause={cause}")
    summary = _one_line(summary_of(event.data))
    return " ".join(columns + ([summary] if summary else []))


def event_json(event: VwmEvent) -> str:
    """The event as one structured-mode JSON object (attributes and ``data``)."""
    document = {**event.attributes(), "data": event.data_json()}
    return json.dumps(document, ensure_ascii=False, default=str)


def summary_of(data: p.Payload) -> str:
    match data:
        case p.JobOutput():
            return _output_text(data.events)
        case p.JobFailed():
            return f"{data.status.value}: {data.error.code}: {data.error.message}"
        case p.JobCompleted():
            return f"{data.status.value}: {data.summary.final_text}"
        case p.JobStarted():
            model = f" model={data.model}" if data.model else ""
            return f"cli={data.cli}{model} prompt={data.prompt!r}"
        case p.PromptRequested():
            return f"prompt={data.prompt!r}"
        case p.SessionCreated():
            return f"worker={data.worker_id}"
        case p.SessionReady():
            return f"endpoint={data.endpoint}"
        case p.SessionEndRequested():
            return f"reason={data.reason.value}"
        case p.SessionEnded():
            error = f": {data.error.code}: {data.error.message}" if data.error else ""
            return f"{data.status} reason={data.reason.value}{error}"
        case p.LearningCompleted():
            return data.summary
        case p.Tick():
            return f"schedule={data.schedule}" if data.schedule else ""
    return ""


def _output_text(events: list[p.OutputEvent]) -> str:
    """Assistant text blocks, a tool call as ``→ name``, errors; other kinds only counted when the
    batch holds nothing else. Token deltas are left out: every CLI's adapter also sends the
    whole block as ``assistant_text``, which would print the text twice."""
    parts: list[str] = []
    for entry in events:
        text = entry.data.get("text")
        if entry.kind == "assistant_text" and isinstance(text, str):
            parts.append(text)
        elif entry.kind == "tool_call":
            parts.append(f"→ {entry.data.get('name', '?')}")
        elif entry.kind == "error":
            parts.append(f"error: {entry.data.get('message', '')}")
    if parts:
        return " ".join(parts)
    kinds = ", ".join(dict.fromkeys(str(entry.kind) for entry in events))
    return f"({len(events)} events: {kinds})"


def _causation_id(event: VwmEvent) -> Any:
    """The id of the event that caused this one, on contracts that carry ``causationid``."""
    return getattr(event, "causationid", None)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


class Seen:
    """The (`source`, `id`) keys of the last ``capacity`` events: delivery is at least once, and
    a redelivery carries the same key. Bounded, so a long tail does not grow without end."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, event: VwmEvent) -> bool:
        key = (event.source, event.id)
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True
