"""`vwm events tail` as a real subprocess against `vwm up` (a real harness running Claude Code's
stand-in on the fake provider): it prints one session's job events live, only the types asked
for, each delivery once, a prompt request's job under the request's id; Ctrl-C and SIGTERM
delete its subscription and exit 0; a control plane it cannot use is a clear message and a
non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventing import codec
from eventing.events import CONTROL_PLANE_SOURCE, SessionCreated, new_event
from eventing.events.envelope import utc_now
from tests.control_plane.conftest import ControlPlane, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers
from tests.support.harness_process import REPO_ROOT, free_port
from vwm.sdk.models import JobResult

pytestmark = pytest.mark.cli

STARTED = "tailing events through subscription "


class Tail:
    """``vwm events tail ARGS`` in a child process; its stdout and stderr read by threads."""

    def __init__(self, url: str, key: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vwm", "--url", url, "events", "tail", *args],
            cwd=REPO_ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("VWM_")}
            | {"VWM_API_KEY": key},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def subscription(self) -> tuple[str, str]:
        """The subscription's name and the sink's URL, once the tail says it is listening."""
        line = until(lambda: next((e for e in self.err if e.startswith(STARTED)), None), self)
        name, _, rest = line[len(STARTED) :].partition(" → ")
        return name, rest.partition(";")[0]

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def finish(self) -> int:
        """The exit status of a tail that ends by itself."""
        code = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __repr__(self) -> str:
        return "Tail(stdout=" + "\n".join(self.out) + "\nstderr=" + "\n".join(self.err) + ")"


def until(check: Callable[[], Any], what: object, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {within} s: {what!r}"
        time.sleep(0.05)
    return result


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": f"tail-{uuid.uuid4().hex[:8]}"})
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.kill()


def client_key(plane: ControlPlane) -> str:
    with plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "tail", "scope": "client"})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def fields(line: str) -> dict[str, str]:
    """``time type session=… job=… seq=… summary`` as a mapping (``type``, ``session``, ...)."""
    parts = line.split(" ")
    found = {"time": parts[0], "type": parts[1]}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if sep and key in ("session", "job", "seq", "cause"):
            found[key] = value
    found["rest"] = line
    return found


def test_tail_prints_one_sessions_job_events_live_and_cleans_up(
    plane: ControlPlane, fake_provider, tmp_path: Path, tails: list[Tail]
) -> None:
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as admin:
        add_claude_workers(admin, fake_provider.base_url, repo)
    key = client_key(plane)
    with plane.client(key) as client:
        watched, other = (
            client.post("/v1/sessions", json={"worker": "w"}).json()["id"] for _ in "ab"
        )
        every = Tail(plane.url, key, "--session", watched)
        ends = Tail(plane.url, key, "--session", watched, "--type", "dev.vwm.job.c")
        as_json = Tail(plane.url, key, "--session", watched, "--json")
        tails += [every, ends, as_json]
        names = {tail.subscription()[0] for tail in tails}
        listed = {s["name"] for s in client.get("/v1/subscriptions").json()["items"]}
        assert names <= listed and len(names) == 3

        job_ids = {}
        for session_id in (other, watched):
            until(_ready(client, session_id), plane)
            ran = client.post("/v1/prompts", json={"session_id": session_id, "prompt": "say hi"})
            assert ran.json()["status"] == "succeeded", ran.text
            job_ids[session_id] = ran.json()["id"]
        job = job_ids[watched]

        def completed(tail: Tail) -> Callable[[], bool]:
            return lambda: any("dev.vwm.job.completed" in line for line in tail.out)

        for tail in tails:
            until(completed(tail), tail)

        lines = [fields(line) for line in every.out]
        assert {line["session"] for line in lines} == {watched}, every
        mine = [line for line in lines if line.get("job") == job]
        assert (mine[0]["type"], mine[-1]["type"]) == (
            "dev.vwm.job.started",
            "dev.vwm.job.completed",
        )
        outputs = [line for line in mine if line["type"] == "dev.vwm.job.output"]
        assert outputs, every
        final = JobResult.from_job(client.get(f"/v1/jobs/{job}").json()).final_text
        assert final and any(final in line["rest"] for line in outputs), (final, every)
        assert f"succeeded: {final}" in mine[-1]["rest"]
        assert "say hi" in mine[0]["rest"]  # the prompt as run
        seqs = [int(line["seq"]) for line in mine]
        assert seqs == sorted(set(seqs)), every  # each event once, in its log's order

        assert [fields(line)["type"] for line in ends.out] == ["dev.vwm.job.completed"], ends
        assert fields(ends.out[0])["job"] == job

        documents = [json.loads(line) for line in as_json.out]
        assert {d["sessionid"] for d in documents} == {watched}
        assert [d["type"] for d in documents if d.get("jobid") == job] == [
            line["type"] for line in mine
        ]
        completed_doc = next(d for d in documents if d["type"] == "dev.vwm.job.completed")
        assert completed_doc["data"]["summary"]["final_text"] == final

        assert every.stop(signal.SIGINT) == 0, every
        assert ends.stop(signal.SIGTERM) == 0, ends
        assert as_json.stop(signal.SIGINT) == 0, as_json
        listed = {s["name"] for s in client.get("/v1/subscriptions").json()["items"]}
        assert not names & listed, listed


def test_tail_takes_both_modes_prints_each_event_once_and_refuses_what_is_not_one(
    plane: ControlPlane, tails: list[Tail]
) -> None:
    key = client_key(plane)
    tail = Tail(plane.url, key, "--type", "dev.vwm.session.created")  # nothing else here makes one
    tails.append(tail)
    name, sink = tail.subscription()
    event = new_event(
        SessionCreated(worker_id="w1", workspace="/tmp/posted", created_at=utc_now()),
        source=CONTROL_PLANE_SOURCE,
        session_id="posted",
    )
    # Straight to the tail's sink, as a broker delivers: twice in each mode, one event.
    for to_wire in (codec.to_binary, codec.to_structured, codec.to_binary):
        headers, body = to_wire(event)
        answer = httpx.post(sink, headers=headers, content=body)
        assert (answer.status_code, answer.content) == (202, b"")
    refused = httpx.post(sink, headers={"content-type": "application/json"}, content=b"{}")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "not_a_cloudevent"
    # And once more through the broker: an admin key may post any type.
    headers, body = codec.to_binary(event)
    with plane.client() as admin:
        assert admin.post("/v1/broker", headers=headers, content=body).status_code == 202
    later = new_event(
        SessionCreated(worker_id="w2", workspace="/tmp/posted", created_at=utc_now()),
        source=CONTROL_PLANE_SOURCE,
        session_id="posted",
    )
    headers, body = codec.to_binary(later)
    with plane.client() as admin:
        assert admin.post("/v1/broker", headers=headers, content=body).status_code == 202
    # The broker delivers in order, so once the later event is printed the duplicate had its turn.
    until(lambda: len(tail.out) >= 2 and "worker=w2" in tail.out[-1], tail)
    assert tail.stop() == 0, tail
    assert [fields(line)["type"] for line in tail.out] == ["dev.vwm.session.created"] * 2, tail
    assert "worker=w1" in tail.out[0] and "worker=w2" in tail.out[1]
    with plane.client(key) as client:
        assert client.get(f"/v1/subscriptions/{name}").status_code == 404


def test_a_prompt_request_posted_with_a_client_key_is_answered_under_its_id(
    plane: ControlPlane, fake_provider, tmp_path: Path, tails: list[Tail]
) -> None:
    """docs/events.md's binary-mode example: the tail shows the request, then its job's events,
    each naming the request as its cause."""
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as admin:
        add_claude_workers(admin, fake_provider.base_url, repo)
    key = client_key(plane)
    with plane.client(key) as client:
        session_id = client.post("/v1/sessions", json={"worker": "w"}).json()["id"]
        until(_ready(client, session_id), plane)
        tail = Tail(plane.url, key, "--session", session_id)
        tails.append(tail)
        tail.subscription()
        request_id = f"ticket-{uuid.uuid4().hex[:8]}"
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": "dev.vwm.prompt.requested",
            "ce-id": request_id,
            "ce-source": "/tickets/bot",
            "ce-sessionid": session_id,
        }
        posted = client.post("/v1/broker", headers=headers, content=b'{"prompt": "say hi"}')
        assert posted.status_code == 202, posted.text

        until(lambda: any("dev.vwm.job.completed" in line for line in tail.out), tail)
        assert tail.stop() == 0, tail
    lines = [fields(line) for line in tail.out]
    request = next(line for line in lines if line["type"] == "dev.vwm.prompt.requested")
    assert f" id={request_id} " in request["rest"]
    job_lines = [line for line in lines if line["type"].startswith("dev.vwm.job.")]
    assert {line.get("cause") for line in job_lines} == {request_id}, tail
    assert job_lines[0]["type"] == "dev.vwm.job.started"
    assert job_lines[-1]["type"] == "dev.vwm.job.completed"


def test_tail_says_what_to_do_when_it_cannot_subscribe(
    plane: ControlPlane, tails: list[Tail]
) -> None:
    nowhere = Tail(f"http://127.0.0.1:{free_port()}", "vwm_any")
    stranger = Tail(plane.url, "vwm_not_a_key")
    tails += [nowhere, stranger]
    assert nowhere.finish() == 1
    assert "unreachable" in "\n".join(nowhere.err) and "vwm up" in "\n".join(nowhere.err)
    assert stranger.finish() == 1
    assert "--api-key or VWM_API_KEY" in "\n".join(stranger.err), stranger

    unknown = Tail(plane.url, client_key(plane), "--session", "no-such-session")
    tails.append(unknown)
    assert unknown.finish() == 1
    assert "not_found" in "\n".join(unknown.err) and not unknown.out, unknown

    with plane.client() as admin:
        off = admin.put("/v1/admin/settings/allow_local_repos", json={"value": False})
        assert off.status_code in (200, 204), off.text
    refused = Tail(plane.url, client_key(plane))
    tails.append(refused)
    assert refused.finish() == 1
    message = "\n".join(refused.err)
    assert "sink_url_not_allowed" in message and "allow_local_repos" in message, refused
    assert "vwm up" in message
    assert not refused.out
    with plane.client() as admin:
        assert admin.get("/v1/subscriptions").json()["items"] == []


def _ready(client: httpx.Client, session_id: str) -> Callable[[], bool]:
    return lambda: bool(client.get(f"/v1/sessions/{session_id}").json()["status"] == "ready")
