"""Prompt requests by event on `vwm up` (a real control plane, the real Claude Code CLI on the
fake provider): another service posts `dev.vwm.prompt.requested` to `POST /v1/broker` and
hears the result as `dev.vwm.job.completed`/`.failed` carrying its event's id as `causationid`.

One control plane for the module; each test makes its own session (sessions do not share a
harness, so their jobs do not wait for each other)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from eventing import signatures
from eventing.events import prompt_job_id
from functions.runtime.tokens import TokenKey
from tests.control_plane.conftest import ControlPlane, harness_pids, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers, until
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.cli

SENDER = "/tests/ticket-bot"
PROMPT_WAIT_S = 6


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, fake_provider) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("prompt-requests")
    plane = ControlPlane(
        root / "data",
        {
            "FAKE_PROVIDER_KEY": f"requests-{uuid.uuid4().hex[:8]}",
            "VWM_PROMPT_WAIT_S": str(PROMPT_WAIT_S),
        },
    )
    plane.start()
    repo = make_bare_repo(root / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as admin:
        add_claude_workers(admin, fake_provider.base_url, repo)
        made = admin.post("/v1/admin/keys", json={"name": "ticket-bot", "scope": "client"})
        assert made.status_code == 201, made.text
        plane.env["CLIENT_KEY"] = made.json()["key"]
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[httpx.Client]:
    with plane.client(plane.env["CLIENT_KEY"]) as client:
        yield client


@pytest.fixture
def results(client: httpx.Client) -> Iterator[Subscriber]:
    """The sender's subscription to the ends of the jobs its events asked for."""
    with Subscriber() as sink:
        name = f"results-{uuid.uuid4().hex[:8]}"
        filters = [
            {
                "any": [
                    {"exact": {"type": t}} for t in ("dev.vwm.job.completed", "dev.vwm.job.failed")
                ]
            }
        ]
        made = client.post(
            "/v1/subscriptions", json={"name": name, "filters": filters, "sink": sink.url}
        )
        assert made.status_code == 201, made.text
        yield sink
        client.delete(f"/v1/subscriptions/{name}")


def ready_session(client: httpx.Client, plane: ControlPlane) -> str:
    session_id = str(client.post("/v1/sessions", json={"worker": "w"}).json()["id"])
    until(lambda: client.get(f"/v1/sessions/{session_id}").json()["status"] == "ready", plane)
    return session_id


