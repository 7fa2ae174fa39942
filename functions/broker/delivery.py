"""A subscription's delivery policy, with the semantics of a Knative Trigger's ``delivery``
(Eventing v1.22): how often to retry, how long to wait, when to give up and where the event
goes then. The embedded broker's delivery loop calls `parse_delivery` once per subscription,
then `classify` on each answer and `DeliveryPolicy.decide` for what to do next.

What Knative does, and so this module:

- A Trigger without ``delivery`` takes its Broker's, and a Broker without one takes the
  cluster default (``config-br-defaults``: 10 retries, exponential, PT0.2S): `BROKER_DEFAULT`.
  A Trigger's ``delivery`` replaces the Broker's whole; fields are not merged.
- ``retry`` is how many times to try again after the first attempt (0..2^31-1).
- The wait before retry *n* (1 for the first retry) uses Knative's zero-based attempt number
  n-1: linear waits ``backoffDelay * (n-1)``, so its first retry is immediate; exponential
  waits ``backoffDelay * 2^(n-1)``. With either of ``backoffPolicy`` or ``backoffDelay``
  missing, every retry is immediate. Knative lets the product overflow Go's int64; here it
  stops at `MAX_BACKOFF` (the largest Go duration, about 292 years).
- ``timeout`` bounds each attempt (not the whole delivery) and must be above zero.
- Retried: no answer (connection refused or reset, the attempt's timeout), 404, 408, 409,
  429 and every 5xx. Not retried: other 4xx, 1xx and 3xx; those fail at once. A 2xx is
  accepted, but only with an empty body or a CloudEvent: a 2xx with another body counts as a
  502 (Knative's broker-filter answers so), and is retried.
- A 2xx whose body is a CloudEvent is a reply: the broker must publish that event back into
  itself (subscribers that only acknowledge answer 202 or an empty 200). See `Outcome.REPLY`.
- After the last retry the event goes to ``deadLetterSink`` when there is one, else it is
  dropped (Knative logs it).

Refused, where Knative would accept: ``deadLetterSink.ref`` (there are no Kubernetes objects to
resolve; give ``uri``), ``CACerts`` and ``audience`` (no TLS or OIDC here), ``retryAfterMax``
(Knative's ``delivery-retryafter`` feature is off by default, and this broker does not honour
Retry-After), unknown fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from functions.broker.durations import parse_duration
from functions.broker.errors import InvalidSpec

BackoffPolicy = Literal["linear", "exponential"]
Format = Literal["json", "binary"]

MAX_RETRY = 2**31 - 1  # `retry` is an int32 in Knative's API
MAX_BACKOFF = timedelta(microseconds=(2**63 - 1) // 1000)
RETRIED_STATUSES = frozenset({404, 408, 409, 429})
# What Knative's broker-filter answers in place of a 2xx whose body is not a CloudEvent.
NOT_A_CLOUDEVENT_STATUS = 502
_FIELDS = ("retry", "backoffPolicy", "backoffDelay", "timeout", "deadLetterSink", "format")
_CODE = "invalid_delivery"


class Outcome(Enum):
    """What one delivery attempt's answer means."""

    ACCEPTED = "accepted"  # 2xx with no body: done
    REPLY = "reply"  # 2xx with a CloudEvent body: done, and that event goes back to the broker
    RETRY = "retry"  # may succeed later: retry while retries are left
    FAILED = "failed"  # will not succeed: straight to the dead-letter sink


@dataclass(frozen=True)
class Decision:
    """What the delivery loop does next. `delay` is set for ``retry``."""

    action: Literal["done", "retry", "dead_letter", "drop"]
    delay: timedelta = timedelta(0)


@dataclass(frozen=True)
class DeliveryPolicy:
    retry: int = 0
    backoff_policy: BackoffPolicy | None = None
    backoff_delay: timedelta | None = None
    timeout: timedelta | None = None  # per attempt; None: the caller's own bound
    dead_letter_sink: str | None = None
    format: Format | None = None  # how to send: structured JSON or binary; None: either

    @property
    def max_attempts(self) -> int:
        return 1 + self.retry

    def delay_before_retry(self, retry_number: int) -> timedelta:
        """The wait before retry `retry_number` (1 is the first retry), as Knative computes it."""
        if retry_number < 1:
            raise ValueError(f"retry_number counts from 1, got {retry_number}")
        if self.backoff_policy is None or self.backoff_delay is None:
            return timedelta(0)
        attempt = retry_number - 1  # Knative's backoff gets a zero-based attempt number
        delay_us = _micros(self.backoff_delay)
        if delay_us == 0:
            return timedelta(0)
        if self.backoff_policy == "linear":
            total = delay_us * attempt
        elif attempt >= 64:  # 2^64 * 1 µs is already past MAX_BACKOFF: skip the big power
            return MAX_BACKOFF
        else:
            total = delay_us * 2**attempt
        return timedelta(microseconds=min(total, _micros(MAX_BACKOFF)))

    def decide(self, outcome: Outcome, *, retries_done: int) -> Decision:
        """The next step after an attempt that ended in `outcome`, when `retries_done` retries
        were already made (0 after the first attempt)."""
        if retries_done < 0:
            raise ValueError(f"retries_done cannot be negative, got {retries_done}")
        if outcome in (Outcome.ACCEPTED, Outcome.REPLY):
            return Decision("done")
        if outcome is Outcome.RETRY and retries_done < self.retry:
            return Decision("retry", self.delay_before_retry(retries_done + 1))
        return Decision("dead_letter" if self.dead_letter_sink else "drop")


