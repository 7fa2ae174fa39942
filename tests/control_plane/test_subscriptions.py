"""`/v1/subscriptions` on `vwm up` (a real control plane, a real harness running Claude Code's
stand-in on the fake provider): the API, and a subscriber on a local port that gets one
session's job events from the embedded broker in `seq` order with no gap, the job's end last."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from eventing import codec
from eventing.events import VwmEvent
from tests.control_plane.conftest import ControlPlane, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers

pytestmark = pytest.mark.cli

JOB_TYPES = ("dev.vwm.job.started", "dev.vwm.job.output", "dev.vwm.job.completed")


class Recorder:
    """A CloudEvents sink on a local port in a thread: records every event it is sent."""

    def __init__(self) -> None:
        self.events: list[VwmEvent] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                event = codec.from_http(dict(self.headers.items()), body)
                with recorder._lock:
                    recorder.events.append(event)
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> list[VwmEvent]:
        with self._lock:
            return list(self.events)


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    key = f"subscriptions-{uuid.uuid4().hex[:8]}"
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": key})
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def client_key(plane: ControlPlane) -> str:
    with plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "subscriber", "scope": "client"})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def until(check: Callable[[], Any], what: str, plane: ControlPlane, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} within {within} s\n{plane.log()[-4000:]}"
        time.sleep(0.1)
    return result


def test_the_subscriptions_api(plane: ControlPlane) -> None:
    body = {
        "name": "watcher",
        "filters": [{"exact": {"type": "dev.vwm.job.output"}}],
        "sink": "https://hooks.example.com/vwm",
        "delivery": {"retry": 3, "deadLetterSink": "https://hooks.example.com/dead"},
    }
    with plane.client(client_key(plane)) as client:
        created = client.post("/v1/subscriptions", json=body)
        assert created.status_code == 201, created.text
        made = created.json()
        assert {k: made[k] for k in body} == body
        assert made["created_by"] == "client"
        again = client.post("/v1/subscriptions", json=body)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "subscription_exists"
        reserved = client.post("/v1/subscriptions", json={**body, "name": "control-plane"})
        assert reserved.status_code == 409
        assert [s["name"] for s in client.get("/v1/subscriptions").json()["items"]] == ["watcher"]
        assert client.get("/v1/subscriptions/watcher").json() == made

        def refused(change: dict[str, Any]) -> dict[str, Any]:
            answer = client.post("/v1/subscriptions", json={**body, "name": "other", **change})
            assert answer.status_code == 422, (change, answer.text)
            return dict(answer.json()["error"])

        bad_filter = refused({"filters": [{"exact": {"type": "a"}}, {"nope": {}}]})
        assert bad_filter["code"] == "invalid_filter"
        assert bad_filter["details"]["path"].startswith("filters[1]")
        assert refused({"filters": [{"cesql": "type = 'x'"}]})["code"] == "unsupported_filter"
        assert refused({"delivery": {"retry": -1}})["code"] == "invalid_delivery"
        for url in ("ftp://example.com/", "https://user:pw@example.com/", "https://", "x"):
            assert refused({"sink": url})["code"] == "sink_url_invalid", url
        assert refused({"sink": "https://example.com/\x07"})["code"] == "sink_url_invalid"
        dead = {"deadLetterSink": "ftp://example.com/"}
        assert refused({"delivery": dead})["code"] in ("sink_url_invalid", "invalid_delivery")
        assert refused({"name": "Not_A_Name"})["code"] == "invalid_request"
        huge = [{"exact": {"type": "x" * 40_000}}, {"exact": {"source": "y" * 40_000}}]
        assert refused({"filters": huge})["code"] == "subscription_too_large"

        # vwm up allows local sinks as it allows local repos; with the setting off, refused.
        local = {**body, "name": "local", "sink": "http://127.0.0.1:9/"}
        assert client.post("/v1/subscriptions", json=local).status_code == 201
        with plane.client() as admin:
            off = admin.put("/v1/admin/settings/allow_local_repos", json={"value": False})
            assert off.status_code in (200, 204), off.text
        for sink in ("http://localhost:9/", "http://[::1]:9/", "http://127.0.0.2/"):
            error = refused({"sink": sink})
            assert error["code"] == "sink_url_not_allowed", sink
            assert "allow_local_repos" in error["message"]

        assert client.delete("/v1/subscriptions/watcher").status_code == 204
        assert client.get("/v1/subscriptions/watcher").status_code == 404
        assert client.delete("/v1/subscriptions/watcher").status_code == 404
    with plane.client("vwm_wrong") as stranger:
        assert stranger.get("/v1/subscriptions").status_code == 401
        assert stranger.post("/v1/subscriptions", json=body).status_code == 401


def test_a_subscriber_gets_a_sessions_job_events_in_seq_order_with_no_gap(
    plane: ControlPlane, fake_provider, tmp_path: Path
) -> None:
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as admin:
        add_claude_workers(admin, fake_provider.base_url, repo)
    with Recorder() as outputs, Recorder() as jobs, plane.client(client_key(plane)) as client:
        sessions = [client.post("/v1/sessions", json={"worker": "w"}).json()["id"] for _ in "ab"]
        watched, other = sessions
        # Knative's `filters` is a list, ANDed; the same written with `all`.
        only_outputs = [
            {"exact": {"type": "dev.vwm.job.output"}},
            {"exact": {"sessionid": watched}},
        ]
        every_job_event = [
            {"all": [{"prefix": {"type": "dev.vwm.job."}}, {"exact": {"sessionid": watched}}]}
        ]
        for name, filters, sink in (
            ("outputs", only_outputs, outputs.url),
            ("jobs", every_job_event, jobs.url),
        ):
            made = client.post(
                "/v1/subscriptions", json={"name": name, "filters": filters, "sink": sink}
            )
            assert made.status_code == 201, made.text
        until(
            lambda: all(
                client.get(f"/v1/sessions/{s}").json()["status"] == "ready" for s in sessions
            ),
            "both sessions are ready",
            plane,
        )
        job_ids = []
        for session_id, prompt in ((watched, "say hi"), (other, "say hi"), (watched, "say hi")):
            ran = client.post("/v1/prompts", json={"session_id": session_id, "prompt": prompt})
            assert ran.json()["status"] == "succeeded", ran.text
            if session_id == watched:
                job_ids.append(ran.json()["id"])

        def finished() -> bool:
            ends = [e for e in jobs.snapshot() if e.type == "dev.vwm.job.completed"]
            return len(ends) == len(job_ids)

        until(finished, "both jobs' ends reach the subscriber", plane, 60)
        time.sleep(0.5)  # anything out of order or extra would have come by now

        every = jobs.snapshot()
        assert {e.sessionid for e in every} == {watched}
        assert {e.sessionid for e in outputs.snapshot()} == {watched}
        for job_id in job_ids:
            mine = _unique([e for e in every if e.jobid == job_id])
            assert mine[0].type == "dev.vwm.job.started"
            assert mine[-1].type == "dev.vwm.job.completed"
            assert {e.type for e in mine[1:-1]} <= {"dev.vwm.job.output"}
            assert len(mine) >= 3, [e.type for e in mine]  # at least one output batch
            _assert_no_gap(mine)
            batches = _unique([e for e in outputs.snapshot() if e.jobid == job_id])
            assert batches == mine[1:-1]


def _unique(events: list[VwmEvent]) -> list[VwmEvent]:
    """At least once: a duplicate carries the same id, and only the first counts."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            kept.append(event)
    return kept


def _assert_no_gap(events: list[VwmEvent]) -> None:
    """Each event starts right after the one before: a batch covers ``first_seq..last_seq``."""
    covered: int | None = None
    for event in events:
        first = getattr(event.data, "first_seq", event.seq)
        if covered is not None:
            assert first == covered + 1, (event.type, first, covered)
        covered = event.seq
