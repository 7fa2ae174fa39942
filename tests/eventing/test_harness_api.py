"""The harness's answers as the shared models (`eventing.harness_api`): every answer of a real
harness process parses through the control plane's client into its model, with the values the
harness meant; an answer that does not fit is refused at the client with the stable code
``harness_answer_invalid`` (502), never a missing key later."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from eventing.harness_api import (
    BootstrapReport,
    FileListing,
    FileWritten,
    HarnessHealth,
    JobState,
    ShutdownOutcome,
)
from eventing.job_events import JobEvent, JobStatus
from eventing.sse import SseFrame
from functions.harness_client import HarnessAnswerInvalid, HarnessClient, decode
from functions.settings import HarnessCallSettings
from tests.support.harness_process import TOKEN, HarnessProcess

# Answers like Claude Code's stream-json in a few milliseconds.
STAND_IN_CLI = """#!/bin/sh
echo '{"type":"system","subtype":"init","session_id":"stand-in","model":"stand-in"}'
echo '{"type":"result","subtype":"success","is_error":false,"session_id":"stand-in",\
"result":"done","usage":{"input_tokens":1,"output_tokens":1}}'
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessProcess]:
    root = tmp_path_factory.mktemp("harness-api")
    cli = root / "stand-in-cli"
    cli.write_text(STAND_IN_CLI)
    cli.chmod(0o755)
    process = HarnessProcess(
        root / "workspace", "claude", {"VWM_CLI_BIN": str(cli)}, root / "harness.log"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def client(harness: HarnessProcess) -> AsyncIterator[HarnessClient]:
    async with httpx.AsyncClient() as http:
        yield HarnessClient(harness.url, TOKEN, HarnessCallSettings(), http)


def _logged(workspace: Path, job_id: str) -> list[dict[str, object]]:
    path = workspace / ".vwm" / "jobs" / f"{job_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_every_answer_of_a_real_harness_parses_into_its_model(
    harness: HarnessProcess, client: HarnessClient
) -> None:
    health = await client.health()
    assert isinstance(health, HarnessHealth)
    assert (health.status, health.cli, health.sandbox) == ("ok", "claude", "none")
    assert health.running_job_id is None
    assert health.events.sink is None and health.events.pending == 0

    report = await client.bootstrap({"system_instructions": "be brief"})
    assert isinstance(report, BootstrapReport)
    assert "session_repo" in report.changed
    assert (await client.health()).bootstrapped is True

    started = await client.start_job({"prompt": "hello", "job_id": "job_api"})
    assert isinstance(started, JobState)
    assert started.job_id == "job_api"
    assert started.status in (JobStatus.RUNNING, JobStatus.SUCCEEDED)

    events = [decode(frame) async for frame in client.events("job_api")]
    assert all(isinstance(event, JobEvent) for event in events)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert (events[0].kind, events[-1].kind) == ("job_started", "job_finished")
    assert events[-1].data["status"] == "succeeded"
    # What the control plane stores from the parsed events is the harness's log, key for key.
    logged = _logged(harness.workspace, "job_api")
    assert [event.model_dump(mode="json") for event in events] == logged
    assert [list(event.model_dump(mode="json")) for event in events] == [
        list(entry) for entry in logged
    ]

    state = await client.job("job_api")
    assert state.status == JobStatus.SUCCEEDED
    assert state.last_seq == len(events)
    assert state.summary is not None and state.summary.final_text == "done"
    assert state.finished_at is not None and state.finished_at >= state.created_at
    cancelled = await client.cancel("job_api")  # a finished job stays as it ended
    assert cancelled == state

    written = await client.files.write("notes/a.txt", b"hello")
    assert written == FileWritten(path="notes/a.txt", size=5, created=True)
    listing = await client.files.list("notes")
    assert isinstance(listing, FileListing)
    assert [(entry.name, entry.type, entry.size) for entry in listing.entries] == [
        ("a.txt", "file", 5)
    ]

    outcome = await client.shutdown()
    assert isinstance(outcome, ShutdownOutcome)
    assert outcome.events_pending == 0
    assert outcome.transcript is not None and outcome.transcript.endswith("transcript.jsonl")
    session_repo = outcome.repos["session_repo"]
    assert session_repo.committed and session_repo.error is None
    assert (session_repo.pushed, session_repo.push) == (False, "none")  # it has no remote
    assert outcome.result() == {
        "transcript": outcome.transcript,
        "repos": {"session_repo": session_repo.model_dump(mode="json")},
    }


JOB = {
    "job_id": "j1",
    "status": "succeeded",
    "created_at": 1.5,
    "finished_at": 2.5,
    "exit_code": 0,
    "summary": None,
    "error": None,
    "last_seq": 3,
}
SHUTDOWN = {"transcript": None, "transcript_error": None, "repos": {}, "events_pending": 0}
HEALTH = {
    "status": "ok",
    "cli": "claude",
    "bootstrapped": True,
    "running_job_id": None,
    "sandbox": "none",
    "events": {"sink": None, "pending": 0, "dead_letters": 0, "relay_running": False},
}

