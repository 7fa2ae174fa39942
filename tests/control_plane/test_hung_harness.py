"""A hung harness never hangs the control plane. Over real HTTP on the embedded system, with real
harnesses, claude and the fake provider, and short bounds set through the settings:

- stopped (SIGSTOP) before a call: it is replaced at once, the call just works;
- mute (accepts connections, never answers): the caller gets 503 `harness_unavailable` within the
  bound, the job is `failed` (never `queued`), nothing ran, the next prompt works;
- silent mid-job (stopped while the CLI answers): the job fails within the silence bound and the
  harness is replaced;
- a long job whose events are further apart than the silence bound is not cut off: heartbeats
  keep its stream alive;
- cancelling a job or ending the session on a mute harness answers in time;
- a job left `queued` by a request that died mid-dispatch (the control plane was killed) is
  failed once its dispatch bound passed, and never runs;
- a job's stream broken on the way while the harness runs on is followed again from the last
  event sent: no gap, no double, the job not failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from functions.job_relay import REATTACH_LIMIT
from tests.control_plane.conftest import ControlPlane, harness_pids, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers
from tests.support.raw_server import raw_server, silent
from tests.support.sse import iter_sse

pytestmark = pytest.mark.cli

BOUNDS = {
    "VWM_HARNESS_CONNECT_TIMEOUT_S": "1",
    "VWM_HARNESS_CALL_TIMEOUT_S": "2",
    "VWM_HEARTBEAT_S": "0.3",
    "VWM_HARNESS_STREAM_IDLE_S": "1.5",
    "VWM_HARNESS_CLOCK_SKEW_S": "1",
    "VWM_HARNESS_STARTUP_GRACE_S": "1",
    "VWM_HARNESS_BOOTSTRAP_TIMEOUT_S": "3",
    "VWM_HARNESS_READY_TIMEOUT_S": "10",
    # The reconciler finds a job whose harness fell silent (no caller follows an async job).
    "VWM_TICK_S": "1",
    "VWM_RECONCILE_GRACE_S": "1",
}
DISPATCH_S = 2 * 1 + 3 + 2 + 1  # HarnessCallSettings.dispatch_s for these bounds
STALE_AFTER_S = 2 * DISPATCH_S + 10  # two dispatch attempts and a relaunch between them
# A call to a hung harness: its bound, then a probe, a kill and a fresh harness. Generous for a
# busy CI machine, and far below what a hung call used to cost (forever).
ANSWER_WITHIN_S = 20


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    key = f"hung-{uuid.uuid4().hex[:8]}"
    plane = ControlPlane(
        tmp_path / "data", {"FAKE_PROVIDER_KEY": key, "VWM_ALLOW_LOCAL_REPOS": "1", **BOUNDS}
    )
    plane.key = key  # type: ignore[attr-defined]
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def start_session(plane: ControlPlane, client, fake_provider, tmp_path: Path) -> str:
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    add_claude_workers(client, fake_provider.base_url, repo)
    created = client.post("/v1/sessions", json={"worker": "w"})
    assert created.status_code == 201, (created.text, plane.log())
    return created.json()["id"]


def harness_pid(plane: ControlPlane) -> int:
    [pid] = harness_pids(plane.data_dir)
    return pid


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP the harness; SIGCONT it at the end (if it still exists), as an operator would."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)


def send_harness_calls_to(plane: ControlPlane, session_id: str, port: int) -> int:
    """The session's handle now names a port where something accepts connections and never
    answers: what the control plane sees of a harness whose event loop is stuck. Returns the
    port it named before."""
    with sqlite3.connect(plane.data_dir / "vwm.sqlite3") as db:
        (raw,) = db.execute(
            "SELECT runtime_state FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        handle = json.loads(raw)
        before = handle["state"]["port"]
        handle["state"]["port"] = port
        db.execute(
            "UPDATE sessions SET runtime_state = ? WHERE id = ?", (json.dumps(handle), session_id)
        )
    return before


def job_start_sent_to(mute) -> dict:
    """The body of the job start the mute server read (it also reads the readiness probes)."""
    [request] = [bytes(b) for b in mute.received if b.startswith(b"POST /v1/jobs ")]
    body = request.split(b"\r\n\r\n", 1)[1].decode()
    return json.JSONDecoder().raw_decode(body)[0]


def answering_slowly(client, sid: str) -> str:
    """An async job whose CLI is answering, slowly (30 s); returns its id."""
    job = client.post(
        "/v1/prompts", json={"session_id": sid, "prompt": "sleep 30", "mode": "async"}
    ).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        for event in iter_sse(stream):
            if event.event == "text_delta":
                break
    return job["id"]


def job_traces(plane: ControlPlane, session_id: str, job_id: str) -> list[str]:
    """What a job that ran leaves in the workspace (meta, event log, stdout), whichever harness."""
    jobs = plane.data_dir / "sessions" / session_id / "workspace" / ".vwm" / "jobs"
    return sorted(p.name for p in jobs.glob(f"{job_id}.*"))


def test_a_stopped_harness_is_replaced_before_a_call_waits_on_it(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        old = harness_pid(plane)

        with stopped(old):
            started = time.monotonic()
            listing = client.get(f"/v1/sessions/{sid}/files")
            assert listing.status_code == 200, listing.text
            assert time.monotonic() - started < ANSWER_WITHIN_S
            prompt = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"})
            assert prompt.json()["status"] == "succeeded", (prompt.text, plane.log())
            assert gone(old)  # killed, never woken: it had requests to act on

        assert harness_pids(plane.data_dir) == [harness_pid(plane)] != [old]


def test_a_mute_harness_answers_503_in_time_fails_the_job_and_runs_nothing(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        first = harness_pid(plane)

        with raw_server(silent) as mute:
            send_harness_calls_to(plane, sid, mute.port)
            started = time.monotonic()
            listing = client.get(f"/v1/sessions/{sid}/files")
            took = time.monotonic() - started
        assert listing.status_code == 503, listing.text
        assert listing.json()["error"]["code"] == "harness_unavailable"
        assert "try again" in listing.json()["error"]["message"]
        assert took < ANSWER_WITHIN_S
        assert gone(first)  # replaced before the answer: trying again works
        assert client.get(f"/v1/sessions/{sid}/files").status_code == 200

        second = harness_pid(plane)
        body = {"session_id": sid, "prompt": "say hi", "idempotency_key": "once"}
        with raw_server(silent) as mute:
            send_harness_calls_to(plane, sid, mute.port)
            started, wall = time.monotonic(), time.time()
            refused = client.post("/v1/prompts", json=body)
            took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "harness_unavailable"
        assert took < ANSWER_WITHIN_S
        # The job start reached the mute "harness", with a deadline; no real harness ran it.
        start = job_start_sent_to(mute)
        # Its deadline: now + connect + call + clock skew (1 + 2 + 1 s), refused after that.
        assert wall + 4 <= start["not_after"] <= wall + 4 + took
        job_id = start["job_id"]
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "harness_unavailable"
        assert gone(second)
        assert job_traces(plane, sid, job_id) == []
        assert fake_provider.ledger.model_calls(key=plane.key) == []

        # Trying again, with the same key: a new attempt on the new harness, not the failure.
        again = client.post("/v1/prompts", json=body).json()
        assert again["status"] == "succeeded", (
            again.get("error"),
            plane.log()[-4000:],
        )  # error first: pytest cuts long messages
        assert again["id"] != job_id
        assert fake_provider.ledger.model_calls(key=plane.key)


def test_a_harness_that_falls_silent_mid_job_fails_it_and_is_replaced(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        old = harness_pid(plane)
        job = {"id": answering_slowly(client, sid)}

        with stopped(old):
            started = time.monotonic()
            while (row := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "running":
                assert time.monotonic() - started < ANSWER_WITHIN_S, plane.log()
                time.sleep(0.1)
            assert row["status"] == "failed", row
            # Two honest ends race here: the relay finds the stream silent and fails the job
            # (harness_unavailable), or the reconciler's tick (1 s in this plane) finds the
            # stopped process first and relaunches it, and the new harness reports the job it
            # found cut short (harness_restarted). A loaded machine decides which; both tell
            # the caller to send the prompt again.
            assert row["error"]["code"] in ("harness_unavailable", "harness_restarted"), row
            assert "send the prompt again" in row["error"]["message"]
            # The job fails first, then its harness is replaced (job_recording.lose_with_harness):
            # the stopped harness must be gone before anyone could wake it to finish the job.
            while not gone(old):
                assert time.monotonic() - started < ANSWER_WITHIN_S, plane.log()
                time.sleep(0.1)

        replay = list(iter_sse(client.get(f"/v1/jobs/{job['id']}/events")))
        assert replay[-1].event == "job_finished"
        assert replay[-1].json["data"]["status"] == "failed"
        after = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert after["status"] == "succeeded", (after, plane.log())
        assert gone(old)


def test_a_long_job_with_quiet_stretches_is_kept_alive_by_heartbeats(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        pid = harness_pid(plane)
        # Four words over 6 s: 2 s between events, longer than the 1.5 s silence bound.
        job = client.post("/v1/prompts", json={"session_id": sid, "prompt": "sleep 6"}).json()

        assert job["status"] == "succeeded", (job, plane.log())
        assert job["result"]["final_text"] == "hello from fake model"
        assert harness_pids(plane.data_dir) == [pid]  # the same harness, never replaced


def test_cancelling_a_job_on_a_mute_harness_stops_it_in_time(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        old = harness_pid(plane)
        job_id = answering_slowly(client, sid)

        with raw_server(silent) as mute:
            send_harness_calls_to(plane, sid, mute.port)
            started = time.monotonic()
            cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
            took = time.monotonic() - started
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "failed"  # its harness was replaced under it
        assert cancelled.json()["error"]["code"] == "harness_unavailable"
        assert took < ANSWER_WITHIN_S
        assert gone(old)
        after = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert after["status"] == "succeeded", (after, plane.log())


def test_ending_a_session_whose_harness_is_mute_does_not_wait_on_it(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        old = harness_pid(plane)

        with raw_server(silent) as mute:
            send_harness_calls_to(plane, sid, mute.port)
            started = time.monotonic()
            ended = client.delete(f"/v1/sessions/{sid}")
            took = time.monotonic() - started
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended"
        assert took < ANSWER_WITHIN_S
        assert gone(old)
        assert harness_pids(plane.data_dir) == []


def test_a_job_left_queued_by_a_dead_request_fails_after_its_dispatch_bound(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)

    with raw_server(silent) as mute:
        real_port = send_harness_calls_to(plane, sid, mute.port)

        def prompt() -> None:
            with plane.client(timeout=60) as client, contextlib.suppress(Exception):
                client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"})

        threading.Thread(target=prompt, daemon=True).start()
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while b"POST /v1/jobs " not in b"".join(mute.received):
            assert time.monotonic() < deadline, plane.log()
            time.sleep(0.05)
        os.kill(plane.proc.pid, signal.SIGKILL)  # mid-dispatch: the job row is still queued
        plane.proc.wait()
        job_id = job_start_sent_to(mute)["job_id"]
    send_harness_calls_to(plane, sid, real_port)
    plane.start()

    with plane.client(timeout=60) as client:
        busy = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"})
        assert busy.status_code == 409, busy.text  # within its bound it might still start
        deadline = time.monotonic() + STALE_AFTER_S + ANSWER_WITHIN_S
        while (row := client.get(f"/v1/jobs/{job_id}").json())["status"] == "queued":
            assert time.monotonic() < deadline, row
            time.sleep(0.2)
        assert row["status"] == "failed", row
        assert row["error"]["code"] == "harness_unavailable"
        after = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert after["status"] == "succeeded", (after, plane.log())
        assert job_traces(plane, sid, job_id) == []


def test_a_prompt_to_a_harness_that_refuses_connections_is_sent_again_to_a_new_one(
    plane, fake_provider, tmp_path
) -> None:
    """Refused at once (it died a moment ago): nothing can have run, so the job start is sent
    again to a relaunched harness and the caller never sees the hiccup."""
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        old = harness_pid(plane)
        with raw_server(silent) as closed:
            port = closed.port
        send_harness_calls_to(plane, sid, port)  # nothing listens there any more

        job = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()

        assert job["status"] == "succeeded", (job, plane.log())
        assert gone(old)


def test_a_harness_that_refuses_the_token_is_replaced_and_its_401_never_reaches_the_caller(
    plane, fake_provider, tmp_path
) -> None:
    """What a harness started under another token key looks like: it answers, as the right CLI,
    and refuses the control plane's token. Here: the handle of one session names the harness of
    another (whose token is derived from the other session's id)."""
    with plane.client(timeout=60) as client:
        mine = start_session(plane, client, fake_provider, tmp_path)
        other = client.post("/v1/sessions", json={"worker": "w"}).json()["id"]
        write = client.put(
            f"/v1/sessions/{other}/files/content",
            params={"path": "session_repo/theirs.txt"},
            content=b"theirs",
        )
        assert write.status_code == 200, write.text
        pids = set(harness_pids(plane.data_dir))
        with sqlite3.connect(plane.data_dir / "vwm.sqlite3") as db:
            (raw,) = db.execute(
                "SELECT runtime_state FROM sessions WHERE id = ?", (other,)
            ).fetchone()
        send_harness_calls_to(plane, mine, json.loads(raw)["state"]["port"])

        answers = [client.get(f"/v1/sessions/{mine}/files", params={"path": "session_repo"})]
        if answers[0].status_code == 503:  # replaced meanwhile: the retry it asks for works
            assert answers[0].json()["error"]["code"] == "harness_unavailable"
            answers.append(
                client.get(f"/v1/sessions/{mine}/files", params={"path": "session_repo"})
            )

        assert all(answer.status_code != 401 for answer in answers)
        assert answers[-1].status_code == 200, answers[-1].text
        names = {entry["name"] for entry in answers[-1].json()["entries"]}
        assert "theirs.txt" not in names  # its own workspace, never the other's
        # The other session's harness was left alone; this one's was replaced.
        assert client.get(f"/v1/sessions/{other}/files").status_code == 200
        after = set(harness_pids(plane.data_dir))
        assert len(after) == 2 and len(after & pids) == 1


EVENTS_REQUEST = re.compile(rb"^GET /v1/jobs/[^/ ]+/events ", re.MULTILINE)


def cutting_streams(harness_port: int, cuts: int) -> Callable[[socket.socket, bytearray], None]:
    """A raw_server handler that passes every connection through to the harness, but cuts the
    first `cuts` job event streams right after their first event: a stream broken on the way
    (a saturated machine, a proxy's idle cut) while the harness runs on, unharmed. The control
    plane keeps its connections to a harness open, so a stream's request may come on a
    connection that carried others before it."""
    left = [cuts]
    lock = threading.Lock()

    def wants_cut(request: bytes) -> bool:
        if not EVENTS_REQUEST.search(request):
            return False
        with lock:
            left[0] -= 1
            return left[0] >= 0

    def handle(conn: socket.socket, head: bytearray) -> None:
        cutting = threading.Event()
        if wants_cut(bytes(head)):
            cutting.set()
        with socket.create_connection(("127.0.0.1", harness_port)) as upstream:
            upstream.sendall(head)

            def requests() -> None:
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(65536):
                        if wants_cut(chunk):
                            cutting.set()
                        upstream.sendall(chunk)
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)

            threading.Thread(target=requests, daemon=True).start()
            with contextlib.suppress(OSError):
                while chunk := upstream.recv(65536):
                    conn.sendall(chunk)
                    if cutting.is_set() and b"id:" in chunk:
                        break  # one event through, then the connection drops
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    return handle


