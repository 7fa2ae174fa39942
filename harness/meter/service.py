"""The session's meter as the harness runs it: the proxy on its loopback port, the key the CLI
gets instead of the real one, and the open job's calls.

Made once per harness process (`harness.app`'s lifespan) and handed to the job runner, which
points each run's CLI at `provider_for_cli()` and opens the job's calls on `ledger`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from eventing.budgets import JobBudget
from eventing.tls import verified_context
from harness.adapters.base import Prices, ProviderConfig
from harness.meter.budget import BudgetGuard
from harness.meter.calls import PROVIDER_AUTH_FAILED, PROVIDER_UNREACHABLE, CallLedger, JobCalls
from harness.meter.cli_side import MeterServer
from harness.meter.credentials import KeySwap, new_placeholder
from harness.meter.provider_side import ProviderPool
from harness.meter.proxy import MeterProxy
from harness.meter.upstream import Upstreams
from harness.meter.vendor_errors import MAX_ERROR_BYTES, provider_message
from harness.meter.wire import WireApi

# How long a provider that answered is taken to be reachable without testing it again.
REACHABLE_FOR_S = 30.0


class Meter:
    def __init__(
        self,
        provider: ProviderConfig | None,
        environ: Mapping[str, str],
        *,
        api: WireApi,
        connect_timeout_s: float,
    ) -> None:
        self.ledger = CallLedger()
        self._api = api
        self._passed_at = -REACHABLE_FOR_S
        self._placeholder = new_placeholder()
        self._upstreams = Upstreams(
            provider.base_url if provider else None, provider.api_key if provider else "", environ
        )
        # The calls' own connections. No read timeout: a model may think for minutes between
        # two chunks, and the job's own timeout bounds the wait. Connecting must fail fast.
        self._pool = ProviderPool(connect_timeout_s=connect_timeout_s, environ=environ)
        self._connect_timeout_s = connect_timeout_s
        self._http: httpx.AsyncClient | None = None
        self._server = MeterServer(
            MeterProxy(self._upstreams, KeySwap(self._placeholder), self.ledger, self._pool)
        )

    @property
    def _client(self) -> httpx.AsyncClient:
        """The provider check's and the budget's client: off the hot path, where a client
        library's conveniences cost nothing that matters. Made on first use: making it (its TLS
        trust store) is a sixth of a harness's start, and many sessions never need it."""
        if self._http is None:
            timeout_s = self._connect_timeout_s
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=timeout_s, pool=timeout_s),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                follow_redirects=False,
                verify=verified_context(),
            )
        return self._http

    @property
    def url(self) -> str:
        return self._server.url

    def provider_for_cli(self) -> ProviderConfig:
        """What the CLI is told its provider is: the meter, with the session's placeholder."""
        return ProviderConfig(
            base_url=self._server.url,
            api_key=self._placeholder,
            custom=self._upstreams.configured is not None,
        )

    async def check_provider(self, calls: JobCalls) -> None:
        """Ask the provider for its model list, with the real key, while the CLI starts: one
        that cannot be reached or refuses the key fails the job in seconds rather than after
        the CLI's own start-up (several seconds for some). Any other answer (a model server
        without a model list says 404) passes. A pass is trusted for `REACHABLE_FOR_S`, so a
        busy session does not ask before every prompt."""
        upstream = self._upstreams.configured
        if upstream is None:  # the vendors' own endpoints: their calls fail fast on their own
            return
        if time.monotonic() - self._passed_at < REACHABLE_FOR_S:
            return
        path, headers = _MODEL_LIST[self._api]
        headers = {name: value.format(key=upstream.key) for name, value in headers.items()}
        if not upstream.key:
            headers = {
                n: v
                for n, v in headers.items()
                if n not in ("x-api-key", "authorization", "x-goog-api-key")
            }
        try:
            async with self._client.stream("GET", upstream.root + path, headers=headers) as answer:
                body = await _head_of(answer)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            calls.stop(
                PROVIDER_UNREACHABLE,
                f"the model provider at {upstream.root} cannot be reached: "
                f"{str(exc) or type(exc).__name__}",
            )
            return
        except httpx.HTTPError:
            return  # reached, then something else failed: the calls themselves will tell
        if answer.status_code in (401, 403):
            calls.stop(
                PROVIDER_AUTH_FAILED,
                f"the model provider refused the key (HTTP {answer.status_code}): "
                f"{provider_message(body) or 'no message'}; check the runtime's credential",
            )
            return
        self._passed_at = time.monotonic()

    def guard(self, job_id: str, budget: JobBudget, prices: Prices | None) -> BudgetGuard:
        """The gate and charges of a job under a budget, on the meter's connections."""
        return BudgetGuard(job_id, budget, self._client, prices)

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        await self._server.close()
        await self._pool.close()
        if self._http is not None:
            await self._http.aclose()


# The wire API each CLI speaks to a configured provider.
CLI_APIS = {
    "claude": WireApi.ANTHROPIC,
    "codex": WireApi.OPENAI_RESPONSES,
    "gemini": WireApi.GEMINI,
    "opencode": WireApi.OPENAI_CHAT,
}
# Each API's model list and how it takes a key: what `check_provider` asks.
_OPENAI_LIST = ("/v1/models", {"authorization": "Bearer {key}"})
_MODEL_LIST = {
    WireApi.ANTHROPIC: ("/v1/models", {"x-api-key": "{key}", "anthropic-version": "2023-06-01"}),
    WireApi.OPENAI_RESPONSES: _OPENAI_LIST,
    WireApi.OPENAI_CHAT: _OPENAI_LIST,
    WireApi.GEMINI: ("/v1beta/models", {"x-goog-api-key": "{key}"}),
}


async def _head_of(answer: httpx.Response) -> bytes:
    """The start of an answer's body, enough for an error message."""
    body = bytearray()
    async for chunk in answer.aiter_raw():
        body += chunk
        if len(body) > MAX_ERROR_BYTES:
            break
    return bytes(body)