BROKER_DEFAULT = DeliveryPolicy(
    retry=10, backoff_policy="exponential", backoff_delay=timedelta(milliseconds=200)
)


def classify(
    status: int | None, *, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> Outcome:
    """What an answer means. `status` None: no answer came (connection error or timeout).
    `body` and `headers` matter only for a 2xx: they tell a reply event from an error."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        if is_cloudevent(headers or {}):
            return Outcome.REPLY
        if body:
            return classify(NOT_A_CLOUDEVENT_STATUS)
        return Outcome.ACCEPTED
    if status >= 500 or status in RETRIED_STATUSES:
        return Outcome.RETRY
    return Outcome.FAILED


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    """Whether an HTTP message carries a CloudEvent: binary mode (a ``ce-specversion`` header)
    or structured mode (``Content-Type: application/cloudevents+json``). Header names are
    matched without regard to case, so a plain dict works as well as httpx's headers."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if "ce-specversion" in lowered:
        return True
    media_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/cloudevents+json"


def parse_delivery(
    raw: Mapping[str, Any] | None, *, default: DeliveryPolicy = BROKER_DEFAULT
) -> DeliveryPolicy:
    """The policy of a Trigger-shaped ``delivery``; `default` (the Broker's) when it is absent.
    Raises `InvalidSpec` with code ``invalid_delivery``."""
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise InvalidSpec(
            f"expected a mapping, got {type(raw).__name__}", path="delivery", code=_CODE
        )
    if "retryAfterMax" in raw:
        raise InvalidSpec(
            "Retry-After is not honoured by the embedded broker (Knative's delivery-retryafter "
            "feature is off by default); remove retryAfterMax",
            path="delivery.retryAfterMax",
            code=_CODE,
        )
    unknown = sorted(str(key) for key in raw if key not in _FIELDS)
    if unknown:
        raise InvalidSpec(
            f"unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}",
            path="delivery",
            code=_CODE,
        )
    timeout = _optional_duration(raw.get("timeout"), "delivery.timeout")
    if timeout is not None and timeout <= timedelta(0):
        raise InvalidSpec(
            "a timeout must be above zero; leave it out for no per-attempt timeout",
            path="delivery.timeout",
            code=_CODE,
        )
    return DeliveryPolicy(
        retry=_retry(raw.get("retry")),
        backoff_policy=cast(
            BackoffPolicy | None,
            _choice(raw.get("backoffPolicy"), ("linear", "exponential"), "delivery.backoffPolicy"),
        ),
        backoff_delay=_optional_duration(raw.get("backoffDelay"), "delivery.backoffDelay"),
        timeout=timeout,
        dead_letter_sink=_dead_letter_sink(raw.get("deadLetterSink")),
        format=cast(
            Format | None, _choice(raw.get("format"), ("json", "binary"), "delivery.format")
        ),
    )


def _retry(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRY:
        raise InvalidSpec(
            f"retry must be a whole number from 0 to {MAX_RETRY}, got {value!r}",
            path="delivery.retry",
            code=_CODE,
        )
    return value


def _choice(value: Any, allowed: tuple[str, ...], path: str) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise InvalidSpec(
            f"{value!r} is not one of {', '.join(allowed)} (lower case)", path=path, code=_CODE
        )
    return cast(str, value)


def _optional_duration(value: Any, path: str) -> timedelta | None:
    return None if value is None else parse_duration(value, path=path, code=_CODE)


def _dead_letter_sink(value: Any) -> str | None:
    path = "delivery.deadLetterSink"
    if value is None:
        return None
    if isinstance(value, Mapping):
        extra = sorted(str(key) for key in value if key != "uri")
        if extra:
            raise InvalidSpec(
                f"only `uri` is supported here, not {', '.join(extra)}: the embedded broker has "
                "no Kubernetes objects to resolve and no TLS or OIDC settings; give an http(s) URL",
                path=path,
                code=_CODE,
            )
        value = value.get("uri")
        path = f"{path}.uri"
    if not isinstance(value, str):
        raise InvalidSpec(
            f"expected an absolute http(s) URL, got {type(value).__name__}", path=path, code=_CODE
        )
    if any(char.isspace() or not char.isprintable() for char in value):
        raise InvalidSpec(
            "a URL cannot hold spaces or control characters; percent-encode them",
            path=path,
            code=_CODE,
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise InvalidSpec(
            f"{value!r} is not an absolute http(s) URL such as http://127.0.0.1:8080/dead-letters",
            path=path,
            code=_CODE,
        )
    return value


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
