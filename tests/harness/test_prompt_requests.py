"""A prompt request delivered to the harness (`POST /v1/events`, `harness.prompt_requests`), with
the real harness process running the stand-in CLI of the publishing tests and publishing to a
real CloudEvents sink: the job runs inside the delivery, once per event however often it is
delivered (at once, later, after a restart), waits for its turn on a busy session or fails
`session_busy`, and every event of the job carries the request's id as `causationid`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from eventing import codec
from eventing.events import JOB_FAILED, JOB_STARTED, PromptRequested, new_event, prompt_job_id
from tests.harness.stand_in import recording
from tests.harness.test_publishing import (
    SESSION,
    client,
    harness,
    kill,
    run_job,
    start,
    stop,
    until,
)
from tests.support.event_sink import SinkServer

SENDER = "/tests/another-service"


def request(event_id: str, prompt: str, session_id: str = SESSION) -> tuple[dict[str, str], bytes]:
    event = new_event(
        PromptRequested(prompt=prompt), source=SENDER, session_id=session_id, event_id=event_id
    )
    return codec.to_binary(event)


async def deliver(http: httpx.AsyncClient, event_id: str, prompt: str, **kw: Any) -> httpx.Response:
    headers, body = request(event_id, prompt, **kw)
    return await http.post("/v1/events", headers=headers, content=body)


async def test_deliveries_of_one_request_run_one_job_and_share_its_end(
    tmp_path: Path, stand_in: Path, sink: SinkServer
) -> None:
    process = await start(harness(tmp_path, stand_in, sink.url))
    job_id = prompt_job_id(SENDER, "ticket-1")
    try:
        async with client(process) as http:
            answers = await asyncio.gather(
                *(deliver(http, "ticket-1", "emit 5 100") for _ in range(3))
            )
            assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
            assert {a.json()["job_id"] for a in answers} == {job_id}
            assert {a.json()["status"] for a in answers} == {"succeeded"}
            later = await deliver(http, "ticket-1", "emit 5 100")  # after its end
            assert later.json() == answers[0].json()
        events = await until(
            lambda: (
                (found := recording(sink).of_job(job_id))
                and found[-1].type == "dev.vwm.job.completed"
                and found
            ),
            what="the job's events",
        )
        assert [e.type for e in events].count(JOB_STARTED) == 1
        assert {e.causationid for e in events} == {"ticket-1"}
        # Restarted (the volume kept), the harness still knows the job: it never runs again.
        kill(process)
        await start(process)
        async with client(process) as http:
            again = await deliver(http, "ticket-1", "emit 5 100")
        assert (again.json()["job_id"], again.json()["status"]) == (job_id, "succeeded")
        await asyncio.sleep(0.3)
        # One start: the outbox may send that same event again after the kill (at least once,
        # same id), but no second run makes a start of its own.
        started = {e.id for e in recording(sink).of_job(job_id) if e.type == JOB_STARTED}
        assert len(started) == 1
    finally:
        await stop(process)


async def test_a_request_waits_for_the_running_job_or_fails_session_busy(
    tmp_path: Path, stand_in: Path, sink: SinkServer
) -> None:
    process = await start(harness(tmp_path, stand_in, sink.url, VWM_PROMPT_WAIT_S="1"))
    try:
        async with client(process) as http:
            # A job of about 0.5 s: the request waits for it, then runs.
            await run_job(process, "http-1", "emit 5 100", mode="async")
            waited = await deliver(http, "after-1", "emit 1 0")
            assert waited.json()["status"] == "succeeded", waited.text
            # One of about 3 s: the request gives up after 1 s, and its job is failed for good.
            await run_job(process, "http-2", "emit 10 300", mode="async")
            busy = await deliver(http, "after-2", "emit 1 0")
            assert busy.json()["status"] == "failed", busy.text
            assert busy.json()["error"]["code"] == "session_busy"
            await until(
                lambda: (
                    recording(sink).of_job("http-2")
                    and recording(sink).of_job("http-2")[-1].type == "dev.vwm.job.completed"
                ),
                what="the long job's end",
            )
            again = await deliver(http, "after-2", "emit 1 0")  # the session is free now
            assert again.json() == busy.json()
        busy_job = prompt_job_id(SENDER, "after-2")
        [failed] = await until(lambda: recording(sink).of_job(busy_job), what="its job.failed")
        assert (failed.type, failed.causationid) == (JOB_FAILED, "after-2")
        assert failed.data.error.code == "session_busy"  # type: ignore[attr-defined]
    finally:
        await stop(process)


async def test_a_harness_takes_only_its_own_sessions_prompt_requests(
    tmp_path: Path, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, None))
    try:
        async with client(process) as http:
            other = await deliver(http, "x-1", "emit 1 0", session_id="another-session")
            assert (other.status_code, other.json()["error"]["code"]) == (422, "wrong_session")
            tick = {
                "ce-specversion": "1.0",
                "ce-id": "t",
                "ce-source": "/s",
                "ce-type": "dev.vwm.tick",
            }
            not_a_prompt = await http.post(
                "/v1/events", headers={**tick, "content-type": "application/json"}, content=b"{}"
            )
            assert not_a_prompt.status_code == 400
            assert not_a_prompt.json()["error"]["code"] == "unsupported_event_type"
            headers, _ = request("x-2", "emit 1 0")
            broken = await http.post("/v1/events", headers=headers, content=b"{not json")
            assert broken.status_code == 400, broken.text
            empty = await http.post(
                "/v1/events", headers=headers, content=json.dumps({"prompt": ""}).encode()
            )
            assert (empty.status_code, empty.json()["error"]["code"]) == (400, "invalid_payload")
            async with httpx.AsyncClient(base_url=process.url) as anonymous:
                stranger = await anonymous.post("/v1/events", headers=headers, content=b"{}")
            assert stranger.status_code == 401
    finally:
        await stop(process)
