"""The meter's budget gate, against a stand-in for the control plane's charge endpoint that keeps
a real tally: a call is let through only while the last answer said open, each call is charged
once and in order, a spent budget refuses the next call in the API's own shape and stops the
job, and a control plane that cannot be reached closes the gate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from eventing.budgets import BudgetState, Charge, JobBudget, billed_tokens
from fake_provider.server import bind_socket
from fake_provider.testing import RunningProvider, serve_in_thread
from fake_provider.usage import FIXED
from harness.adapters.base import Prices, ProviderConfig
from harness.meter.service import Meter
from harness.meter.wire import WireApi
from tests.harness.test_meter_proxy import REQUESTS, auth

TOKEN = "charge-token-of-this-session"
CALL_TOKENS = FIXED.input + FIXED.cache_read + FIXED.cache_write + FIXED.output  # a turn's bill


class Tally:
    """The control plane's side, reduced to a token limit and a list of charges."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.charges: list[Charge] = []
        self.refuse_all = False

    def app(self) -> Starlette:
        async def charge(request: Request) -> JSONResponse:
            if self.refuse_all:
                return JSONResponse({"error": "down"}, status_code=503)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"error": "token"}, status_code=401)
            got = Charge.model_validate(await request.json())
            if all((c.job_id, c.seq) != (got.job_id, got.seq) for c in self.charges):
                self.charges.append(got)
            used = sum(billed_tokens(c.usage) for c in self.charges)
            state = BudgetState(
                open=used < self.limit,
                reason=None if used < self.limit else f"the budget of {self.limit} tokens is spent",
                tokens_left=max(0, self.limit - used),
            )
            return JSONResponse(state.model_dump(mode="json"))

        return Starlette(routes=[Route("/charges", charge, methods=["POST"])])


