"""The harness publishes its job events (`harness.publishing`), proved with the real harness
process (`python -m harness`) running a stand-in CLI, publishing to a real CloudEvents sink on a
real socket (`tests.support.event_sink`), and the control plane's own code storing what arrives
(`functions.job_log`'s entries, keyed by (job, seq)):

- a job's events arrive, decode, carry the session token, and stored by (job, seq) they are the
  job's log on the volume; the final event carries the timings, summary and raw output;
- a sink that is down (connection refused, then 503) gets everything later, in order;
- a harness killed with events in its outbox sends the rest, same ids, when it starts again;
- a job whose meta does not say ``published`` (publishing was off, or the process died mid-job)
  is published again whole at start;
- batches close at ``VWM_EVENT_BATCH_MAX`` events and ``VWM_EVENT_BATCH_S`` seconds;
- without a sink nothing is published; a bad setting keeps the harness from starting;
- /healthz and the shutdown answer say how publishing stands.

It also prints the time from an event being logged to the sink receiving it (p50/p99)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventing import codec
from eventing.events import (
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_OUTPUT,
    JOB_STARTED,
    JobOutput,
    JobStarted,
    JobSummary,
    VwmEvent,
)
from eventing.events.payloads import JobFinished
from eventing.job_events import JobEvent, JobStatus
from functions.job_log import _finished_entry, _output_entry, _started_entry
from functions.telemetry_writer import _LIFECYCLE, _OUTPUT
from harness.event_log import EventLog
from harness.jobs import Job
from harness.publishing import (
    EVENT_BUDGET_BYTES,
    NO_ERROR_RECORDED,
    RAW_OUTPUT_CHARS,
    JobEventPublisher,
    bound_raw_output,
    finished_event,
    json_summary,
    output_item,
)
from harness.settings import HarnessSettings, SettingsError
from harness.workspace import Workspace
from tests.harness.stand_in import RecordingSink, recording
from tests.support.event_sink import SinkServer
from tests.support.harness_process import REPO_ROOT, TOKEN, HarnessProcess

SESSION = "sess_pub"

# -- the sink and the harness --------------------------------------------------------------------


def workspace_at(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    (workspace / "session_repo").mkdir(parents=True, exist_ok=True)  # bootstrapped, no git
    return workspace


def harness(tmp_path: Path, cli: Path, sink_url: str | None, **env: str) -> HarnessProcess:
    publishing = {"VWM_EVENT_SINK": sink_url} if sink_url else {}
    return HarnessProcess(
        workspace_at(tmp_path),
        "claude",
        {
            "VWM_CLI_BIN": str(cli),
            "VWM_SESSION_ID": SESSION,
            # Quick retries, so a sink that comes back is noticed in well under a second.
            "VWM_EVENT_BACKOFF_S": "0.05",
            "VWM_EVENT_BACKOFF_CAP_S": "0.3",
            **publishing,
            **env,
        },
        tmp_path / "harness.log",
    )


async def start(process: HarnessProcess) -> HarnessProcess:
    await asyncio.to_thread(process.start)  # the sink shares this loop: never block it
    return process


async def stop(process: HarnessProcess) -> None:
    await asyncio.to_thread(process.stop)


def kill(process: HarnessProcess) -> None:
    assert process.proc is not None
    os.killpg(process.proc.pid, signal.SIGKILL)
    process.proc.wait()


def client(process: HarnessProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=process.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
    )


async def run_job(process: HarnessProcess, job_id: str, prompt: str, mode: str = "sync") -> dict:
    async with client(process) as http:
        answer = await http.post(
            "/v1/jobs", json={"prompt": prompt, "job_id": job_id, "mode": mode}
        )
    assert answer.status_code in (200, 202), answer.text
    return answer.json()


async def until(check: Callable[[], Any], within: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


def final_arrived(server: SinkServer, job_id: str) -> bool:
    return any(e.type in (JOB_COMPLETED, JOB_FAILED) for e in recording(server).of_job(job_id))


# -- what the control plane stores ---------------------------------------------------------------


def stored(events: list[VwmEvent]) -> list[dict[str, Any]]:
    """The entries the control plane stores from `events` (functions/job_log.py), keyed by
    (job, seq), the first kept: the job's log as the consumer sees it, in seq order."""
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for event in events:
        assert event.jobid is not None and event.seq is not None
        data = event.data
        if isinstance(data, JobStarted):
            new = [_started_entry(event.jobid, event.seq, data)]
        elif isinstance(data, JobOutput):
            new = [_output_entry(event.jobid, e.model_dump(mode="json")) for e in data.events]
        else:
            assert isinstance(data, JobFinished)
            new = [_finished_entry(event.jobid, event.seq, data)]
        for entry in new:
            entries.setdefault((entry["job_id"], entry["seq"]), entry)
    return [entries[key] for key in sorted(entries)]