Call = Callable[[HarnessClient], Awaitable[BaseModel]]
# Each call, an answer that fits it, and the fields that answer must have.
CALLS: dict[str, tuple[Call, dict[str, object], tuple[str, ...]]] = {
    "job": (lambda h: h.job("j1"), JOB, ("job_id", "status", "created_at", "last_seq")),
    "start_job": (
        lambda h: h.start_job({"prompt": "p"}),
        JOB,
        ("job_id", "status", "created_at", "last_seq"),
    ),
    "cancel": (lambda h: h.cancel("j1"), JOB, ("job_id", "status", "created_at", "last_seq")),
    "shutdown": (lambda h: h.shutdown(), SHUTDOWN, ("events_pending",)),
    "health": (
        lambda h: h.health(),
        HEALTH,
        ("status", "cli", "bootstrapped", "sandbox", "events"),
    ),
    "bootstrap": (
        lambda h: h.bootstrap({}),
        {"changed": ["session_repo"], "unchanged": [], "notes": []},
        ("changed", "unchanged"),
    ),
    "files.list": (
        lambda h: h.files.list("."),
        {"entries": [{"name": "a", "path": "a", "type": "file", "size": 1, "mtime": 2.5}]},
        ("entries",),
    ),
    "files.write": (
        lambda h: h.files.write("a", b"x"),
        {"path": "a", "size": 1, "created": False},
        ("path", "size", "created"),
    ),
}


def _answering(body: bytes) -> HarnessClient:
    """A client whose harness answers every call 200 with `body`."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    http = httpx.AsyncClient(transport=transport)
    return HarnessClient("http://harness", "t", HarnessCallSettings(), http)


def _broken(good: dict[str, object], required: tuple[str, ...]) -> list[bytes]:
    """Bodies that are not the answer at all, then the answer with each field it must have
    missing, then of the wrong type (a string for a number, a number for a string)."""
    bodies = [b"", b"not json", b"[]", b"null", b'{"unexpected": 1}']
    for name in required:
        bodies.append(json.dumps({k: v for k, v in good.items() if k != name}).encode())
        wrong = 1 if isinstance(good[name], str) else "1"
        bodies.append(json.dumps({**good, name: wrong}).encode())
    return bodies


@pytest.mark.parametrize("name", list(CALLS))
async def test_an_answer_that_fits_parses_and_unknown_fields_are_ignored(name: str) -> None:
    call, good, _ = CALLS[name]
    answer = await call(_answering(json.dumps({**good, "added_by_a_newer_harness": 1}).encode()))
    dumped = answer.model_dump(mode="json")
    assert {key: dumped[key] for key in good} == good
    assert "added_by_a_newer_harness" not in dumped


@pytest.mark.parametrize("name", list(CALLS))
async def test_an_answer_that_does_not_fit_is_harness_answer_invalid(name: str) -> None:
    call, good, required = CALLS[name]
    for body in _broken(good, required):
        with pytest.raises(HarnessAnswerInvalid) as caught:
            await call(_answering(body))
        error = caught.value
        assert (error.code, error.status, error.retryable) == ("harness_answer_invalid", 502, False)
        assert error.details["problems"], body
        assert "does not fit its API" in error.message


def test_a_stream_frame_decodes_into_a_job_event_or_is_refused() -> None:
    entry = {"job_id": "j1", "seq": 2, "kind": "assistant_text", "data": {"text": "hi"}, "ts": 1.25}
    event = decode(SseFrame("2", "assistant_text", json.dumps(entry)))
    assert event == JobEvent(**entry)
    assert event.model_dump(mode="json") == entry
    for broken in (
        "not json",
        json.dumps({**entry, "seq": "2"}),  # strict: never coerced
        json.dumps({**entry, "data": ["not", "an", "object"]}),
        json.dumps({key: value for key, value in entry.items() if key != "kind"}),
    ):
        with pytest.raises(HarnessAnswerInvalid) as caught:
            decode(SseFrame("2", "assistant_text", broken))
        assert caught.value.code == "harness_answer_invalid"
        assert caught.value.details["answer"] == "an event stream frame (id 2)"


def test_a_failed_shutdowns_details_give_its_outcome_or_none() -> None:
    repo = {"committed": "abc", "pushed": False, "push": "none", "branch": None, "head": None,
            "dropped_config": [], "error": {"code": "push_rejected", "message": "no"}}  # fmt: skip
    outcome = ShutdownOutcome.from_details({"transcript": "t", "repos": {"session_repo": repo}})
    assert outcome is not None and outcome.events_pending == 0
    assert outcome.result() == {"transcript": "t", "repos": {"session_repo": repo}}
    assert ShutdownOutcome.from_details({}) is None
    assert ShutdownOutcome.from_details({"repos": {"session_repo": {"push": "sideways"}}}) is None
