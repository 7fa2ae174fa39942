"""Who gets which events, and how they are handed over: a `Subscription` is a Trigger's worth of
routing (a name, a `TriggerFilter`, a `DeliveryPolicy`) plus the `Sink` that takes the event.

Two sinks:

- `HttpSink` POSTs the event (binary mode unless the policy says ``format: json``) through one
  shared `httpx.AsyncClient`, bounded by the policy's per-attempt timeout, and reads the answer
  as `functions.broker.delivery.classify` says (a 2xx with a CloudEvent body is a reply).
- `LocalSink` calls an async function in this process, for the control plane's own `events`
  function: `EventError` (never to be accepted) is refused, anything else raised is retried.

`builtin_subscriptions` is what `vwm up` routes to: every ``dev.vwm.*`` event to the `events`
function. User subscriptions (table `vwm.subscriptions`) join them per transaction:
`functions.broker.user_subscriptions`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

import httpx

from eventing import codec
from eventing.errors import ErrorBody, VwmError
from eventing.events import EventError, VwmEvent
from functions.broker.delivery import (
    DeliveryPolicy,
    Outcome,
    classify,
    parse_delivery,
)
from functions.broker.filters import TriggerFilter, parse_trigger_filter
from functions.broker.queue import MAX_ANSWER_CHARS

log = logging.getLogger(__name__)

# The bound of one HTTP attempt when the policy sets no `timeout` (Knative leaves it to the
# subscriber; a bound here keeps one mute subscriber from holding a delivery slot for ever).
DEFAULT_HTTP_TIMEOUT_S = 30.0
CONTROL_PLANE = "control-plane"
SESSION_PROMPTS = "session-prompts"
# The control plane's subscription, written as a Knative Trigger's spec.
CONTROL_PLANE_SPEC: dict[str, Any] = {
    "filters": [{"prefix": {"type": "dev.vwm."}}],
    "delivery": {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"},
}


@dataclass(frozen=True)
class SinkResult:
    """How one attempt went: `outcome` as `classify` reads the answer, `status` None when no
    HTTP answer came, `answer` the body of a failed answer (bounded) or what went wrong, `reply`
    the event a subscriber answered with (``Outcome.REPLY``) when it is a VWM event."""

    outcome: Outcome
    status: int | None
    answer: str = ""
    reply: VwmEvent | None = None


class Sink(Protocol):
    async def deliver(self, event: VwmEvent) -> SinkResult: ...


@dataclass(frozen=True)
class Subscription:
    """`ordered`: deliveries go one at a time, oldest event first, the next one not claimed
    while an earlier one is in flight or waiting for its retry (a user's sink may count on the
    order of a job's batches); False: up to the loop's concurrency at once (the control plane's
    `events` function does not depend on order)."""

    name: str
    filter: TriggerFilter
    sink: Sink
    policy: DeliveryPolicy
    ordered: bool = False
    # Its deliveries last as long as an agent's job: the broker claims them in a loop of their
    # own (`BrokerService`), so they never hold the other subscribers' delivery slots.
    long_running: bool = False
    # Called with the event and the last answer when a delivery dies (after its retries, or
    # refused), before it is marked dead: the subscriber's own way to close what it started.
    on_dead: Callable[[VwmEvent, str], Awaitable[None]] | None = None

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], sink: Sink) -> Subscription:
        """From a Trigger-shaped spec (``filter``, ``filters``, ``delivery``). Raises
        `functions.broker.errors.InvalidSpec`."""
        return cls(name, parse_trigger_filter(spec), sink, parse_delivery(spec.get("delivery")))


class HttpSink:
    """POSTs to `url` through `client` (shared: one connection pool for every subscriber)."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        timeout: timedelta | None = None,
        structured: bool = False,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self._client = client
        self.timeout_s = timeout.total_seconds() if timeout else DEFAULT_HTTP_TIMEOUT_S
        self._encode = codec.to_structured if structured else codec.to_binary
        self._extra = dict(extra_headers or {})

    @classmethod
    def for_policy(cls, url: str, client: httpx.AsyncClient, policy: DeliveryPolicy) -> HttpSink:
        return cls(url, client, timeout=policy.timeout, structured=policy.format == "json")

    async def deliver(
        self, event: VwmEvent, *, extra_headers: Mapping[str, str] | None = None
    ) -> SinkResult:
        headers, body = self._encode(event)
        headers.update(self._extra)
        headers.update(extra_headers or {})
        try:
            response = await self._client.post(
                self.url, headers=headers, content=body, timeout=self.timeout_s
            )
        except httpx.TimeoutException:
            return SinkResult(Outcome.RETRY, None, f"no answer within {self.timeout_s} s")
        except httpx.TransportError as exc:
            return SinkResult(
                Outcome.RETRY, None, f"{type(exc).__name__}: {exc}"[:MAX_ANSWER_CHARS]
            )
        outcome = classify(response.status_code, body=response.content, headers=response.headers)
        if outcome is Outcome.ACCEPTED:
            return SinkResult(outcome, response.status_code)
        if outcome is Outcome.REPLY:
            return SinkResult(outcome, response.status_code, reply=_reply(self.url, response))
        return SinkResult(outcome, response.status_code, response.text[:MAX_ANSWER_CHARS])


def _reply(url: str, response: httpx.Response) -> VwmEvent | None:
    """The reply event, if it is one of ours; another is logged and dropped (the delivery still
    succeeded: the subscriber took the event)."""
    try:
        return codec.from_http(dict(response.headers), response.content)
    except EventError as exc:
        log.warning(
            "a subscriber replied with an event that is not a VWM event: dropped",
            extra={"sink": url, "code": exc.code, "reason": exc.message[:500]},
        )
        return None


class LocalSink:
    """Hands the event to an async function of this process. Its return value is ignored;
    `EventError` means refused (a 4xx: no retry changes it), any other exception a retry (a
    503 when it says the function is unavailable, else a 500)."""

    def __init__(
        self,
        handler: Callable[[VwmEvent], Awaitable[object]],
        *,
        timeout: timedelta | None = None,
        unavailable: tuple[type[VwmError], ...] = (),
    ) -> None:
        self._handler = handler
        self.timeout_s = timeout.total_seconds() if timeout else None
        self._unavailable = unavailable

    async def deliver(self, event: VwmEvent) -> SinkResult:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._handler(event)
        except EventError as exc:
            return SinkResult(Outcome.FAILED, exc.status, _error_text(exc.code, exc.message))
        except TimeoutError:
            return SinkResult(Outcome.RETRY, None, f"no answer within {self.timeout_s} s")
        except self._unavailable as exc:
            return SinkResult(Outcome.RETRY, 503, _error_text(exc.code, exc.message))
        except Exception as exc:
            log.exception(
                "a local subscriber failed; the event will be retried",
                extra={"event_id": event.id, "event_type": event.type},
            )
            return SinkResult(Outcome.RETRY, 500, _error_text("internal", type(exc).__name__))
        return SinkResult(Outcome.ACCEPTED, 202)


def _error_text(code: str, message: str) -> str:
    """The answer kept for a local refusal: the JSON error body an HTTP edge would send."""
    body = ErrorBody.of(code, message).to_json()
    return json.dumps(body, ensure_ascii=False)[:MAX_ANSWER_CHARS]


def control_plane_subscription(
    receive: Callable[[VwmEvent], Awaitable[object]] | None = None,
) -> Subscription:
    """Every ``dev.vwm.*`` event to the `events` function of this process (`receive`, by
    default `functions.events.receive`)."""
    from functions.events import EventsUnavailable
    from functions.events import receive as events_receive

    sink = LocalSink(receive or events_receive, unavailable=(EventsUnavailable,))
    return Subscription.from_spec(CONTROL_PLANE, CONTROL_PLANE_SPEC, sink)


def session_prompts_subscription() -> Subscription:
    """Every ``dev.vwm.prompt.requested`` to its session's harness, which runs the job inside
    the delivery (`functions.prompt_delivery`): the embedded form of the Trigger per session
    that production makes. Concurrent (the harness gives a busy session's requests their
    turns) and long-running."""
    from functions.prompt_delivery import SESSION_PROMPTS_SPEC, SessionPromptSink, undelivered

    return replace(
        Subscription.from_spec(SESSION_PROMPTS, SESSION_PROMPTS_SPEC, SessionPromptSink()),
        long_running=True,
        on_dead=undelivered,
    )


def replies_subscription() -> Subscription:
    """Each job's end to the `reply_to` its prompt request named (`functions.replies`)."""
    from functions.replies import REPLIES, REPLIES_SPEC, ReplySink

    return Subscription.from_spec(REPLIES, REPLIES_SPEC, ReplySink())


def builtin_subscriptions() -> list[Subscription]:
    """The subscriptions of `vwm up`."""
    return [control_plane_subscription(), session_prompts_subscription(), replies_subscription()]