def job_log(workspace: Path, job_id: str) -> list[dict[str, Any]]:
    path = workspace / ".vwm" / "jobs" / f"{job_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def meta(workspace: Path, job_id: str) -> dict[str, Any]:
    return json.loads((workspace / ".vwm" / "jobs" / f"{job_id}.json").read_text())


def assert_same_log(received: list[dict[str, Any]], logged: list[dict[str, Any]]) -> None:
    """Stored by the consumer, the events are the log: every entry, kind, data and ts. The
    documented normalizations (docs/events.md, "The harness as a publisher"): a lifecycle entry's
    ts travels as an RFC 3339 time (microseconds); in ``job_finished``, an error without details
    arrives with ``details: {}``, a null summary (a job a restart finished) as the empty summary,
    a null ``duration_ms`` as the time from start to finish."""
    assert [(e["seq"], e["kind"]) for e in received] == [(e["seq"], e["kind"]) for e in logged]
    for got, want in zip(received, logged, strict=True):
        want = dict(want)
        if want["kind"] in ("job_started", "job_finished"):
            assert got["ts"] == pytest.approx(want["ts"], abs=2e-6)
            want["ts"] = got["ts"]
        if want["kind"] == "job_finished":
            finished = want["data"] = dict(want["data"])
            if finished["error"] is not None:
                finished["error"] = {"details": {}, **finished["error"]}
            if finished["summary"] is None:
                finished["summary"] = JobSummary().model_dump(mode="json")
            if finished["duration_ms"] is None:
                assert got["data"]["duration_ms"] >= 0
                finished["duration_ms"] = got["data"]["duration_ms"]
        assert got == want


def final_error(event: VwmEvent) -> str | None:
    assert isinstance(event.data, JobFinished)
    return event.data.error.code if event.data.error else None


def expected_ids(events: list[VwmEvent], job_id: str) -> None:
    for event in events:
        if isinstance(event.data, JobOutput):
            assert event.id == f"{job_id}.{event.data.first_seq}-{event.data.last_seq}"
            assert event.seq == event.data.last_seq
        else:
            assert event.id == f"{job_id}.{event.seq}"


# -- the tests -----------------------------------------------------------------------------------


async def test_a_jobs_events_arrive_with_the_token_and_stored_by_seq_are_its_log(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, sink.url))
    try:
        job = await run_job(process, "job_a", "emit 5 0 stderr")
        assert job["status"] == "succeeded"
        await until(lambda: final_arrived(sink, "job_a"), what="the final event")
        async with client(process) as http:
            health = (await http.get("/healthz")).json()
    finally:
        await stop(process)

    events = recording(sink).of_job("job_a")
    assert all(auth == f"Bearer {TOKEN}" for auth in recording(sink).authorizations)
    assert events[0].type == JOB_STARTED and events[-1].type == JOB_COMPLETED
    assert {e.type for e in events[1:-1]} == {JOB_OUTPUT}
    assert all(e.source == f"/vwm/harness/{SESSION}" and e.sessionid == SESSION for e in events)
    expected_ids(events, "job_a")
    assert len({e.id for e in events}) == len(events)
    logged = job_log(process.workspace, "job_a")
    assert "stderr" in {e["kind"] for e in logged}
    assert_same_log(stored(events), logged)

    end = events[-1].data
    assert isinstance(end, JobFinished)
    stdout = (process.workspace / ".vwm" / "jobs" / "job_a.stdout").read_text()
    assert end.raw_output == stdout and '"type": "result"' in stdout
    assert end.summary.final_text == "done" and end.summary.cost_usd == 0.01
    assert end.exit_code == 0
    start_ts = logged[0]["ts"]
    first_cli = next(e["ts"] for e in logged if e["kind"] not in _LIFECYCLE)
    first_output = next(e["ts"] for e in logged if e["kind"] in _OUTPUT)
    assert end.timings.cli_start_ms == int((first_cli - start_ts) * 1000)
    assert end.timings.first_output_ms == int((first_output - start_ts) * 1000)
    assert end.timings.total_ms == logged[-1]["data"]["duration_ms"]
    assert end.started_at == datetime.fromtimestamp(start_ts, UTC)
    assert meta(process.workspace, "job_a")["published"] is True
    assert TOKEN not in process.log() and "HTTP Request" not in process.log()
    assert health["events"] == {
        "sink": sink.url,
        "pending": 0,
        "dead_letters": 0,
        "relay_running": True,
    }


