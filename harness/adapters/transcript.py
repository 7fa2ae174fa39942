"""Replay a recorded CLI stdout through an adapter's parser.

Used by `python -m harness.adapters` and by the golden tests in tests/adapters. The live path
(`harness.jobs`) feeds the parser from `harness.transport` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventing.agent_events import AgentEvent
from harness.adapters.base import AdapterParseError, Parser


def read_objects(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a recorded stdout.

    A file that is one JSON object as a whole (gemini's pretty-printed `--output-format json`) is
    one event; otherwise each non-empty line is one. Lines that are not JSON objects (banners,
    arrays) are skipped, as the transport skips them; a line that starts like an object but does
    not parse is an error.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [whole]
    objects: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AdapterParseError(
                f"{path}:{number} is not valid JSON: {exc}", line=line[:2000]
            ) from None
        if isinstance(value, dict):
            objects.append(value)
    return objects


def replay(
    parser: Parser, objects: list[dict[str, Any]], exit_code: int | None = None
) -> list[AgentEvent]:
    """Every normalized event of a run, the terminal ones included."""
    events: list[AgentEvent] = []
    for obj in objects:
        events += parser.feed(obj)
    return events + parser.finish(exit_code)
