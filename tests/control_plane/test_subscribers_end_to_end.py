"""User subscriptions end to end on `vwm up` (a real control plane, real harnesses running the
real CLIs on the fake provider), through the HTTP API only: a subscriber gets a job's events,
sync or streamed, with claude and codex, in `seq` order with no gap and equal to the job's own
event log; a sink that is down for a while gets every event once it is back, in order; one
that never comes back has its events sent to the dead-letter sink with Knative's extensions.

One control plane serves the module; each test makes its own sessions and filters on them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from eventing.events import JobOutput, VwmEvent
from eventing.job_events import JobEvent
from tests.control_plane.conftest import ControlPlane, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.harness_process import free_port
from tests.support.sse import iter_sse
from tests.support.subscriber import Received, Subscriber
from tests.support.workers import add_cli_workers

pytestmark = pytest.mark.cli

CLIS = ("claude", "codex")
STARTED, OUTPUT, COMPLETED = "dev.vwm.job.started", "dev.vwm.job.output", "dev.vwm.job.completed"
# Short, so a test takes seconds: linear waits 0, 0.2, 0.4, ... s (about 38 s for all 20).
PATIENT = {"retry": 20, "backoffPolicy": "linear", "backoffDelay": "PT0.2S"}
IMPATIENT = {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.1S"}
# Failed attempts at a PATIENT sink before it comes back: 0.1 * (n-1) * (n-2) s, about 3 s.
DOWN_FOR_ATTEMPTS = 7

Subscribe = Callable[[str, list[dict[str, Any]], str, dict[str, Any] | None], None]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, fake_provider: Any) -> Iterator[ControlPlane]:
    base = tmp_path_factory.mktemp("subscribers")
    plane = ControlPlane(base / "data", {"FAKE_PROVIDER_KEY": f"subs-{uuid.uuid4().hex[:8]}"})
    plane.start()
    try:
        repo = make_bare_repo(base / "worker.git", {"README.md": "# knowledge\n"})
        with plane.client() as admin:
            for cli in CLIS:  # a runtime and a worker named after each CLI
                add_cli_workers(admin, cli, fake_provider.base_url, repo)
        yield plane
    finally:
        plane.stop()
        kill_harnesses(plane.data_dir)


@pytest.fixture(scope="module")
def client(plane: ControlPlane) -> Iterator[httpx.Client]:
    with plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "subscriber", "scope": "client"})
        assert created.status_code == 201, created.text
    with plane.client(created.json()["key"]) as client:
        yield client


@pytest.fixture
def subscribe(client: httpx.Client) -> Iterator[Subscribe]:
    """Makes subscriptions; those of the test are deleted after it."""
    made: list[str] = []

    def make(
        name: str, filters: list[dict[str, Any]], sink: str, delivery: dict[str, Any] | None
    ) -> None:
        body: dict[str, Any] = {"name": name, "filters": filters, "sink": sink}
        if delivery is not None:
            body["delivery"] = delivery
        answer = client.post("/v1/subscriptions", json=body)
        assert answer.status_code == 201, answer.text
        made.append(name)

    yield make
    for name in made:
        client.delete(f"/v1/subscriptions/{name}")


def until(check: Callable[[], Any], what: str, plane: ControlPlane, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} within {within} s\n{plane.log()[-4000:]}"
        time.sleep(0.05)
    return result


def ready_sessions(client: httpx.Client, plane: ControlPlane, worker: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        created = client.post("/v1/sessions", json={"worker": worker})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    until(
        lambda: all(client.get(f"/v1/sessions/{s}").json()["status"] == "ready" for s in ids),
        f"{count} {worker} sessions are ready",
        plane,
    )
    return ids


def job_events_of(session_id: str) -> list[dict[str, Any]]:
    """Knative's `filters` (a list, ANDed) for every job event of one session."""
    return [{"prefix": {"type": "dev.vwm.job."}}, {"exact": {"sessionid": session_id}}]