async def test_a_sink_that_refuses_connections_then_answers_503_gets_everything_in_order(
    tmp_path: Path, stand_in: Path
) -> None:
    server = SinkServer(RecordingSink())  # not started: connections are refused
    process = await start(harness(tmp_path, stand_in, server.url))
    try:
        job = await run_job(process, "job_b", "emit 30 0 fail")
        assert job["status"] == "failed"
        async with client(process) as http:
            health = (await http.get("/healthz")).json()["events"]
        assert health["pending"] >= 3 and health["relay_running"] is True
        server.sink.answers.extend([503, 503, 503])
        await server.start()
        await until(lambda: final_arrived(server, "job_b"), what="the final event")
    finally:
        await stop(process)
        await server.stop()

    statuses = [arrival.status for arrival in server.sink.arrivals]
    assert statuses[:3] == [503, 503, 503] and set(statuses[3:]) == {202}
    events = recording(server).of_job("job_b")
    seqs = [e.seq or 0 for e in events]
    assert seqs == sorted(seqs)  # in log order
    assert len({e.id for e in events}) == len(events)
    assert events[-1].type == JOB_FAILED
    assert_same_log(stored(events), job_log(process.workspace, "job_b"))
    assert final_error(events[-1]) == "cli_failed"


def outbox_ids(workspace: Path) -> list[str]:
    ids = []
    for segment in sorted((workspace / ".vwm" / "outbox").glob("events.*.jsonl")):
        ids += [json.loads(line)["id"] for line in segment.read_text().splitlines()]
    return ids


