"""Sending one `VwmEvent` to a sink over HTTP, as Knative expects: a POST in binary mode (or
structured), 2xx accepted (a Knative broker answers 202), connection errors, timeouts, 404, 408,
409, 429 and 5xx worth another try, any other answer a refusal that no retry changes.

`eventing.relay.Relay` calls `Publisher.attempt` for each event it drains from its outbox and
waits `backoff` between tries; `Publisher.deliver` is the bounded retry loop for a caller that
sends without an outbox. Settings are read once (`PublisherSettings.from_env`): the sink is
``VWM_EVENT_SINK``, else Knative's ``K_SINK`` (what a SinkBinding injects).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Self
from urllib.parse import urlsplit

import httpx

from eventing import codec
from eventing.events import VwmEvent
from eventing.inputs import InputError
from eventing.tls import verified_context

log = logging.getLogger(__name__)

Mode = Literal["binary", "structured"]
# The answers Knative's own delivery retries besides 5xx (docs/broker.md); a 2xx is accepted.
RETRIED_STATUSES = frozenset({404, 408, 409, 429})
# What an attempt keeps of a refusal's body, for the dead letter.
MAX_ANSWER_CHARS = 4096


class PublisherError(InputError):
    """A publisher setting that cannot work (``invalid_publisher_setting``, with the variable's
    name in ``details.setting``). Raised once, when settings are read, never per event: a
    deployment problem, hence a 500 should an edge ever report one."""

    status = 500
    retryable = False


@dataclass(frozen=True)
class PublisherSettings:
    """Where and how to publish. Times are seconds.

    - `sink`: the absolute http(s) URL events are POSTed to.
    - `mode`: ``binary`` (``ce-*`` headers, the data as body) or ``structured``.
    - `timeout_s`: bounds one attempt (connect, send, answer), not the whole delivery.
    - `retries`: how many more tries `Publisher.deliver` makes after the first; the relay
      keeps trying past it (the outbox holds the event) and logs that the sink is down.
    - `backoff_base_s`, `backoff_cap_s`: the wait before retry n is drawn uniformly from
      ``[0, min(cap, base * 2^(n-1))]`` (exponential backoff with full jitter, so publishers
      that failed together do not retry together).
    """

    sink: str
    mode: Mode = "binary"
    timeout_s: float = 10.0
    retries: int = 8
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0

    def __post_init__(self) -> None:
        _check_url(self.sink, "sink")
        if self.mode not in ("binary", "structured"):
            raise _bad("mode", f"mode must be binary or structured, got {self.mode!r}")
        for name in ("timeout_s", "backoff_base_s", "backoff_cap_s"):
            value = getattr(self, name)
            if not 0 < value <= 86_400:
                raise _bad(name, f"{name} must be above 0 and at most a day (seconds): {value}")
        if not 0 <= self.retries <= 1000:
            raise _bad("retries", f"retries must be 0..1000, got {self.retries}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """``VWM_EVENT_SINK`` or ``K_SINK`` (required); ``VWM_EVENT_MODE``,
        ``VWM_EVENT_TIMEOUT_S``, ``VWM_EVENT_RETRIES``, ``VWM_EVENT_BACKOFF_S``,
        ``VWM_EVENT_BACKOFF_CAP_S`` (optional)."""
        env = os.environ if environ is None else environ
        sink = env.get("VWM_EVENT_SINK") or env.get("K_SINK")
        if not sink:
            raise _bad(
                "VWM_EVENT_SINK",
                "no event sink: set VWM_EVENT_SINK (or K_SINK, as a Knative SinkBinding does) "
                "to the broker's URL",
            )
        variables = {
            "sink": "VWM_EVENT_SINK" if env.get("VWM_EVENT_SINK") else "K_SINK",
            "mode": "VWM_EVENT_MODE",
            "timeout_s": "VWM_EVENT_TIMEOUT_S",
            "retries": "VWM_EVENT_RETRIES",
            "backoff_base_s": "VWM_EVENT_BACKOFF_S",
            "backoff_cap_s": "VWM_EVENT_BACKOFF_CAP_S",
        }
        try:
            return cls(
                sink=sink,
                mode=env.get("VWM_EVENT_MODE", "binary"),  # type: ignore[arg-type]  # checked
                timeout_s=_number(env, "VWM_EVENT_TIMEOUT_S", 10.0),
                retries=int(_number(env, "VWM_EVENT_RETRIES", 8, whole=True)),
                backoff_base_s=_number(env, "VWM_EVENT_BACKOFF_S", 0.2),
                backoff_cap_s=_number(env, "VWM_EVENT_BACKOFF_CAP_S", 30.0),
            )
        except PublisherError as exc:  # name the variable to fix, not the field
            name = variables.get(exc.details["setting"])
            if name is None:
                raise
            raise _bad(name, f"{name}: {exc.message}") from None

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1 is the first retry), jittered."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(retry_number - 1, 60))
        return random.uniform(0, ceiling)  # noqa: S311 (jitter, not a secret)


@dataclass(frozen=True)
class Attempt:
    """How one POST went. `outcome`: ``sent`` (2xx), ``retry`` (may work later), ``refused``
    (the sink will never take it). `status` is None when no HTTP answer came; `answer` is the
    answer's body (bounded) or what went wrong on the way."""

    outcome: Literal["sent", "retry", "refused"]
    status: int | None
    answer: str = ""


