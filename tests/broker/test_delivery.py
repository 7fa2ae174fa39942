"""Delivery policy (`functions.broker.delivery`): parsing a Trigger's `delivery` with Knative's
defaults and limits, the backoff tables of both policies, which answers are retried, and the
next step after each attempt. ISO 8601 durations (`functions.broker.durations`) are at the end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from functions.broker.delivery import (
    BROKER_DEFAULT,
    MAX_BACKOFF,
    Decision,
    DeliveryPolicy,
    Outcome,
    classify,
    parse_delivery,
)
from functions.broker.durations import parse_duration
from functions.broker.errors import BrokerError, InvalidSpec

ms = lambda n: timedelta(milliseconds=n)  # noqa: E731 (keeps the tables readable)

# Knative's retryablehttp loop hands the backoff a zero-based attempt number: the first retry
# waits delay * 2^0 (exponential) or delay * 0 (linear).
EXPONENTIAL = [
    (1, ms(200)),
    (2, ms(400)),
    (3, ms(800)),
    (4, ms(1600)),
    (5, ms(3200)),
    (10, ms(102_400)),
]
LINEAR = [(1, ms(0)), (2, ms(200)), (3, ms(400)), (4, ms(600)), (5, ms(800)), (10, ms(1800))]


@pytest.mark.parametrize(("retry", "expected"), EXPONENTIAL)
def test_exponential_backoff(retry: int, expected: timedelta) -> None:
    policy = parse_delivery({"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"})
    assert policy.delay_before_retry(retry) == expected


@pytest.mark.parametrize(("retry", "expected"), LINEAR)
def test_linear_backoff(retry: int, expected: timedelta) -> None:
    policy = parse_delivery({"retry": 10, "backoffPolicy": "linear", "backoffDelay": "PT0.2S"})
    assert policy.delay_before_retry(retry) == expected


IMMEDIATE = [
    ("policy without delay", {"retry": 3, "backoffPolicy": "exponential"}),
    ("delay without policy", {"retry": 3, "backoffDelay": "PT1S"}),
    ("neither", {"retry": 3}),
    ("zero delay", {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0S"}),
]


@pytest.mark.parametrize(("spec"), [c[1] for c in IMMEDIATE], ids=[c[0] for c in IMMEDIATE])
def test_retries_are_immediate_without_policy_and_delay(spec: dict[str, Any]) -> None:
    policy = parse_delivery(spec)
    assert [policy.delay_before_retry(n) for n in (1, 2, 3)] == [timedelta(0)] * 3


def test_backoff_stops_at_the_largest_go_duration() -> None:
    exponential = DeliveryPolicy(
        retry=2**31 - 1, backoff_policy="exponential", backoff_delay=ms(200)
    )
    assert exponential.delay_before_retry(2**31 - 1) == MAX_BACKOFF
    assert exponential.delay_before_retry(64) == MAX_BACKOFF
    assert exponential.delay_before_retry(30) == ms(200) * 2**29
    linear = DeliveryPolicy(
        retry=2**31 - 1, backoff_policy="linear", backoff_delay=timedelta(days=1)
    )
    assert linear.delay_before_retry(2**31 - 1) == MAX_BACKOFF
    assert linear.delay_before_retry(101) == timedelta(days=100)


def test_zero_delay_stays_zero_however_many_retries() -> None:
    policy = DeliveryPolicy(retry=2**31 - 1, backoff_policy="exponential", backoff_delay=ms(0))
    assert policy.delay_before_retry(2**31 - 1) == timedelta(0)


def test_retry_numbers_count_from_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        BROKER_DEFAULT.delay_before_retry(0)


STATUSES = [
    (None, Outcome.RETRY),  # no answer: connection refused or reset, the attempt's timeout
    (200, Outcome.ACCEPTED),
    (201, Outcome.ACCEPTED),
    (202, Outcome.ACCEPTED),
    (204, Outcome.ACCEPTED),
    (299, Outcome.ACCEPTED),
    (404, Outcome.RETRY),
    (408, Outcome.RETRY),
    (409, Outcome.RETRY),
    (429, Outcome.RETRY),
    (500, Outcome.RETRY),
    (501, Outcome.RETRY),
    (502, Outcome.RETRY),
    (503, Outcome.RETRY),
    (504, Outcome.RETRY),
    (599, Outcome.RETRY),
    (400, Outcome.FAILED),
    (401, Outcome.FAILED),
    (403, Outcome.FAILED),
    (405, Outcome.FAILED),
    (410, Outcome.FAILED),
    (413, Outcome.FAILED),
    (415, Outcome.FAILED),
    (422, Outcome.FAILED),
    (100, Outcome.FAILED),
    (301, Outcome.FAILED),
    (302, Outcome.FAILED),
    (307, Outcome.FAILED),
]


@pytest.mark.parametrize(("status", "expected"), STATUSES)
def test_which_answers_are_retried(status: int | None, expected: Outcome) -> None:
    assert classify(status) is expected


BINARY = {"Ce-Specversion": "1.0", "ce-type": "dev.vwm.tick", "Content-Type": "application/json"}
STRUCTURED = {"content-type": "Application/CloudEvents+JSON; charset=utf-8"}
BODIES = [
    ("empty 200", 200, b"", {}, Outcome.ACCEPTED),
    (
        "200 with a plain body counts as 502",
        200,
        b"ok",
        {"content-type": "text/plain"},
        Outcome.RETRY,
    ),
    (
        "202 with a JSON body counts as 502",
        202,
        b"{}",
        {"content-type": "application/json"},
        Outcome.RETRY,
    ),
    ("binary reply event", 200, b"{}", BINARY, Outcome.REPLY),
    ("binary reply event, no data", 200, b"", BINARY, Outcome.REPLY),
    ("structured reply event", 200, b"{}", STRUCTURED, Outcome.REPLY),
    (
        "batch is not an event",
        200,
        b"[]",
        {"content-type": "application/cloudevents-batch+json"},
        Outcome.RETRY,
    ),
    ("500 with an event is still a 500", 500, b"{}", BINARY, Outcome.RETRY),
    ("400 with a body", 400, b"bad", {"content-type": "text/plain"}, Outcome.FAILED),
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"), [c[1:] for c in BODIES], ids=[c[0] for c in BODIES]
)
def test_what_an_answer_means(
    status: int, body: bytes, headers: dict[str, str], expected: Outcome
) -> None:
    assert classify(status, body=body, headers=headers) is expected


WITH_DLS = DeliveryPolicy(
    retry=2,
    backoff_policy="exponential",
    backoff_delay=timedelta(seconds=1),
    dead_letter_sink="http://127.0.0.1:9/dls",
)
WITHOUT_DLS = DeliveryPolicy(retry=2, backoff_policy="linear", backoff_delay=timedelta(seconds=1))
DECISIONS = [
    ("accepted", WITH_DLS, Outcome.ACCEPTED, 0, Decision("done")),
    ("reply", WITH_DLS, Outcome.REPLY, 1, Decision("done")),
    ("first retry", WITH_DLS, Outcome.RETRY, 0, Decision("retry", timedelta(seconds=1))),
    ("second retry", WITH_DLS, Outcome.RETRY, 1, Decision("retry", timedelta(seconds=2))),
    ("retries used up: dead letter", WITH_DLS, Outcome.RETRY, 2, Decision("dead_letter")),
    ("permanent failure skips retries", WITH_DLS, Outcome.FAILED, 0, Decision("dead_letter")),
    (
        "linear first retry is immediate",
        WITHOUT_DLS,
        Outcome.RETRY,
        0,
        Decision("retry", timedelta(0)),
    ),
    ("retries used up: drop", WITHOUT_DLS, Outcome.RETRY, 2, Decision("drop")),
    ("permanent failure: drop", WITHOUT_DLS, Outcome.FAILED, 0, Decision("drop")),
    ("no retries configured", DeliveryPolicy(), Outcome.RETRY, 0, Decision("drop")),
]


@pytest.mark.parametrize(
    ("policy", "outcome", "retries_done", "expected"),
    [c[1:] for c in DECISIONS],
    ids=[c[0] for c in DECISIONS],
)
def test_next_step(
    policy: DeliveryPolicy, outcome: Outcome, retries_done: int, expected: Decision
) -> None:
    assert policy.decide(outcome, retries_done=retries_done) == expected


def test_a_subscriber_that_never_answers_gets_every_attempt_then_the_dead_letter_sink() -> None:
    policy = parse_delivery(
        {
            "retry": 3,
            "backoffPolicy": "exponential",
            "backoffDelay": "PT1S",
            "deadLetterSink": {"uri": "http://127.0.0.1:9/dls"},
        }
    )
    steps, attempts = [], 1
    while (decision := policy.decide(classify(None), retries_done=attempts - 1)).action == "retry":
        steps.append(decision.delay)
        attempts += 1
    assert steps == [timedelta(seconds=s) for s in (1, 2, 4)]
    assert (attempts, policy.max_attempts, decision.action) == (4, 4, "dead_letter")


def test_retries_done_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        BROKER_DEFAULT.decide(Outcome.RETRY, retries_done=-1)


PARSED = [
    ("absent: the broker default", None, BROKER_DEFAULT),
    ("empty replaces the broker's: no retries", {}, DeliveryPolicy()),
    (
        "every field",
        {
            "retry": 5,
            "backoffPolicy": "linear",
            "backoffDelay": "PT0.5S",
            "timeout": "PT30S",
            "deadLetterSink": {"uri": "https://dls.example/events"},
            "format": "binary",
        },
        DeliveryPolicy(
            5, "linear", ms(500), timedelta(seconds=30), "https://dls.example/events", "binary"
        ),
    ),
    (
        "dead-letter sink as a plain URL",
        {"deadLetterSink": "http://127.0.0.1:8080/dls"},
        DeliveryPolicy(dead_letter_sink="http://127.0.0.1:8080/dls"),
    ),
    ("retry zero", {"retry": 0}, DeliveryPolicy()),
    ("retry at the int32 limit", {"retry": 2**31 - 1}, DeliveryPolicy(retry=2**31 - 1)),
    ("structured format", {"format": "json"}, DeliveryPolicy(format="json")),
    ("null fields are unset", {"retry": None, "timeout": None}, DeliveryPolicy()),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in PARSED], ids=[c[0] for c in PARSED])
def test_parse_delivery(spec: dict[str, Any] | None, expected: DeliveryPolicy) -> None:
    assert parse_delivery(spec) == expected


def test_broker_default_is_knatives_cluster_default() -> None:
    assert (
        parse_delivery({"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"})
        == BROKER_DEFAULT
    )
    assert BROKER_DEFAULT.max_attempts == 11
    own = DeliveryPolicy(retry=1)
    assert parse_delivery(None, default=own) is own


INVALID = [
    ("negative retry", {"retry": -1}, "delivery.retry", "from 0 to"),
    ("retry as text", {"retry": "3"}, "delivery.retry", "whole number"),
    ("retry as bool", {"retry": True}, "delivery.retry", "whole number"),
    ("retry as float", {"retry": 2.5}, "delivery.retry", "whole number"),
    ("retry past int32", {"retry": 2**31}, "delivery.retry", "2147483647"),
    (
        "policy in capitals",
        {"backoffPolicy": "Exponential"},
        "delivery.backoffPolicy",
        "lower case",
    ),
    (
        "unknown policy",
        {"backoffPolicy": "fibonacci"},
        "delivery.backoffPolicy",
        "linear, exponential",
    ),
    (
        "delay not ISO 8601",
        {"backoffDelay": "0.2s"},
        "delivery.backoffDelay",
        "not an ISO 8601 duration",
    ),
    ("delay negative", {"backoffDelay": "-PT1S"}, "delivery.backoffDelay", "negative"),
    ("delay a number", {"backoffDelay": 0.2}, "delivery.backoffDelay", "got float"),
    ("zero timeout", {"timeout": "PT0S"}, "delivery.timeout", "above zero"),
    ("timeout in months", {"timeout": "P1M"}, "delivery.timeout", "no fixed length"),
    (
        "dead-letter ref",
        {"deadLetterSink": {"ref": {"kind": "Service", "name": "dls"}}},
        "delivery.deadLetterSink",
        "only `uri`",
    ),
    (
        "dead-letter CA certs",
        {"deadLetterSink": {"uri": "https://x", "CACerts": "..."}},
        "delivery.deadLetterSink",
        "no TLS or OIDC",
    ),
    (
        "dead-letter relative",
        {"deadLetterSink": {"uri": "/dls"}},
        "delivery.deadLetterSink.uri",
        "absolute http(s) URL",
    ),
    (
        "dead-letter other scheme",
        {"deadLetterSink": "ftp://host/dls"},
        "delivery.deadLetterSink",
        "absolute http(s) URL",
    ),
    (
        "dead-letter without host",
        {"deadLetterSink": "http:///dls"},
        "delivery.deadLetterSink",
        "absolute http(s) URL",
    ),
    (
        "dead-letter bad port",
        {"deadLetterSink": "http://host:99999/"},
        "delivery.deadLetterSink",
        "absolute http(s) URL",
    ),
    (
        "dead-letter with a space",
        {"deadLetterSink": "http://host/a b"},
        "delivery.deadLetterSink",
        "percent-encode",
    ),
    ("dead-letter a number", {"deadLetterSink": 8080}, "delivery.deadLetterSink", "got int"),
    ("unknown format", {"format": "xml"}, "delivery.format", "json, binary"),
    ("retryAfterMax", {"retryAfterMax": "PT10S"}, "delivery.retryAfterMax", "remove retryAfterMax"),
    ("unknown field", {"retries": 3}, "delivery", "unknown field(s) retries"),
    ("not a mapping", ["retry"], "delivery", "expected a mapping"),
]


@pytest.mark.parametrize(
    ("spec", "path", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_delivery_is_refused(spec: Any, path: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_delivery(spec)
    error = raised.value
    assert isinstance(error, BrokerError)
    assert (error.code, error.path) == ("invalid_delivery", path)
    assert fragment in error.message


DURATIONS = [
    ("PT0.2S", ms(200)),
    ("PT30S", timedelta(seconds=30)),
    ("PT5M", timedelta(minutes=5)),
    ("PT1H", timedelta(hours=1)),
    ("P1D", timedelta(days=1)),
    ("P2W", timedelta(weeks=2)),
    ("P1DT12H", timedelta(days=1, hours=12)),
    ("PT1H30M", timedelta(hours=1, minutes=30)),
    ("PT1M30.5S", timedelta(minutes=1, seconds=30.5)),
    ("PT0,5S", ms(500)),
    ("PT0.5H", timedelta(minutes=30)),
    ("P1.5D", timedelta(hours=36)),
    ("PT0S", timedelta(0)),
    ("P0D", timedelta(0)),
    ("PT90M", timedelta(minutes=90)),
    ("PT0.000001S", timedelta(microseconds=1)),
    ("PT0.0000015S", timedelta(microseconds=2)),  # rounded half to even
    ("PT0.0000025S", timedelta(microseconds=2)),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_iso_8601_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, path="delay") == expected


BAD_DURATIONS = [
    ("", "not an ISO 8601 duration"),
    ("P", "not an ISO 8601 duration"),
    ("PT", "not an ISO 8601 duration"),
    ("P1DT", "not an ISO 8601 duration"),
    ("1S", "not an ISO 8601 duration"),
    ("pt1s", "in capitals"),
    ("PT1S2M", "not an ISO 8601 duration"),
    ("PT 1S", "not an ISO 8601 duration"),
    ("PT1.S", "not an ISO 8601 duration"),
    ("-PT1S", "cannot be signed or negative"),
    ("+PT1S", "cannot be signed or negative"),
    ("P1Y", "years and months"),
    ("P1M", "years and months"),
    ("P1Y2M3DT4H", "years and months"),
    ("PT1.5M30S", "only the last component"),
    ("P1.5DT1H", "only the last component"),
    ("PT" + "9" * 70 + "S", "at most 64 characters"),
    ("P99999999999999D", "too long a duration"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_DURATIONS)
def test_bad_durations(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_duration(text, path="delivery.timeout")
    assert (raised.value.code, raised.value.path) == ("invalid_delivery", "delivery.timeout")
    assert fragment in raised.value.message