async def test_a_harness_killed_with_events_in_its_outbox_sends_the_rest_same_ids_on_restart(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    held = recording(sink)
    held.hold, held.hold_from = asyncio.Event(), 2  # the third POST gets no answer
    first = await start(harness(tmp_path, stand_in, sink.url, VWM_EVENT_BATCH_MAX="4"))
    await run_job(first, "job_c", "emit 20 0")
    await until(lambda: meta(first.workspace, "job_c").get("published"), what="published")
    await asyncio.wait_for(held.held.wait(), 10)
    in_outbox = outbox_ids(first.workspace)
    kill(first)
    sent_before = list(held.ids)
    assert len(sent_before) == 3 and set(sent_before) <= set(in_outbox) | set(sent_before)
    held.hold.set()  # the held POST is answered, to a process that is gone

    second = await start(harness(tmp_path, stand_in, sink.url, VWM_EVENT_BATCH_MAX="4"))
    try:
        await until(lambda: set(in_outbox) <= set(held.ids), what="the rest of the outbox")
        async with client(second) as http:
            health = (await http.get("/healthz")).json()["events"]
    finally:
        await stop(second)

    # What was in the outbox arrives with the same ids, in order; what arrives twice is only
    # what the sink had before the kill (the outbox repeats what was sent since its last
    # checkpoint; the consumer deduplicates on the id).
    total = [i for n, i in enumerate(held.ids) if i not in held.ids[:n]]
    assert len(total) > len(set(sent_before))
    assert total[len(total) - len(in_outbox) :] == in_outbox
    repeated = [i for n, i in enumerate(held.ids) if i in held.ids[:n]]
    assert set(repeated) <= set(sent_before) and len(repeated) <= len(sent_before)
    expected_ids(held.of_job("job_c"), "job_c")
    assert_same_log(stored(held.of_job("job_c")), job_log(second.workspace, "job_c"))
    assert health["pending"] == 0


async def test_a_job_not_published_is_published_whole_at_start(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    # Publishing off: the harness works as before, and writes no outbox.
    off = await start(harness(tmp_path, stand_in, None))
    try:
        assert (await run_job(off, "job_old", "emit 1 0"))["status"] == "succeeded"
        assert (await run_job(off, "job_d", "emit 3 0"))["status"] == "succeeded"
        async with client(off) as http:
            health = (await http.get("/healthz")).json()
            shutdown = (await http.post("/v1/shutdown")).json()
    finally:
        await stop(off)
    assert health["events"] == {
        "sink": None,
        "pending": 0,
        "dead_letters": 0,
        "relay_running": False,
    }
    assert shutdown["events_pending"] == 0
    assert not (off.workspace / ".vwm" / "outbox").exists()
    assert meta(off.workspace, "job_d")["published"] is False
    assert recording(sink).arrivals == []

    # A job older than VWM_EVENT_REPUBLISH_DAYS (by its meta file's time) is left alone.
    eight_days_ago = time.time() - 8 * 86_400
    os.utime(off.workspace / ".vwm" / "jobs" / "job_old.json", (eight_days_ago, eight_days_ago))

    on = await start(harness(tmp_path, stand_in, sink.url))
    try:
        await until(lambda: final_arrived(sink, "job_d"), what="the republished job")
        await until(lambda: meta(on.workspace, "job_d")["published"], what="published")
    finally:
        await stop(on)
    events = recording(sink).of_job("job_d")
    expected_ids(events, "job_d")
    assert_same_log(stored(events), job_log(on.workspace, "job_d"))
    assert recording(sink).of_job("job_old") == []
    assert meta(on.workspace, "job_old")["published"] is False


async def test_a_damaged_outbox_is_moved_aside_and_every_recent_job_published_again(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    first = await start(harness(tmp_path, stand_in, sink.url))
    try:
        await run_job(first, "job_j", "emit 2 0")
        await until(lambda: final_arrived(sink, "job_j"))
    finally:
        await stop(first)
    sent = len(recording(sink).of_job("job_j"))
    outbox = first.workspace / ".vwm" / "outbox"
    (outbox / "cursor.json").write_text("written by something else")

    second = await start(harness(tmp_path, stand_in, sink.url))
    try:
        await until(lambda: len(recording(sink).of_job("job_j")) >= 2 * sent, what="republish")
        async with client(second) as http:
            health = (await http.get("/healthz")).json()["events"]
    finally:
        await stop(second)
    assert health["relay_running"] is True
    assert len(list(outbox.parent.glob("outbox.corrupt-*"))) == 1
    events = recording(sink).of_job("job_j")[sent:]
    assert (
        events[0].id == "job_j.1" and events[-1].id == recording(sink).of_job("job_j")[sent - 1].id
    )


async def test_a_job_cut_off_by_a_crash_is_finished_by_recover_and_republished(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    first = await start(harness(tmp_path, stand_in, sink.url))
    await run_job(first, "job_e", "emit 3 0 hang", mode="async")
    # The batch closes by time while the job still runs: its output is out before its end.
    await until(lambda: any(e.type == JOB_OUTPUT for e in recording(sink).of_job("job_e")))
    kill(first)
    before = {e.id for e in recording(sink).of_job("job_e")}
    assert not final_arrived(sink, "job_e")

    second = await start(harness(tmp_path, stand_in, sink.url))
    try:
        await until(lambda: final_arrived(sink, "job_e"), what="the recovered job's end")
    finally:
        await stop(second)
    events = recording(sink).of_job("job_e")
    # The same id again: republished from the log (and maybe repeated by the outbox, whose
    # cursor the kill caught before a checkpoint).
    assert "job_e.1" in before and [e.id for e in events].count("job_e.1") in (2, 3)
    assert events[-1].type == JOB_FAILED and final_error(events[-1]) == "harness_restarted"
    assert_same_log(stored(events), job_log(second.workspace, "job_e"))
    assert meta(second.workspace, "job_e")["published"] is True


async def test_batches_close_at_the_size_limit(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    env = {"VWM_EVENT_BATCH_MAX": "10", "VWM_EVENT_BATCH_S": "60"}
    process = await start(harness(tmp_path, stand_in, sink.url, **env))
    try:
        await run_job(process, "job_f", "emit 45 0")
        await until(lambda: final_arrived(sink, "job_f"))
    finally:
        await stop(process)
    batches = [e.data for e in recording(sink).of_job("job_f") if isinstance(e.data, JobOutput)]
    sizes = [len(batch.events) for batch in batches]
    # With a minute to wait, only the size closes a batch, and the end closes the last.
    assert sizes[:-1] == [10] * (len(sizes) - 1) and 1 <= sizes[-1] <= 10, sizes
    assert sum(sizes) == len(job_log(process.workspace, "job_f")) - 2


async def test_batches_close_by_time_after_their_first_event(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    env = {"VWM_EVENT_BATCH_MAX": "1000", "VWM_EVENT_BATCH_S": "0.1"}
    process = await start(harness(tmp_path, stand_in, sink.url, **env))
    try:
        await run_job(process, "job_g", "emit 6 500")  # an assistant message every 0.5 s
        await until(lambda: final_arrived(sink, "job_g"))
    finally:
        await stop(process)
    batches = [e.data for e in recording(sink).of_job("job_g") if isinstance(e.data, JobOutput)]
    texts = [sum(e.kind == "assistant_text" for e in batch.events) for batch in batches]
    # 0.1 s after its first event each batch left, long before the next message came.
    assert texts.count(1) >= 5 and max(texts) == 1, texts


async def test_shutdown_waits_a_bounded_time_for_the_outbox_and_says_what_is_left(
    tmp_path: Path, stand_in: Path
) -> None:
    down = SinkServer(RecordingSink())  # never started
    process = await start(harness(tmp_path, stand_in, down.url, VWM_EVENT_DRAIN_S="1"))
    try:
        await run_job(process, "job_h", "emit 2 0")
        async with client(process) as http:
            began = time.monotonic()
            answer = await http.post("/v1/shutdown")
            took = time.monotonic() - began
    finally:
        await stop(process)
    assert answer.status_code == 200, answer.text
    assert answer.json()["events_pending"] >= 3
    assert took < 5  # the drain wait is bounded by VWM_EVENT_DRAIN_S


async def test_shutdown_answers_after_the_final_events_left(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, sink.url))
    try:
        await run_job(process, "job_i", "emit 3 10000", mode="async")  # still running
        await until(lambda: recording(sink).of_job("job_i"))
        async with client(process) as http:
            answer = await http.post("/v1/shutdown")
    finally:
        await stop(process)
    assert answer.json()["events_pending"] == 0
    events = recording(sink).of_job("job_i")
    end = events[-1].data
    assert isinstance(end, JobFinished) and end.status == "cancelled"
    assert final_error(events[-1]) == "cancelled"
    assert_same_log(stored(events), job_log(process.workspace, "job_i"))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VWM_EVENT_SINK": "not a url", "VWM_SESSION_ID": SESSION}, "VWM_EVENT_SINK"),
        ({"K_SINK": "ftp://broker/", "VWM_SESSION_ID": SESSION}, "K_SINK"),
        (
            {"K_SINK": "http://broker/", "VWM_EVENT_MODE": "batched", "VWM_SESSION_ID": SESSION},
            "VWM_EVENT_MODE",
        ),
        (
            {"K_SINK": "http://broker/", "VWM_EVENT_BATCH_MAX": "1001", "VWM_SESSION_ID": SESSION},
            "VWM_EVENT_BATCH_MAX",
        ),
        (
            {"K_SINK": "http://broker/", "VWM_EVENT_BATCH_S": "0", "VWM_SESSION_ID": SESSION},
            "VWM_EVENT_BATCH_S",
        ),
        (
            {"K_SINK": "http://broker/", "VWM_EVENT_DRAIN_S": "soon", "VWM_SESSION_ID": SESSION},
            "VWM_EVENT_DRAIN_S",
        ),
        (
            {
                "K_SINK": "http://broker/",
                "VWM_EVENT_REPUBLISH_DAYS": "-1",
                "VWM_SESSION_ID": SESSION,
            },
            "VWM_EVENT_REPUBLISH_DAYS",
        ),
        ({"K_SINK": "http://broker/"}, "VWM_SESSION_ID"),
        ({"K_SINK": "http://broker/", "VWM_SESSION_ID": "s" * 65}, "VWM_SESSION_ID"),
    ],
)
def test_a_bad_event_setting_is_refused_naming_the_variable(env: dict[str, str], named: str):
    with pytest.raises(SettingsError, match=named):
        HarnessSettings.from_env({"VWM_CLI_BIN": "claude", **env})


def test_without_a_sink_publishing_is_off_and_its_settings_are_not_read() -> None:
    settings = HarnessSettings.from_env({"VWM_EVENT_BATCH_MAX": "5000"})
    assert settings.events.enabled is False
    on = HarnessSettings.from_env({"K_SINK": "http://broker/", "VWM_SESSION_ID": SESSION})
    assert on.events.publisher is not None and on.events.publisher.sink == "http://broker/"
    assert (on.events.batch_max, on.events.batch_s, on.events.drain_s) == (100, 0.1, 5.0)
    assert on.events.republish_days == 7.0


def test_the_harness_process_refuses_to_start_with_a_bad_sink(tmp_path: Path, stand_in: Path):
    process = harness(tmp_path, stand_in, "http://")
    with pytest.raises(RuntimeError, match="harness exited early") as refused:
        process.start(timeout=20)
    assert "VWM_EVENT_SINK" in str(refused.value)
    assert process.proc is not None and process.proc.returncode == 2


def test_the_job_runner_does_not_import_http_or_the_relay() -> None:
    code = (
        "import sys, harness.jobs; "
        "print([m for m in ('httpx', 'eventing.relay', 'eventing.publisher', 'harness.publishing')"
        " if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


# -- converting entries (no process) -------------------------------------------------------------


def entry(seq: int, kind: str, data: dict[str, Any], ts: float = 1_800_000_000.0) -> JobEvent:
    return JobEvent(job_id="job_x", seq=seq, kind=kind, data=data, ts=ts)


def test_an_entry_too_big_for_an_event_keeps_its_place_with_a_note() -> None:
    big = entry(2, "tool_result", {"id": "t", "output": "x" * (EVENT_BUDGET_BYTES + 10)})
    item = output_item(big)
    assert item is not None and item.seq == 2 and item.kind == "tool_result"
    assert item.data["vwm_omitted"]["reason"] == "over_event_limit"
    nan = output_item(entry(3, "raw", {"event": {"value": float("nan")}}))
    assert nan is not None and nan.data["vwm_omitted"]["reason"] == "not_plain_json"
    assert output_item(entry(4, "job_started", {})) is None
    small = output_item(entry(5, "assistant_text", {"text": "hi"}))
    assert small is not None and small.data == {"text": "hi"}


def test_raw_output_keeps_its_start_within_the_limit_and_says_how_much_was_cut() -> None:
    assert bound_raw_output("short") == "short"
    text = "a" * 300_000
    bounded = bound_raw_output(text)
    assert len(bounded) <= RAW_OUTPUT_CHARS and bounded.startswith("a" * 200_000)
    kept = bounded.index("\n[...")
    assert f"[... {len(text) - kept} characters of output cut ...]" in bounded


def test_the_final_event_of_a_failed_job_always_has_an_error_and_fits_the_size_limit() -> None:
    job = Job(id="job_x", prompt="p", log=None)  # type: ignore[arg-type]
    entries = [
        entry(1, "job_started", {"prompt": "p", "cli": "claude", "model": None, "resume_id": None}),
        entry(2, "assistant_text", {"text": "hi"}, ts=1_800_000_000.5),
        entry(
            3,
            "job_finished",
            {
                "status": "timeout",
                "summary": {"final_text": "", "cost_usd": -1.0, "unknown": 1},
                "error": None,
                "exit_code": None,
                "duration_ms": None,
            },
            ts=1_800_000_002.0,
        ),
    ]
    # Every character of the raw output escapes to 12 bytes on the wire: it must be cut to fit.
    event = finished_event(SESSION, job, entries, "😀" * RAW_OUTPUT_CHARS)
    data = event.data
    assert isinstance(data, JobFinished) and data.error is not None
    assert data.error.code == NO_ERROR_RECORDED and data.status == "timeout"
    assert data.summary.cost_usd is None  # refused by the strict model: dropped
    assert data.timings.total_ms == 2000 and data.timings.first_output_ms == 500
    assert data.raw_output.startswith("😀") and "cut to fit the event" in data.raw_output
    headers, body = codec.to_structured(event)
    assert len(body) < codec.MAX_EVENT_BYTES
    assert codec.from_http(headers, body).id == "job_x.3"


def test_a_summary_the_strict_model_refuses_in_part_keeps_the_rest() -> None:
    summary = json_summary(
        {"final_text": "ok", "cost_usd": 0.5, "cost_source": "guessed", "usage": {"input": 2}}
    )
    assert summary["final_text"] == "ok" and summary["cost_usd"] == 0.5
    assert summary["cost_source"] is None and summary["usage"]["input"] == 2


# -- measured, not asserted ----------------------------------------------------------------------


async def test_measure_the_time_from_logged_to_received(
    tmp_path: Path, sink: SinkServer, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, sink.url))
    try:
        await run_job(process, "job_m", "emit 400 5")  # 400 messages, 5 ms apart
        await until(lambda: final_arrived(sink, "job_m"), within=60)
    finally:
        await stop(process)
    received = recording(sink).received_at
    delays = []
    for event in recording(sink).of_job("job_m"):
        if isinstance(event.data, JobOutput):
            delays += [received[event.id] - item.ts for item in event.data.events]
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    print(
        f"\nlogged -> received at the sink, {len(delays)} events, batch 0.1 s: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays[-1] * 1000:.1f} ms"
    )
    assert len(delays) >= 400


# -- an outbox that fails ------------------------------------------------------------------------


class FailingOnce:
    """Stands in for the relay: its outbox refuses the second event (a full disk, say)."""

    def __init__(self) -> None:
        self.published: list[VwmEvent] = []
        self.calls = 0

    async def publish(self, event: VwmEvent) -> None:
        self.calls += 1
        if self.calls == 2:
            raise OSError(28, "No space left on device")
        self.published.append(event)


class MarkingRunner:
    def __init__(self) -> None:
        self.marked: list[str] = []

    def mark_published(self, job: Job) -> None:
        self.marked.append(job.id)


async def test_a_failed_outbox_append_is_logged_the_rest_goes_on_and_the_job_stays_unpublished(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    relay, runner = FailingOnce(), MarkingRunner()
    writer = JobEventPublisher(
        relay,  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        Workspace(tmp_path),
        SESSION,
        batch_max=2,
    )
    writer.start()
    job = Job(id="job_k", prompt="p", log=EventLog("job_k", tmp_path / "job_k.jsonl"))
    started = {"prompt": "p", "cli": "claude", "model": None, "resume_id": None}
    for kind, data in [("job_started", started)] + [("assistant_text", {"text": "t"})] * 4:
        writer.on_log(job, job.log.append(kind, data))
    finished = {"status": "succeeded", "summary": None, "error": None}
    writer.on_log(job, job.log.append("job_finished", {**finished, "duration_ms": 5}))
    job.status = JobStatus.SUCCEEDED
    writer.on_finished(job)
    await writer.stop()

    # The first batch (seqs 2-3) was lost; the start, the second batch and the end went on.
    assert [e.id for e in relay.published] == ["job_k.1", "job_k.4-5", "job_k.6"]
    assert writer.failed_appends == 1 and runner.marked == []
    assert "could not be put in the outbox" in caplog.text
    assert "published again from its log when the harness next starts" in caplog.text


def test_healthz_shows_the_sink_without_credentials() -> None:
    from harness.publishing import _shown_url

    assert (
        _shown_url("http://user:secret@broker:8080/vwm/default") == "http://broker:8080/vwm/default"
    )
    assert _shown_url("http://broker/") == "http://broker/"