def classify(status: int) -> Literal["sent", "retry", "refused"]:
    if 200 <= status < 300:
        return "sent"
    if status >= 500 or status in RETRIED_STATUSES:
        return "retry"
    return "refused"


class Publisher:
    """POSTs events to the sink through one `httpx.AsyncClient`, reused for every event and
    sending `headers` with each. Use as ``async with Publisher(settings) as publisher:`` or call
    `aclose` when done.

    The client is made at the first event: making one imports httpx's transport and loads the
    TLS context (tens of ms), which a harness would otherwise pay on its way to ready."""

    def __init__(self, settings: PublisherSettings, *, headers: Mapping[str, str] | None = None):
        self.settings = settings
        self._headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No proxy from the environment: the sink is the cluster's broker or a local process.
            self._client = httpx.AsyncClient(
                trust_env=False, verify=verified_context(), headers=self._headers
            )
        return self._client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def attempt(self, event: VwmEvent) -> Attempt:
        """One POST of `event`; never raises for what the network or the sink did."""
        encode = codec.to_binary if self.settings.mode == "binary" else codec.to_structured
        headers, body = encode(event)
        try:
            response = await self._http().post(
                self.settings.sink,
                headers=headers,
                content=body,
                timeout=self.settings.timeout_s,
            )
        except httpx.TimeoutException:
            return Attempt("retry", None, f"no answer within {self.settings.timeout_s} s")
        except httpx.TransportError as exc:
            return Attempt("retry", None, f"{type(exc).__name__}: {exc}"[:MAX_ANSWER_CHARS])
        outcome = classify(response.status_code)
        answer = "" if outcome == "sent" else response.text[:MAX_ANSWER_CHARS]
        return Attempt(outcome, response.status_code, answer)

    async def deliver(self, event: VwmEvent) -> Attempt:
        """Up to ``1 + retries`` attempts with backoff; the last attempt says how it ended."""
        result = await self.attempt(event)
        for retry in range(1, self.settings.retries + 1):
            if result.outcome != "retry":
                break
            await asyncio.sleep(self.settings.backoff(retry))
            result = await self.attempt(event)
        return result


def _bad(setting: str, message: str) -> PublisherError:
    return PublisherError("invalid_publisher_setting", message, setting=setting)


def _number(env: Mapping[str, str], name: str, default: float, *, whole: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise _bad(name, f"{name} must be {kind}, got {raw[:50]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _bad(name, f"{name} must be a finite number, got {raw[:50]!r}")
    return value


def _check_url(value: str, setting: str) -> None:
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host or value != value.strip():
        raise _bad(
            setting,
            f"{value[:200]!r} is not an absolute http(s) URL such as "
            "http://broker-ingress.knative-eventing.svc.cluster.local/vwm/default",
        )
