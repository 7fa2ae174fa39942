"""Side calls are billed: every API reports `AUX` exactly for a call without tools, the ledger
sums it into `billed_usage` but not into `counted_usage`, and `mark()` / `after_seq` take one
job's calls out of a shared ledger."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from fake_provider import AUX, FIXED, Ledger, Usage
from fake_provider.anthropic import AnthropicMessages
from fake_provider.gemini import Gemini
from fake_provider.openai_chat import OpenAIChat
from fake_provider.openai_responses import OpenAIResponses
from fake_provider.testing import RunningProvider
from fake_provider.wire import WireApi

WIRE_APIS: list[WireApi] = [AnthropicMessages(), OpenAIResponses(), OpenAIChat(), Gemini()]
CHAT = "/v1/chat/completions"
BASH = {"type": "function", "function": {"name": "bash", "parameters": {}}}
# FIXED as Chat Completions carries it: no cache-write field, so the 7 written tokens are input.
CHAT_FIXED = Usage(input=95, cache_read=5, cache_write=0, output=12, reasoning=3)


@pytest.mark.parametrize("api", WIRE_APIS, ids=lambda api: api.name)
def test_every_api_carries_aux_exactly(api: WireApi) -> None:
    assert api.decode_usage(api.encode_usage(AUX)) == AUX
    assert api.reported_usage({}, AUX) == AUX


def test_aux_is_not_zero_and_not_a_multiple_of_fixed() -> None:
    assert Usage() != AUX and AUX.cache_read == 0 and FIXED.cache_read > 0
    assert AUX.prompt != FIXED.prompt and AUX.output != FIXED.output


def request_for(api: str, *, stream: bool, key: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A call without tools (a title, a routing decision) on `api`: path, body, headers."""
    bearer = {"authorization": f"Bearer {key}"}
    if api == "anthropic":
        body = {"model": "m", "max_tokens": 10, "stream": stream}
        body["messages"] = [{"role": "user", "content": "a title please"}]
        return "/v1/messages", body, {"x-api-key": key}
    if api == "openai_responses":
        return "/v1/responses", {"model": "m", "stream": stream, "input": "a title please"}, bearer
    if api == "openai_chat":
        body = {"model": "m", "stream": stream, "stream_options": {"include_usage": True}}
        body["messages"] = [{"role": "user", "content": "a title please"}]
        return CHAT, body, bearer
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "a title please"}]}]}
    return f"/v1beta/models/m:{method}", body, {"x-goog-api-key": key}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", [api.name for api in WIRE_APIS])
def test_a_call_without_tools_reports_aux_and_is_billed_not_counted(
    client: httpx.Client, provider: RunningProvider, api: str, stream: bool
) -> None:
    path, body, headers = request_for(api, stream=stream, key="aux-key")
    reply = client.post(path, json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    (entry,) = provider.ledger.model_calls(key="aux-key")
    assert entry.usage == AUX and not entry.counted and entry.finished
    assert entry.stream is stream
    assert provider.ledger.counted_usage(key="aux-key") == Usage()
    assert provider.ledger.billed_usage(key="aux-key") == AUX


def chat(client: httpx.Client, key: str, *, tools: bool = True) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [BASH] if tools else [],
    }
    client.post(CHAT, json=body, headers={"authorization": f"Bearer {key}"})


def test_billed_usage_adds_the_side_calls_to_the_counted_turns(
    client: httpx.Client, provider: RunningProvider
) -> None:
    chat(client, "key-a")  # a turn
    chat(client, "key-a", tools=False)  # a title
    chat(client, "key-a", tools=False)  # a summary
    chat(client, "bad-key")  # refused: nothing reported, nothing billed
    chat(client, "key-b")
    ledger = provider.ledger
    assert ledger.counted_usage(key="key-a") == CHAT_FIXED
    assert ledger.billed_usage(key="key-a") == CHAT_FIXED + AUX + AUX
    assert ledger.billed_usage(key="bad-key") == Usage()
    assert ledger.billed_usage() == CHAT_FIXED + AUX + AUX + CHAT_FIXED
    assert ledger.counted_usage() == CHAT_FIXED + CHAT_FIXED


def test_side_endpoints_are_never_billed(client: httpx.Client, provider: RunningProvider) -> None:
    client.post("/v1/messages/count_tokens", json={"messages": []}, headers={"x-api-key": "k"})
    client.get("/v1/models", headers={"authorization": "Bearer k"})
    assert [e.kind for e in provider.ledger.entries()] == ["count_tokens", "models"]
    assert provider.ledger.billed_usage() == Usage()


def test_the_ledger_over_http_holds_both_sums(
    client: httpx.Client, provider: RunningProvider
) -> None:
    chat(client, "k")
    chat(client, "k", tools=False)
    data = client.get("/_fake/ledger").json()
    assert Usage.from_dict(data["counted_usage"]) == CHAT_FIXED
    assert Usage.from_dict(data["billed_usage"]) == CHAT_FIXED + AUX


def test_a_mark_takes_one_jobs_calls(client: httpx.Client, provider: RunningProvider) -> None:
    ledger = provider.ledger
    chat(client, "k")  # an earlier job
    mark = ledger.mark()
    assert mark == ledger.entries()[-1].seq
    chat(client, "k", tools=False)
    chat(client, "k")
    chat(client, "other")  # another job on the shared provider, after the mark
    assert [e.counted for e in ledger.model_calls(key="k", after_seq=mark)] == [False, True]
    assert len(ledger.entries(after_seq=mark)) == 3
    assert ledger.counted_usage(key="k", after_seq=mark) == CHAT_FIXED
    assert ledger.billed_usage(key="k", after_seq=mark) == CHAT_FIXED + AUX
    assert ledger.billed_usage(key="k") == CHAT_FIXED + CHAT_FIXED + AUX
    assert ledger.entries(after_seq=ledger.mark()) == []


def test_marks_stay_valid_across_a_reset(client: httpx.Client, provider: RunningProvider) -> None:
    chat(client, "k")
    mark = provider.ledger.mark()
    provider.ledger.reset()
    assert provider.ledger.mark() == mark
    chat(client, "k")
    (entry,) = provider.ledger.entries(after_seq=mark)
    assert entry.seq == mark + 1


def test_concurrent_records_get_distinct_consecutive_seqs() -> None:
    ledger = Ledger()
    threads_n, per_thread = 8, 200

    def record() -> None:
        for _ in range(per_thread):
            ledger.record(api="x", method="POST", path="/", kind="model", status=200, usage=AUX)

    threads = [threading.Thread(target=record) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = threads_n * per_thread
    assert [e.seq for e in ledger.entries()] == list(range(1, total + 1))
    assert ledger.mark() == total
    assert ledger.billed_usage() == Usage(input=AUX.input * total, output=AUX.output * total)