def run_prompt(client: httpx.Client, session_id: str, mode: str) -> str:
    """Runs a prompt to its end (a stream is read to its last event); the job's id."""
    body = {"session_id": session_id, "prompt": "say hi", "mode": mode}
    if mode == "sync":
        ran = client.post("/v1/prompts", json=body)
        assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
        return str(ran.json()["id"])
    with client.stream("POST", "/v1/prompts", json=body) as response:
        assert response.status_code == 200, response.read()
        streamed = [JobEvent.model_validate_json(frame.data) for frame in iter_sse(response)]
    job_id = streamed[0].job_id
    assert streamed[-1].kind == "job_finished", [e.kind for e in streamed]
    assert streamed[-1].data["status"] == "succeeded", streamed[-1].data
    assert streamed == job_log(client, job_id), "the stream is the job's log"
    return job_id


def job_log(client: httpx.Client, job_id: str) -> list[JobEvent]:
    """The job's own event log (`GET /v1/jobs/{id}/events`), checked to be 1..N with no gap."""
    frames = list(iter_sse(client.get(f"/v1/jobs/{job_id}/events")))
    log = [JobEvent.model_validate_json(frame.data) for frame in frames]
    assert [frame.id for frame in frames] == [str(event.seq) for event in log]
    assert [event.seq for event in log] == list(range(1, len(log) + 1))
    assert log[0].kind == "job_started" and log[-1].kind == "job_finished"
    return log


