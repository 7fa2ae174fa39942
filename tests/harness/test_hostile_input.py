"""The harness against the hostile corpus (`tests.support.hostile`), over real HTTP: every case
gets its documented 4xx and a JSON error with a stable code, never a 500, and nothing in the
workspace changes. The harness runs a stand-in CLI that answers at once, so one real job exists
to resume from."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.harness_process import HarnessProcess
from tests.support.hostile import (
    BAD_SEGMENTS,
    CONTROL_CHARACTERS,
    NOT_ASCII_INTEGERS,
    Case,
    body_cases,
    wrong_answers,
)

# Answers like Claude Code's stream-json in a few milliseconds.
STAND_IN_CLI = """#!/bin/sh
echo '{"type":"system","subtype":"init","session_id":"stand-in","model":"stand-in"}'
echo '{"type":"result","subtype":"success","is_error":false,"session_id":"stand-in",\
"result":"done","usage":{"input_tokens":1,"output_tokens":1}}'
"""
MISSING = "job_missing"


@dataclass
class Harness:
    process: HarnessProcess
    job_id: str


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("hostile-harness")
    cli = root / "stand-in-cli"
    cli.write_text(STAND_IN_CLI)
    cli.chmod(0o755)
    workspace = root / "workspace"
    (workspace / "session_repo").mkdir(parents=True)  # counts as bootstrapped: no git needed
    process = HarnessProcess(workspace, "claude", {"VWM_CLI_BIN": str(cli)}, root / "harness.log")
    process.start()
    try:
        with process.client(timeout=60) as client:
            job = client.post("/v1/jobs", json={"prompt": "hello", "job_id": "job_1"})
            assert job.status_code == 200, job.text
            assert job.json()["status"] == "succeeded", job.text
        yield Harness(process, "job_1")
    finally:
        process.stop()


def _snapshot(workspace: Path) -> list[tuple[str, int, int]]:
    found = []
    for directory, _, names in os.walk(workspace):
        for name in names:
            path = Path(directory) / name
            stat = path.lstat()
            found.append((str(path.relative_to(workspace)), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def _run(harness: Harness, cases: list[Case]) -> None:
    before = _snapshot(harness.process.workspace)
    with harness.process.client(timeout=30) as client:
        wrong = wrong_answers(client, cases)
    assert not wrong, wrong
    assert _snapshot(harness.process.workspace) == before
    assert "Traceback" not in harness.process.log()


WRITES = [
    ("POST", "/v1/jobs", {"prompt": "hi", "mode": "async"}),
    ("POST", "/v1/bootstrap", {"system_instructions": "changed"}),
]


def test_hostile_bodies_get_400_or_415_and_change_nothing(harness):
    cases = body_cases(WRITES)
    assert len(cases) > 90
    _run(harness, cases)


def test_well_formed_bodies_of_the_wrong_shape_get_422(harness):
    bodies = [
        ("/v1/jobs", {"prompt": 42}),
        ("/v1/jobs", {"prompt": ""}),
        ("/v1/jobs", {"prompt": "x", "mode": "sideways"}),
        ("/v1/jobs", {"prompt": "x", "job_id": "../../etc"}),
        ("/v1/jobs", {"prompt": "x", "job_id": "٣"}),
        ("/v1/jobs", {"prompt": "x", "job_id": "j" * 65}),
        ("/v1/jobs", {"prompt": "x", "timeout_s": -1}),
        ("/v1/jobs", {"prompt": "x", "timeout_s": 1e300}),
        ("/v1/jobs", {"prompt": "x", "new_session": "yes"}),
        ("/v1/jobs", {"prompt": "x", "model": "m" * 201}),
        ("/v1/jobs", {"prompt": "x", "surprise": 1}),
        ("/v1/bootstrap", {"worker_repo": "not an object"}),
        ("/v1/bootstrap", {"worker_repo": {"url": "--upload-pack=touch /tmp/x"}}),
        ("/v1/bootstrap", {"session_repo": {"url": "r", "branch": "a\nb"}}),
        ("/v1/bootstrap", {"system_instructions": 5}),
    ]
    _run(
        harness,
        [
            Case("POST", p, 422, "invalid_request", content=json.dumps(b).encode())
            for p, b in bodies
        ],
    )


def test_resume_points_are_ascii_sequence_numbers(harness):
    bad = "invalid_parameter"
    cases = []
    for job_id in (harness.job_id, MISSING):
        events = f"/v1/jobs/{job_id}/events"
        cases += [
            Case("GET", events, 400, bad, headers={"Last-Event-ID": raw.encode()}, details={"parameter": "Last-Event-ID"})
            for raw in NOT_ASCII_INTEGERS
            if raw.strip() == raw  # HTTP itself strips the spaces around a header value
        ] + [
            Case("GET", events, 400, bad, params=[("after", raw)], details={"parameter": "after"})
            for raw in NOT_ASCII_INTEGERS
        ] + [
            Case("GET", events, 400, bad, headers={"Last-Event-ID": b"\xff\xfe"}),
            Case("GET", events, 400, bad, params=[("after", "1"), ("after", "2")], details={"reason": "repeated"}),
        ]  # fmt: skip
    cases.append(
        Case("GET", f"/v1/jobs/{MISSING}/events", 404, "not_found", params=[("after", "3")])
    )
    _run(harness, cases)
    with harness.process.client(timeout=30) as client:
        for headers in ({"Last-Event-ID": "1"}, {}):
            with client.stream("GET", f"/v1/jobs/{harness.job_id}/events", headers=headers) as sse:
                assert sse.status_code == 200
                assert sse.headers["content-type"].startswith("text/event-stream")


def test_query_parameters_and_path_segments(harness):
    bad = "invalid_parameter"
    cases = [
        Case("DELETE", "/v1/files", 400, bad, params=[("path", "session_repo/x"), ("recursive", raw)], details={"parameter": "recursive"})
        for raw in ("maybe", "2", "٣", "", "truee")
    ] + [
        Case("GET", f"/v1/jobs/{harness.job_id}/events", 400, bad, params=[("after", f"1{char}")], details={"reason": "control_character"})
        for char in CONTROL_CHARACTERS
    ] + [
        Case("GET", "/v1/files", 400, bad, params=[("path", "a"), ("path", "b")], details={"reason": "repeated"}),
        Case("DELETE", "/v1/files", 400, bad, params=[("path", "session_repo/x"), ("path", "session_repo")]),
        Case("GET", "/v1/files", 400, bad, params=[("path", "p" * 9000)], details={"reason": "too_long"}),
        Case("GET", "/v1/files", 400, bad, params=[("x\x00", "1")], details={"reason": "control_character"}),
    ] + [
        Case(method, route.format(segment), 400, bad, details={"reason": reason})
        for method, route in [
            ("GET", "/v1/jobs/{}"),
            ("GET", "/v1/jobs/{}/events"),
            ("POST", "/v1/jobs/{}/cancel"),
        ]
        for segment, reason in BAD_SEGMENTS
    ]  # fmt: skip
    _run(harness, cases)


def test_a_missing_token_still_comes_first(harness):
    with httpx.Client(base_url=harness.process.url, timeout=10) as client:
        for path in ("/v1/jobs/%D9%A3", "/v1/jobs/x/events?after=%C2%B2"):
            answer = client.get(path)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "unauthorized"