@pytest.fixture
def tally() -> Iterator[tuple[Tally, str]]:
    tally = Tally(limit=2 * CALL_TOKENS - 1)  # the second call spends it
    sock = bind_socket()
    server = uvicorn.Server(uvicorn.Config(tally.app(), lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield tally, f"http://127.0.0.1:{sock.getsockname()[1]}/charges"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def provider() -> Iterator[RunningProvider]:
    with serve_in_thread() as running:
        yield running


@pytest.fixture
async def meter(provider: RunningProvider) -> AsyncIterator[Meter]:
    meter = Meter(
        ProviderConfig(base_url=provider.base_url, api_key="sk-real"),
        {},
        api=WireApi.ANTHROPIC,
        connect_timeout_s=2,
    )
    await meter.start()
    yield meter
    await meter.close()


def open_job(meter: Meter, url: str, prices: Prices | None = None) -> tuple[Any, asyncio.Event]:
    stopped = asyncio.Event()
    guard = meter.guard("job-b", JobBudget(charge_url=url, charge_token=TOKEN), prices)
    calls = meter.ledger.open("job-b", on_call=lambda call: None, on_stop=stopped.set, budget=guard)
    return calls, stopped


async def post(meter: Meter, api: str) -> httpx.Response:
    path, body = REQUESTS[api](True)
    async with httpx.AsyncClient(timeout=20, trust_env=False) as http:
        return await http.post(
            meter.url + path, json=body, headers=auth(api, meter.provider_for_cli().api_key)
        )


@pytest.mark.parametrize("api", list(REQUESTS))
async def test_a_spent_budget_refuses_the_next_call_in_the_apis_own_shape(
    meter: Meter, tally: tuple[Tally, str], provider: RunningProvider, api: str
) -> None:
    ledger, url = tally
    calls, stopped = open_job(meter, url)
    before = len(provider.ledger.model_calls())

    assert (await post(meter, api)).status_code == 200  # 1 call: open
    assert (await post(meter, api)).status_code == 200  # 2 calls: spent now
    refused = await post(meter, api)

    assert refused.status_code == 429
    error = refused.json()["error"]
    message = error["message"]
    assert "spent" in message
    if api == "anthropic":
        assert (refused.json()["type"], error["type"]) == ("error", "rate_limit_error")
    elif api == "gemini":
        assert error["status"] == "RESOURCE_EXHAUSTED"
    else:
        assert error["code"] == "insufficient_quota"
    assert len(provider.ledger.model_calls()) == before + 2  # the third never left
    assert [c.outcome for c in calls.calls] == ["ok", "ok", "refused"]
    assert [(c.job_id, c.seq) for c in ledger.charges] == [("job-b", 1), ("job-b", 2)]
    assert stopped.is_set()
    assert calls.stop_reason == {"code": "budget_exceeded", "message": message}


async def test_charges_carry_the_calls_usage_and_its_price(
    meter: Meter, tally: tuple[Tally, str]
) -> None:
    ledger, url = tally
    prices = Prices(input=3.0, cache_read=0.3, cache_write=3.75, output=15.0)
    calls, _ = open_job(meter, url, prices)
    await post(meter, "anthropic")
    await calls.budget.settle(reported_usd=0.5)  # priced: the reported cost is not charged
    [charge] = ledger.charges
    assert charge.usage == calls.calls[0].usage
    assert charge.usd == pytest.approx((88 * 3.0 + 5 * 0.3 + 7 * 3.75 + 12 * 15.0) / 1_000_000)


async def test_without_prices_the_clis_reported_cost_is_charged_at_the_end(
    meter: Meter, tally: tuple[Tally, str]
) -> None:
    ledger, url = tally
    calls, _ = open_job(meter, url)
    await post(meter, "anthropic")
    await calls.budget.settle(reported_usd=0.25)
    assert [(c.seq, c.usd) for c in ledger.charges] == [(1, 0.0), (0, 0.25)]


async def test_a_control_plane_that_cannot_be_reached_closes_the_gate(
    meter: Meter, tally: tuple[Tally, str], provider: RunningProvider
) -> None:
    ledger, url = tally
    ledger.refuse_all = True
    _, stopped = open_job(meter, url)
    assert (await post(meter, "openai_chat")).status_code == 200
    refused = await post(meter, "openai_chat")
    assert refused.status_code == 429
    assert "could not be reached" in refused.json()["error"]["message"]
    assert stopped.is_set()


async def test_a_wrong_charge_token_closes_the_gate_too(
    meter: Meter, tally: tuple[Tally, str]
) -> None:
    _, url = tally
    stopped = asyncio.Event()
    guard = meter.guard("job-x", JobBudget(charge_url=url, charge_token="not-it"), None)
    meter.ledger.open("job-x", on_call=lambda call: None, on_stop=stopped.set, budget=guard)
    assert (await post(meter, "gemini")).status_code == 200
    assert (await post(meter, "gemini")).status_code == 429
    assert stopped.is_set()


# -- a prompt request's job: charged with the session's own charge settings ------------------


def test_the_harness_takes_its_charge_url_and_token_together_or_not_at_all(tmp_path) -> None:
    from harness.settings import HarnessSettings, SettingsError

    base = {"VWM_WORKSPACE": str(tmp_path), "VWM_CLI_BIN": "/bin/true"}
    assert HarnessSettings.from_env(base).charges is None
    both = {**base, "VWM_CHARGE_URL": "http://cp/v1/sessions/s/charges", "VWM_CHARGE_TOKEN": "t"}
    charges = HarnessSettings.from_env(both).charges
    assert charges == JobBudget(charge_url="http://cp/v1/sessions/s/charges", charge_token="t")
    assert "t'" not in repr(HarnessSettings.from_env(both))
    for half in ({"VWM_CHARGE_URL": "http://cp/x"}, {"VWM_CHARGE_TOKEN": "t"}):
        with pytest.raises(SettingsError, match="VWM_CHARGE_URL"):
            HarnessSettings.from_env({**base, **half})
    with pytest.raises(SettingsError):
        HarnessSettings.from_env({**base, "VWM_CHARGE_URL": "cp/x", "VWM_CHARGE_TOKEN": "t"})


def test_a_prompt_requests_job_is_charged_to_the_session() -> None:
    from eventing.events import PromptRequested, new_event
    from harness.prompt_requests import job_request

    event = new_event(PromptRequested(prompt="hi"), source="/svc", session_id="s", event_id="e1")
    charges = JobBudget(charge_url="http://cp/v1/sessions/s/charges", charge_token="t")
    assert job_request(event, charges).budget == charges
    assert job_request(event).budget is None