def unique(events: list[VwmEvent]) -> list[VwmEvent]:
    """At least once: a duplicate carries the same id, and only the first counts."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            kept.append(event)
    return kept


def of_job(events: list[VwmEvent], job_id: str) -> list[VwmEvent]:
    return unique([event for event in events if event.jobid == job_id])


def assert_no_gap(events: list[VwmEvent]) -> None:
    """In arrival order, each event starts right after the one before (a batch covers
    ``first_seq..last_seq``), from seq 1."""
    covered = 0
    for event in events:
        first = event.data.first_seq if isinstance(event.data, JobOutput) else event.seq
        assert first == covered + 1, ([(e.type, e.seq) for e in events], event.type, covered)
        assert event.seq is not None
        covered = event.seq


def assert_equals_the_log(events: list[VwmEvent], log: list[JobEvent]) -> None:
    """A job's CloudEvents, as a subscriber got them, say what its event log says: the start,
    every agent event (seq, kind, data, time) in its batch, and the end."""
    assert [e.type for e in events[:1] + events[-1:]] == [STARTED, COMPLETED], [
        e.type for e in events
    ]
    assert {e.type for e in events[1:-1]} == {OUTPUT}, [e.type for e in events]
    assert_no_gap(events)
    started, outputs, completed = events[0], events[1:-1], events[-1]
    assert started.seq == log[0].seq == 1
    assert started.data.model_dump(include={"prompt", "cli"}) == {
        "prompt": log[0].data["prompt"],
        "cli": log[0].data["cli"],
    }
    got = [
        (item.seq, str(item.kind), item.data, item.ts)
        for batch in outputs
        if isinstance(batch.data, JobOutput)
        for item in batch.data.events
    ]
    assert got == [(entry.seq, entry.kind, entry.data, entry.ts) for entry in log[1:-1]]
    assert completed.seq == log[-1].seq
    finished = completed.data.model_dump(mode="json", include={"status", "summary"})
    assert finished["status"] == log[-1].data["status"] == "succeeded"
    assert finished["summary"]["final_text"] == log[-1].data["summary"]["final_text"]


def retries(plane: ControlPlane, subscription: str) -> list[str]:
    """The event ids of the failed deliveries to `subscription` that the broker logged as
    retried, in order."""
    found = []
    for line in plane.log().splitlines():
        try:
            entry = json.loads(line) if line.startswith("{") else {}
        except json.JSONDecodeError:  # the line being written
            continue
        if entry.get("msg") == "delivery failed: retrying" and (
            entry.get("subscription") == subscription
        ):
            found.append(str(entry["event_id"]))
    return found


@pytest.mark.parametrize("cli", CLIS)
def test_a_subscriber_gets_streamed_and_sync_jobs_gapless_in_order_as_their_log_says(
    cli: str, plane: ControlPlane, client: httpx.Client, subscribe: Subscribe
) -> None:
    watched, other = ready_sessions(client, plane, cli, 2)
    with Subscriber() as outputs, Subscriber() as jobs:
        # The same kind of filter written two ways: a list (ANDed) and `all`.
        only_outputs = [{"exact": {"type": OUTPUT}}, {"exact": {"sessionid": watched}}]
        subscribe(f"{cli}-outputs", only_outputs, outputs.url, None)
        subscribe(f"{cli}-jobs", [{"all": job_events_of(watched)}], jobs.url, None)
        runs = [(watched, "stream"), (other, "stream"), (watched, "sync"), (watched, "stream")]
        job_ids = [run_prompt(client, session, mode) for session, mode in runs]
        watched_jobs = [
            job for job, (session, _) in zip(job_ids, runs, strict=True) if session == watched
        ]
        logs = {job: job_log(client, job) for job in watched_jobs}

        # Ordered delivery: once the last job's end is in, everything queued before it is too.
        last = watched_jobs[-1]
        until(
            lambda: any(e.type == COMPLETED and e.jobid == last for e in jobs.events()),
            f"the end of {cli} job {last} reaches the subscriber",
            plane,
        )
        every = unique(jobs.events())
        assert {e.sessionid for e in every} == {watched}
        for job_id, log in logs.items():
            assert_equals_the_log(of_job(every, job_id), log)
        # In arrival order, job after job: ordered per subscription, not only within a job.
        assert every == [e for job_id in watched_jobs for e in of_job(every, job_id)]

        until(
            lambda: any(e.seq == logs[last][-2].seq and e.jobid == last for e in outputs.events()),
            f"the last output batch of {cli} job {last} reaches the output subscriber",
            plane,
        )
        batches = unique(outputs.events())
    assert {e.type for e in batches} == {OUTPUT}
    assert batches == [e for e in every if e.type == OUTPUT]


def test_a_sink_down_for_a_while_catches_up_and_one_never_back_goes_to_the_dead_letter_sink(
    plane: ControlPlane, client: httpx.Client, subscribe: Subscribe
) -> None:
    (session,) = ready_sessions(client, plane, "claude", 1)
    comes_back = Subscriber()  # its port is chosen; nothing listens on it yet
    never_listens = f"http://127.0.0.1:{free_port()}/"
    filters = job_events_of(session)
    with Subscriber(status=503, answer=b"down for good") as refusing, Subscriber() as dead:
        dead_letters = {**IMPATIENT, "deadLetterSink": {"uri": dead.url}}
        subscribe("comes-back", filters, comes_back.url, PATIENT)
        subscribe("never-listens", filters, never_listens, dead_letters)
        subscribe("always-503", filters, refusing.url, dead_letters)
        job_id = run_prompt(client, session, "sync")
        log = job_log(client, job_id)

        def dead_from(url: str) -> list[Received]:
            return [r for r in dead.received() if r.headers.get("ce-knativeerrordest") == url]

        until(
            lambda: all(
                any(r.event.type == COMPLETED for r in dead_from(url))
                for url in (never_listens, refusing.url)
            ),
            "every event of the job is dead-lettered from both sinks that never come back",
            plane,
        )

        # Meanwhile the sink that comes back was tried, and tried again, on the job's first
        # event alone: an ordered subscription sends nothing after an event still retried.
        def down_long_enough() -> list[str]:
            tried = retries(plane, "comes-back")
            return tried if len(tried) >= DOWN_FOR_ATTEMPTS else []

        tried = until(
            down_long_enough, f"{DOWN_FOR_ATTEMPTS} failed deliveries to the sink down", plane
        )
        comes_back.start()
        try:
            until(
                lambda: any(e.type == COMPLETED for e in comes_back.events()),
                "the job's end reaches the sink once it is back",
                plane,
            )
        finally:
            comes_back.stop()
        back = of_job(comes_back.events(), job_id)
        refused = refusing.events()

    assert_equals_the_log(back, log)
    assert unique(comes_back.events()) == back
    assert set(tried) == {back[0].id}, tried
    assert refused and {e.id for e in refused} <= {e.id for e in back}  # tried, never taken

    for url in (never_listens, refusing.url):
        letters = dead_from(url)
        assert [r.event for r in letters] == back, url  # every event, in order
        assert all(r.headers["ce-knativeerrordest"] == url for r in letters)
    for letter in dead_from(refusing.url):
        assert letter.headers["ce-knativeerrorcode"] == "503"
        assert base64.b64decode(letter.headers["ce-knativeerrordata"]) == b"down for good"
    for letter in dead_from(never_listens):
        # No answer at all: no status to report (as Knative), and the error as the data.
        assert "ce-knativeerrorcode" not in letter.headers
        assert b"Connect" in base64.b64decode(letter.headers["ce-knativeerrordata"])
