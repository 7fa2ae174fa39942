"""Prompt requests delivered without the harness's bearer token, as a Knative Trigger delivers
them (`harness.prompt_requests`, `eventing.signatures`): the real harness process and the
stand-in CLI. A request signed for this session runs, answered 202 with no body when its job has
ended; a replay of it is the same request (its job, never a second run); anything unsigned,
signed for another session, tampered with or of another scheme is refused before it runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from eventing import codec, signatures
from eventing.events import PromptRequested, VwmEvent, new_event, prompt_job_id
from tests.harness.test_publishing import SESSION, client, harness, job_log, start, stop
from tests.support.harness_process import TOKEN, HarnessProcess

SENDER = "/vwm/control-plane"


def prompt_request(event_id: str, prompt: str, session_id: str = SESSION) -> VwmEvent:
    payload = PromptRequested(prompt=prompt, timeout_s=60)
    return new_event(payload, source=SENDER, session_id=session_id, event_id=event_id)


def anonymous(process: HarnessProcess, **headers: str) -> httpx.AsyncClient:
    """What a Trigger's delivery is to the harness: no session token (maybe another one)."""
    return httpx.AsyncClient(base_url=process.url, timeout=60, headers=headers)


async def post(
    http: httpx.AsyncClient, event: VwmEvent, structured: bool = False
) -> httpx.Response:
    headers, body = (codec.to_structured if structured else codec.to_binary)(event)
    return await http.post("/v1/events", headers=headers, content=body)


def starts(process: HarnessProcess, job_id: str) -> int:
    return [entry["kind"] for entry in job_log(process.workspace, job_id)].count("job_started")


def error_code(answer: httpx.Response) -> tuple[int, Any]:
    return answer.status_code, answer.json()["error"]["code"]


async def test_a_signed_request_runs_without_the_token_and_its_replays_join_it(
    tmp_path: Path, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, None))
    signed = signatures.signed(TOKEN, prompt_request("signed-1", "emit 5 100"))
    job_id = prompt_job_id(SENDER, "signed-1")
    try:
        async with anonymous(process) as trigger, client(process) as bearer:
            answers = await asyncio.gather(*(post(trigger, signed) for _ in range(3)))
            assert [(a.status_code, a.content) for a in answers] == [(202, b"")] * 3
            job = (await bearer.get(f"/v1/jobs/{job_id}")).json()
            assert (job["status"], job["job_id"]) == ("succeeded", job_id)  # ended before 202
            # Replayed after its end, in the other mode: the same request, answered at once.
            again = await post(trigger, signed, structured=True)
            assert (again.status_code, again.content) == (202, b"")
            assert starts(process, job_id) == 1
            # The embedded broker's delivery (bearer) of a signed request reads the job.
            with_token = await post(bearer, signed)
            assert (with_token.status_code, with_token.json()["job_id"]) == (200, job_id)
            # A platform's own Authorization on the delivery (an OIDC token) does not refuse it.
        async with anonymous(process, authorization="Bearer a-platform-token") as oidc:
            other = signatures.signed(TOKEN, prompt_request("signed-2", "emit 1 0"))
            answer = await post(oidc, other)
            assert (answer.status_code, answer.content) == (202, b"")
        assert starts(process, prompt_job_id(SENDER, "signed-2")) == 1
        assert starts(process, job_id) == 1
    finally:
        await stop(process)


async def test_a_signature_survives_a_broker_that_re_encodes_the_data(
    tmp_path: Path, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, None))
    signed = signatures.signed(TOKEN, prompt_request("spaced-1", "emit 1 0"))
    headers, body = codec.to_structured(signed)
    document = json.loads(body)
    document["data"] = dict(reversed(document["data"].items()))  # keys in another order
    reencoded = json.dumps(document, indent=3).encode()
    try:
        async with anonymous(process) as trigger:
            answer = await trigger.post("/v1/events", headers=headers, content=reencoded)
        assert (answer.status_code, answer.content) == (202, b""), answer.text
        assert starts(process, prompt_job_id(SENDER, "spaced-1")) == 1
    finally:
        await stop(process)


async def test_without_the_token_only_a_valid_signature_for_this_session_gets_in(
    tmp_path: Path, stand_in: Path
) -> None:
    process = await start(harness(tmp_path, stand_in, None))
    another_token = "the-token-of-another-session"
    refused: dict[str, VwmEvent] = {
        # signed for another session, with its token, sent here
        "elsewhere": signatures.signed(
            another_token, prompt_request("elsewhere", "emit 1 0", session_id="another-session")
        ),
        # naming this session, signed with another session's token
        "borrowed": signatures.signed(another_token, prompt_request("borrowed", "emit 1 0")),
        # another scheme's value, and one cut short
        "scheme": prompt_request("scheme", "emit 1 0").model_copy(
            update={"vwmauth": "v2." + signatures.sign(TOKEN, prompt_request("scheme", "x"))[3:]}
        ),
        "cut": signatures.signed(TOKEN, prompt_request("cut", "emit 1 0")),
    }
    refused["cut"] = refused["cut"].model_copy(update={"vwmauth": refused["cut"].vwmauth[:-1]})
    tampered = signatures.signed(TOKEN, prompt_request("tampered", "emit 1 0"))
    headers, body = codec.to_binary(tampered)
    changed = json.dumps({**json.loads(body), "prompt": "emit 2 0"}).encode()
    try:
        async with anonymous(process) as stranger, client(process) as bearer:
            unsigned = await post(stranger, prompt_request("unsigned", "emit 1 0"))
            assert error_code(unsigned) == (401, "unauthorized")
            assert "Authorization: Bearer" in unsigned.json()["error"]["message"]
            assert "vwmauth" in unsigned.json()["error"]["message"]
            garbage = await stranger.post("/v1/events", headers=headers, content=b"{not json")
            assert error_code(garbage) == (401, "unauthorized")  # not told what is wrong with it
            for name, event in refused.items():
                answer = await post(stranger, event)
                assert error_code(answer) == (401, "invalid_signature"), name
            answer = await stranger.post("/v1/events", headers=headers, content=changed)
            assert error_code(answer) == (401, "invalid_signature")
            # The bearer still gets in unsigned, and every other route still needs it.
            with_token = await post(bearer, prompt_request("unsigned", "emit 1 0"))
            assert (with_token.status_code, with_token.json()["status"]) == (200, "succeeded")
            for method, path in (
                ("GET", "/v1/events"),
                ("GET", "/v1/jobs/x"),
                ("POST", "/v1/jobs"),
            ):
                assert (await stranger.request(method, path)).status_code == 401, path
            for name in (*refused, "tampered"):
                job = await bearer.get(f"/v1/jobs/{prompt_job_id(SENDER, name)}")
                assert job.status_code == 404, name  # never queued, never ran
    finally:
        await stop(process)
    log = (tmp_path / "harness.log").read_text()
    assert "does not verify" in log
    for event in (*refused.values(), tampered):
        assert str(event.vwmauth)[3:] not in log  # logged without the value
