"""What the session, job and file browser tests share: a live session of worker `w` (ended after
the test), prompts sent through the API, a job's event stream read with the admin key."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx

from tests.console.conftest import Console

JOB_TIMEOUT_MS = 90_000  # a job's CLI run on a loaded machine; the fake model answers at once


def start_session(console: Console, **body: Any) -> dict[str, Any]:
    with console.plane.client() as admin:
        made = admin.post("/v1/sessions", json={"worker": "w", **body})
        made.raise_for_status()
        return made.json()


def end_session(console: Console, session_id: str) -> None:
    """End the session if it still runs (the test may have ended it)."""
    with console.plane.client() as admin, contextlib.suppress(httpx.HTTPError):
        admin.delete(f"/v1/sessions/{session_id}", params={"learn": "false"})


@contextlib.contextmanager
def running_session(console: Console, **body: Any) -> Iterator[dict[str, Any]]:
    """A ready session of worker `w`, ended when the block ends."""
    session = start_session(console, **body)
    try:
        yield session
    finally:
        end_session(console, session["id"])


def prompt(console: Console, session_id: str, text: str, mode: str = "sync") -> dict[str, Any]:
    """The job of `text` run on the session through the API (sync: finished; async: queued)."""
    with console.plane.client() as admin:
        answer = admin.post(
            "/v1/prompts", json={"session_id": session_id, "prompt": text, "mode": mode}
        )
        answer.raise_for_status()
        return answer.json()


def job(console: Console, job_id: str) -> dict[str, Any]:
    with console.plane.client() as admin:
        answer = admin.get(f"/v1/jobs/{job_id}")
        answer.raise_for_status()
        return answer.json()


def event_stream(console: Console, job_id: str) -> str:
    """The whole SSE body of a finished job's events, as the API sends it."""
    with console.plane.client() as admin:
        answer = admin.get(f"/v1/jobs/{job_id}/events")
        answer.raise_for_status()
        return answer.text


def stream_events(body: str) -> list[dict[str, Any]]:
    """The events of an SSE body (each frame's JSON data), in order."""
    events = []
    for frame in re.split(r"\r?\n\r?\n", body):
        data = [line[5:].lstrip() for line in re.split(r"\r?\n", frame) if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def rendered_seqs(page) -> list[int]:
    """The seq of every event the job view rendered, sorted, repeats kept (an assistant block
    carries its `assistant_text`'s seq and holds its deltas', so page order is not seq order)."""
    return sorted(
        page.eval_on_selector_all(
            "#events [data-seq]", "els => els.map(e => Number(e.dataset.seq))"
        )
    )