def post_binary(client: httpx.Client, event_id: str, data: dict[str, Any], **ce: str) -> None:
    """What another service sends: a binary-mode CloudEvent to the broker's address."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": SENDER,
        "ce-type": "dev.vwm.prompt.requested",
        "content-type": "application/json",
        **{f"ce-{name}": value for name, value in ce.items()},
    }
    answer = client.post("/v1/broker", headers=headers, content=json.dumps(data))
    assert answer.status_code in (200, 202), answer.text


def end_of(results: Subscriber, event_id: str, plane: ControlPlane, timeout: float = 90) -> Any:
    def found() -> Any:
        ends = [e for e in results.events() if e.causationid == event_id]
        return ends[0] if ends else None

    return until(found, plane, timeout)


def jobs_of(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/sessions/{session_id}/jobs").json()["items"])


def test_another_services_prompt_runs_once_however_often_it_is_delivered(
    plane: ControlPlane, client: httpx.Client, results: Subscriber
) -> None:
    session_id = ready_session(client, plane)
    event_id = f"ticket-{uuid.uuid4().hex[:8]}"
    data = {"session_id": session_id, "prompt": "say hi", "timeout_s": 120}
    for _ in range(3):  # at least once: the sender retries
        post_binary(client, event_id, data, sessionid=session_id)
    end = end_of(results, event_id, plane)
    job_id = prompt_job_id(SENDER, event_id)
    assert (end.type, end.jobid, end.sessionid) == ("dev.vwm.job.completed", job_id, session_id)
    assert end.data.summary.final_text == "hello from fake model"
    post_binary(client, event_id, data)  # after the end too; only in the data this time
    time.sleep(1.0)  # a second run would have started by now
    assert [job["id"] for job in jobs_of(client, session_id)] == [job_id]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["mode"], job["prompt"]) == ("succeeded", "async", "say hi")
    assert {e.id for e in results.events() if e.jobid == job_id} == {end.id}


def test_an_async_http_prompt_is_a_prompt_request(
    plane: ControlPlane, client: httpx.Client, results: Subscriber
) -> None:
    session_id = ready_session(client, plane)
    with Subscriber() as requests:
        name = f"requests-{uuid.uuid4().hex[:8]}"
        filters = [
            {"exact": {"type": "dev.vwm.prompt.requested"}},
            {"exact": {"sessionid": session_id}},
        ]
        client.post(
            "/v1/subscriptions", json={"name": name, "filters": filters, "sink": requests.url}
        ).raise_for_status()
        answer = client.post(
            "/v1/prompts",
            json={"session_id": session_id, "prompt": "say hi", "mode": "async"},
        )
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["status"] == "queued"
        [request] = until(requests.events, plane)
        client.delete(f"/v1/subscriptions/{name}")
    assert prompt_job_id(request.source, request.id) == job["id"]
    assert request.data.prompt == "say hi" and request.sessionid == session_id
    # Signed for the session: a Knative Trigger can deliver it to the harness as it is.
    assert signatures.verify(TokenKey.in_folder(plane.data_dir).token(session_id), request)
    end = end_of(results, request.id, plane)
    assert (end.type, end.jobid) == ("dev.vwm.job.completed", job["id"])
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


def test_a_request_for_a_busy_session_waits_its_turn_then_fails_session_busy(
    plane: ControlPlane, client: httpx.Client, results: Subscriber
) -> None:
    session_id = ready_session(client, plane)
    data = {"session_id": session_id}
    first, second, third = (f"busy-{n}-{uuid.uuid4().hex[:6]}" for n in range(3))
    # The first holds the session for a second or so: the second waits for it and runs.
    post_binary(client, first, {**data, "prompt": "sleep 1"})
    until(lambda: any(j["status"] == "running" for j in jobs_of(client, session_id)), plane)
    post_binary(client, second, {**data, "prompt": "say hi"})
    assert end_of(results, first, plane).type == "dev.vwm.job.completed"
    assert end_of(results, second, plane).type == "dev.vwm.job.completed"
    # Held longer than VWM_PROMPT_WAIT_S: the one waiting fails, and never runs later.
    post_binary(client, first + "-long", {**data, "prompt": f"sleep {PROMPT_WAIT_S + 3}"})
    until(lambda: any(j["status"] == "running" for j in jobs_of(client, session_id)), plane)
    post_binary(client, third, {**data, "prompt": "say hi"})
    busy = end_of(results, third, plane)
    assert (busy.type, busy.data.error.code) == ("dev.vwm.job.failed", "session_busy")
    assert end_of(results, first + "-long", plane, 60).type == "dev.vwm.job.completed"
    third_job = client.get(f"/v1/jobs/{prompt_job_id(SENDER, third)}").json()
    assert (third_job["status"], third_job["error"]["code"]) == ("failed", "session_busy")
    # A sync prompt on a busy session is still refused at once, not queued.
    post_binary(client, third + "-hold", {**data, "prompt": "sleep 2"})
    until(lambda: any(j["status"] == "running" for j in jobs_of(client, session_id)), plane)
    sync = client.post("/v1/prompts", json={"session_id": session_id, "prompt": "say hi"})
    assert sync.status_code == 409 and sync.json()["error"]["code"] == "session_busy"


def test_a_request_relaunches_a_session_whose_harness_is_gone(
    plane: ControlPlane, client: httpx.Client, results: Subscriber
) -> None:
    session_id = ready_session(client, plane)
    before = set(harness_pids(plane.data_dir))
    kill_harnesses(plane.data_dir)  # every harness of the module's sessions: all relaunch
    until(lambda: not set(harness_pids(plane.data_dir)) & before, plane, 10)
    event_id = f"relaunch-{uuid.uuid4().hex[:8]}"
    post_binary(client, event_id, {"session_id": session_id, "prompt": "say hi"})
    assert end_of(results, event_id, plane).type == "dev.vwm.job.completed"
    assert client.get(f"/v1/sessions/{session_id}").json()["status"] == "ready"


def test_a_request_the_session_can_never_run_is_answered_with_job_failed(
    plane: ControlPlane, client: httpx.Client, results: Subscriber
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    post_binary(client, missing, {"session_id": "no-such-session", "prompt": "say hi"})
    answer = end_of(results, missing, plane)
    assert (answer.type, answer.data.error.code) == ("dev.vwm.job.failed", "session_not_found")
    assert answer.sessionid == "no-such-session"

    session_id = ready_session(client, plane)
    assert client.delete(f"/v1/sessions/{session_id}").status_code in (200, 202)
    ended = f"ended-{uuid.uuid4().hex[:8]}"
    with Subscriber() as reply_to:
        body = {"session_id": session_id, "prompt": "say hi", "reply_to": reply_to.url}
        post_binary(client, ended, body)
        answer = end_of(results, ended, plane)
        [replied] = until(reply_to.events, plane)
    assert (answer.type, answer.data.error.code) == ("dev.vwm.job.failed", "session_ended")
    assert replied.id == answer.id  # the sender's reply_to hears of it too
    job = client.get(f"/v1/jobs/{prompt_job_id(SENDER, ended)}").json()
    assert (job["status"], job["error"]["code"]) == ("failed", "session_ended")
    # Over HTTP the same refusals are the answer itself.
    for session, status, code in ((session_id, 409, "session_ended"), ("nope!", 404, "not_found")):
        body = {"session_id": session, "prompt": "say hi", "mode": "async"}
        answer = client.post("/v1/prompts", json=body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text


def test_bad_prompt_requests_are_refused_at_the_broker_with_stable_codes(
    plane: ControlPlane, client: httpx.Client
) -> None:
    base = {
        "ce-specversion": "1.0",
        "ce-source": SENDER,
        "ce-type": "dev.vwm.prompt.requested",
        "content-type": "application/json",
    }

    def refused(data: dict[str, Any], **ce: str) -> dict[str, Any]:
        headers = {**base, "ce-id": uuid.uuid4().hex, **{f"ce-{k}": v for k, v in ce.items()}}
        answer = client.post("/v1/broker", headers=headers, content=json.dumps(data))
        assert 400 <= answer.status_code < 500, (data, ce, answer.text)
        return dict(answer.json()["error"])

    assert refused({"prompt": "hi"})["code"] == "missing_extension"  # no session anywhere
    disagree = refused({"session_id": "a", "prompt": "hi"}, sessionid="b")
    assert disagree["code"] == "invalid_extension"
    assert refused({"session_id": "a"})["code"] == "invalid_payload"  # no prompt
    assert refused({"session_id": "a", "prompt": ""})["code"] == "invalid_payload"
    assert refused({"session_id": "a", "prompt": "hi", "timeout_s": 0})["code"] == "invalid_payload"
    ftp = {"session_id": "a", "prompt": "hi", "reply_to": "ftp://x/"}
    assert refused(ftp)["code"] == "invalid_payload"
    assert refused({"session_id": "a", "prompt": "hi"}, jobid="j1")["code"] == "invalid_extension"
    assert refused({"session_id": "a", "prompt": "hi", "mode": "sync"})["code"] == "invalid_payload"


def test_the_end_goes_to_reply_to_and_a_refused_reply_to_fails_the_request(
    plane: ControlPlane, client: httpx.Client, results: Subscriber
) -> None:
    session_id = ready_session(client, plane)
    with Subscriber() as reply_to:
        event_id = f"reply-{uuid.uuid4().hex[:8]}"
        data = {"session_id": session_id, "prompt": "say hi", "reply_to": reply_to.url}
        post_binary(client, event_id, data)
        [reply] = until(reply_to.events, plane)
    assert (reply.type, reply.causationid) == ("dev.vwm.job.completed", event_id)
    assert reply.jobid == prompt_job_id(SENDER, event_id)

    refused = f"refused-{uuid.uuid4().hex[:8]}"
    with_credentials = {**data, "reply_to": "https://user:secret@hooks.example.com/"}
    post_binary(client, refused, with_credentials)
    answer = end_of(results, refused, plane)
    assert (answer.type, answer.data.error.code) == ("dev.vwm.job.failed", "sink_url_invalid")
    assert "secret" not in answer.data.error.message
    job = client.get(f"/v1/jobs/{prompt_job_id(SENDER, refused)}").json()
    assert (job["status"], job["error"]["code"]) == ("failed", "sink_url_invalid")
