"""`vwm up` killed (SIGKILL) or stopped (SIGTERM) at the worst moments, then started again:
nothing is lost.

During an async job, a sync job, a session start and a session end: every job reaches its
true final status with its telemetry, every session leaves `provisioning` and `ending`, the
next prompt works, and no harness is left without a session. The harnesses outlive the control
plane; a job's events wait in its harness's outbox until the broker is back, and the start-up
reconciliation records what the events did not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control_plane.conftest import ControlPlane, harness_pids, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers
from tests.support.sse import iter_sse

pytestmark = pytest.mark.cli

SETTLE_S = 60  # how long a restarted control plane may take to set everything right
SIGNALS = pytest.mark.parametrize("stop_with", [signal.SIGKILL, signal.SIGTERM], ids=str)
FAST = {
    # The reconciler looks often, and leaves alone only what changed in the last second.
    "VWM_TICK_S": "1",
    "VWM_RECONCILE_GRACE_S": "1",
    # The harness retries its broker quickly once it is back.
    "VWM_EVENT_BACKOFF_S": "0.1",
    "VWM_EVENT_BACKOFF_CAP_S": "1",
}


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    key = f"restart-{uuid.uuid4().hex[:8]}"
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": key, **FAST})
    plane.key = key  # type: ignore[attr-defined]
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def set_up_worker(plane: ControlPlane, fake_provider, tmp_path: Path) -> None:
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo)


def new_session(plane: ControlPlane) -> str:
    with plane.client() as client:
        created = client.post("/v1/sessions", json={"worker": "w"})
    assert created.status_code == 201, (created.text, plane.log())
    return created.json()["id"]


def stop(plane: ControlPlane, how: signal.Signals) -> None:
    """Stop `vwm up` as an operator would: at once (SIGKILL) or asking it (SIGTERM)."""
    assert plane.proc is not None
    plane.proc.send_signal(how)
    try:
        plane.proc.wait(timeout=30)
    except Exception:
        os.killpg(plane.proc.pid, signal.SIGKILL)
        plane.proc.wait()
        raise AssertionError(f"vwm up did not stop on {how!r}:\n{plane.log()}") from None


def until(check: Callable[[], Any], what: str, plane: ControlPlane, within: float = SETTLE_S):
    deadline = time.monotonic() + within
    while True:
        if result := check():
            return result
        assert time.monotonic() < deadline, f"{what} within {within} s\n{plane.log()[-6000:]}"
        time.sleep(0.2)


def job(plane: ControlPlane, job_id: str) -> dict[str, Any]:
    with plane.client() as client:
        return client.get(f"/v1/jobs/{job_id}").json()


def session(plane: ControlPlane, session_id: str) -> dict[str, Any]:
    with plane.client() as client:
        return client.get(f"/v1/sessions/{session_id}").json()


def telemetry_of(plane: ControlPlane, session_id: str) -> list[dict[str, Any]]:
    with plane.client() as client:
        answer = client.get("/v1/telemetry/requests", params={"session_id": session_id})
    answer.raise_for_status()
    return answer.json()["items"]


def running_job(plane: ControlPlane, session_id: str, mode: str) -> str:
    """A job whose CLI is answering, slowly (4 s); returns its id once it streams."""
    if mode == "async":
        with plane.client() as client:
            job_id = client.post(
                "/v1/prompts", json={"session_id": session_id, "prompt": "sleep 4", "mode": mode}
            ).json()["id"]
    else:

        def wait_in_vain() -> None:  # its caller is cut off by SIGKILL (SIGTERM lets it end)
            with plane.client() as client, contextlib.suppress(httpx.TransportError):
                client.post("/v1/prompts", json={"session_id": session_id, "prompt": "sleep 4"})

        threading.Thread(target=wait_in_vain, daemon=True).start()

        def listed() -> str | None:
            with plane.client() as client:
                rows = client.get(f"/v1/sessions/{session_id}/jobs").json()["items"]
            return rows[0]["id"] if rows else None

        job_id = until(listed, "the sync job is listed", plane, within=20)
    with plane.client() as client, client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for event in iter_sse(stream):
            if event.event == "text_delta":
                break
    return job_id


def the_next_prompt_works(plane: ControlPlane, session_id: str) -> None:
    with plane.client() as client:
        answer = client.post("/v1/prompts", json={"session_id": session_id, "prompt": "say hi"})
    job = answer.json()
    # The error first: pytest shortens a long message from its end.
    assert job["status"] == "succeeded", (job.get("error"), plane.log()[-4000:])


def only_harnesses_of(plane: ControlPlane, *session_ids: str) -> None:
    """Every harness process belongs to one of `session_ids`, one each."""

    def owners() -> list[str]:
        found = []
        for pid in harness_pids(plane.data_dir):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            found += [
                v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"VWM_SESSION_ID=")
            ]
            # A warm pool member shows only its mark; its claim names the workspace it serves.
            found += [
                Path(Path(v.split(b"=", 1)[1].decode(), "workspace").read_text()).parent.name
                for v in environ
                if v.startswith(b"VWM_POOL_MEMBER=")
            ]
        return sorted(found)

    until(lambda: owners() == sorted(session_ids), f"harnesses only of {session_ids}", plane)


@SIGNALS
@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_job_cut_off_from_its_control_plane_is_recorded_once_it_is_back(
    plane, fake_provider, tmp_path, stop_with, mode
) -> None:
    set_up_worker(plane, fake_provider, tmp_path)
    session_id = new_session(plane)
    job_id = running_job(plane, session_id, mode)

    stop(plane, stop_with)
    plane.start()

    finished = until(
        lambda: (row := job(plane, job_id))["status"] not in ("queued", "running") and row,
        "the job reaches its final status",
        plane,
    )
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["final_text"] == "hello from fake model"
    [record] = until(lambda: telemetry_of(plane, session_id), "its telemetry", plane)
    assert record["job_id"] == job_id and record["tokens"]["output"] > 0
    with plane.client() as client:
        replay = list(iter_sse(client.get(f"/v1/jobs/{job_id}/events")))
    assert replay[0].event == "job_started" and replay[-1].event == "job_finished"
    assert [int(e.id) for e in replay] == list(range(1, len(replay) + 1))
    the_next_prompt_works(plane, session_id)
    assert len(telemetry_of(plane, session_id)) == 2  # recorded once, however it was learned
    only_harnesses_of(plane, session_id)


@SIGNALS
def test_a_session_cut_off_while_starting_leaves_provisioning(
    plane, fake_provider, tmp_path, stop_with
) -> None:
    set_up_worker(plane, fake_provider, tmp_path)
    with plane.client() as client:
        created = client.post("/v1/sessions", json={"worker": "w", "wait": False})
    assert created.status_code == 202, created.text
    session_id = created.json()["id"]

    stop(plane, stop_with)
    plane.start()

    settled = until(
        lambda: (row := session(plane, session_id))["status"] != "provisioning" and row,
        "the session leaves provisioning",
        plane,
    )
    assert settled["status"] in ("ready", "failed"), settled
    if settled["status"] == "failed":
        assert settled["error"]["code"] == "session_interrupted"
        only_harnesses_of(plane)
    else:
        the_next_prompt_works(plane, session_id)
    another = new_session(plane)
    the_next_prompt_works(plane, another)
    live = [another] + ([session_id] if settled["status"] == "ready" else [])
    only_harnesses_of(plane, *live)


@SIGNALS
def test_a_session_cut_off_while_ending_ends(plane, fake_provider, tmp_path, stop_with) -> None:
    set_up_worker(plane, fake_provider, tmp_path)
    session_id = new_session(plane)
    the_next_prompt_works(plane, session_id)

    [harness] = harness_pids(plane.data_dir)

    def end_in_vain() -> None:
        with plane.client() as client, contextlib.suppress(httpx.TransportError):
            client.delete(f"/v1/sessions/{session_id}")

    # The harness held (SIGSTOP) so that the end is surely half done when `vwm up` stops.
    os.killpg(harness, signal.SIGSTOP)
    try:
        threading.Thread(target=end_in_vain, daemon=True).start()
        until(lambda: session(plane, session_id)["status"] == "ending", "the end begins", plane)
        stop(plane, stop_with)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the end may have replaced it already
            os.killpg(harness, signal.SIGCONT)
    plane.start()

    ended = until(
        lambda: (row := session(plane, session_id))["status"] not in ("ready", "ending") and row,
        "the session ends",
        plane,
    )
    assert ended["status"] == "ended", ended
    assert ended["result"]["repos"], ended  # its work was saved
    only_harnesses_of(plane)
    again = new_session(plane)
    the_next_prompt_works(plane, again)


@pytest.fixture
def events_only(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    """A control plane whose reconciler never looks at jobs: only the events can record them."""
    key = f"events-{uuid.uuid4().hex[:8]}"
    env = {**FAST, "FAKE_PROVIDER_KEY": key, "VWM_TICK_S": "0", "VWM_RECONCILE_GRACE_S": "3600"}
    plane = ControlPlane(tmp_path / "data", env)
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def test_events_published_while_the_broker_is_down_arrive_once_it_is_back(
    events_only: ControlPlane, fake_provider, tmp_path
) -> None:
    plane = events_only
    set_up_worker(plane, fake_provider, tmp_path)
    session_id = new_session(plane)
    job_id = running_job(plane, session_id, "async")
    stop(plane, signal.SIGKILL)
    jobs_dir = plane.data_dir / "sessions" / session_id / "workspace" / ".vwm" / "jobs"

    def finished_on_harness() -> bool:
        meta = json.loads((jobs_dir / f"{job_id}.json").read_text())
        return meta["status"] == "succeeded"

    until(finished_on_harness, "the job ends on its harness, the broker still down", plane)
    logged = [json.loads(line) for line in (jobs_dir / f"{job_id}.jsonl").read_text().splitlines()]
    plane.start()

    finished = until(
        lambda: (row := job(plane, job_id))["status"] == "succeeded" and row,
        "the job's events arrive",
        plane,
    )
    assert finished["result"]["final_text"] == "hello from fake model"
    with plane.client() as client:
        replay = [e.json for e in iter_sse(client.get(f"/v1/jobs/{job_id}/events"))]
    assert [(e["seq"], e["kind"]) for e in replay] == [(e["seq"], e["kind"]) for e in logged]
    [record] = telemetry_of(plane, session_id)
    assert record["job_id"] == job_id and record["tokens"]["output"] > 0
