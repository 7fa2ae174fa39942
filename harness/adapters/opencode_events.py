"""OpenCode's server events, turned into the lines `opencode run --format json` prints.

The harness drives OpenCode through `opencode serve` (`harness.opencode_server`), but the contract
stays the `run --format json` stream that `OpencodeParser` and the golden transcripts pin. That
command is itself a client of the same server: it subscribes to ``GET /event``, sends the prompt,
and prints one JSON line per finished part of its session until the session goes idle. This
module does what its loop does (opencode-ai 1.18.33, `cli/cmd/run.ts`), so a prompt sent over
HTTP yields, line for line, what the command would have printed:

- ``message.part.updated`` of the session: a ``tool`` part once completed or failed is
  ``tool_use``; ``step-start`` is ``step_start``; ``step-finish`` is ``step_finish``; a ``text``
  part once it has an end time is ``text``. Other parts (reasoning, the user's own text, deltas)
  print nothing.
- ``session.error`` of the session is ``error``.
- ``session.status`` idle of the session, after busy, ends the run.
- ``permission.asked`` of the session or a sub-agent's session it started is approved once, as
  ``run --auto`` does (`permission_to_approve`).

Pure: no I/O, no clock but the timestamp it is given.
"""

from __future__ import annotations

from typing import Any


class RunLines:
    """One prompt's server events → `run --format json` lines, for one OpenCode session."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        # The session and the sub-agent sessions it starts: their permission requests are ours.
        self._family = {session_id}
        self._busy = False
        self.idle = False

    def feed(self, event: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        kind = event.get("type")
        properties = event.get("properties") or {}
        if kind == "session.created":
            info = properties.get("info") or {}
            if info.get("parentID") in self._family and info.get("id"):
                self._family.add(info["id"])
            return []
        if kind == "message.part.updated":
            return self._part(properties.get("part") or {}, now_ms)
        if kind == "session.error":
            if properties.get("sessionID") != self.session_id or not properties.get("error"):
                return []
            return [self._line("error", now_ms, error=properties["error"])]
        if kind == "session.status" and properties.get("sessionID") == self.session_id:
            # Idle only after this prompt made the session busy: an abort of the one before
            # (a cancelled job) may still report its idle.
            status = (properties.get("status") or {}).get("type")
            self._busy = self._busy or status == "busy"
            self.idle = self._busy and status == "idle"
        return []

    def permission_to_approve(self, event: dict[str, Any]) -> str | None:
        """The id of a permission request this run answers "once" to, else None."""
        if event.get("type") != "permission.asked":
            return None
        properties = event.get("properties") or {}
        if properties.get("sessionID") in self._family and properties.get("id"):
            return str(properties["id"])
        return None

    def error_line(self, error: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """The line `run` prints when the prompt request itself is refused."""
        return self._line("error", now_ms, error=error)

    def _part(self, part: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        if part.get("sessionID") != self.session_id:
            return []
        match part.get("type"):
            case "tool" if (part.get("state") or {}).get("status") in ("completed", "error"):
                return [self._line("tool_use", now_ms, part=part)]
            case "step-start":
                return [self._line("step_start", now_ms, part=part)]
            case "step-finish":
                return [self._line("step_finish", now_ms, part=part)]
            case "text" if (part.get("time") or {}).get("end"):
                return [self._line("text", now_ms, part=part)]
        return []

    def _line(self, kind: str, now_ms: int, **data: Any) -> dict[str, Any]:
        return {"type": kind, "timestamp": now_ms, "sessionID": self.session_id, **data}