@pytest.mark.parametrize(
    ("cuts", "reattached", "from_the_record"),
    [(2, 2, False), (10, REATTACH_LIMIT, True)],
    ids=["followed-again", "then-from-the-stored-record"],
)
def test_a_stream_broken_while_the_harness_runs_on_is_followed_again_without_a_gap(
    plane, fake_provider, tmp_path, cuts: int, reattached: int, from_the_record: bool
) -> None:
    """Followed again from the last event sent, up to `REATTACH_LIMIT` times; past that, the
    rest comes from the job's record once the harness's events have stored it."""
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        pid = harness_pid(plane)
        port = send_harness_calls_to(plane, sid, 0)  # the harness's own port, kept for the proxy
        with raw_server(cutting_streams(port, cuts)) as proxy:
            send_harness_calls_to(plane, sid, proxy.port)
            # Words 2 s apart: each cut stream is followed again while the CLI is still answering.
            with client.stream(
                "POST",
                "/v1/prompts",
                json={"session_id": sid, "prompt": "sleep 4", "mode": "stream"},
            ) as stream:
                events = list(iter_sse(stream))

        ids = [int(event.id) for event in events if event.id]
        assert ids == list(range(1, len(ids) + 1)), ids  # every event once, none missing
        assert events[-1].event == "job_finished", (events, plane.log())
        assert events[-1].json["data"]["status"] == "succeeded"
        assert "hello from fake model" in "".join(
            event.json["data"].get("text", "") for event in events if event.event == "text_delta"
        )
        assert plane.log().count("re-attaching to the harness's stream") == reattached
        assert ("relaying from the stored record" in plane.log()) is from_the_record
        assert harness_pids(plane.data_dir) == [pid]  # the harness was never replaced
        job = client.get(f"/v1/jobs/{events[-1].json['job_id']}").json()
        assert job["status"] == "succeeded", job


def test_a_sync_prompt_whose_stream_breaks_is_followed_again_and_answers_the_whole_job(
    plane, fake_provider, tmp_path
) -> None:
    with plane.client(timeout=60) as client:
        sid = start_session(plane, client, fake_provider, tmp_path)
        pid = harness_pid(plane)
        port = send_harness_calls_to(plane, sid, 0)
        with raw_server(cutting_streams(port, cuts=2)) as proxy:
            send_harness_calls_to(plane, sid, proxy.port)
            job = client.post(
                "/v1/prompts", json={"session_id": sid, "prompt": "sleep 4", "mode": "sync"}
            ).json()

        assert job["status"] == "succeeded", (job, plane.log())
        assert job["result"]["final_text"] == "hello from fake model"
        assert plane.log().count("re-attaching to the harness's stream") == 2
        assert harness_pids(plane.data_dir) == [pid]
        events = list(iter_sse(client.get(f"/v1/jobs/{job['id']}/events")))
        ids = [int(event.id) for event in events if event.id]
        assert ids == list(range(1, len(ids) + 1)) and events[-1].event == "job_finished"
