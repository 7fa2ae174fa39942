"""Signed prompt requests (`eventing.signatures`): a signature verifies under its session's token
only, through both wire modes and a broker that re-encodes the data, and breaks when anything it
covers changes; a missing, malformed or other-scheme value never verifies; `vwmauth` is an
extension of `dev.vwm.prompt.requested` only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventing import codec, signatures
from eventing.events import (
    EventError,
    PromptRequested,
    SessionEndRequested,
    VwmEvent,
    decode_event,
    new_event,
)

TOKEN = "the-session-token-of-s1"
SESSION = "s1"


def request(**changes: Any) -> VwmEvent:
    data = {"prompt": "Add a retry.", "timeout_s": 900.0, "reply_to": "https://x.example/hook"}
    data.update(changes.pop("data", {}))
    attributes = {"source": "/tickets/bot", "session_id": SESSION, "event_id": "ticket-1"}
    attributes.update(changes)
    return new_event(PromptRequested(**data), **attributes)


def test_a_signed_event_verifies_under_its_token_in_both_wire_modes():
    unsigned = request()
    event = signatures.signed(TOKEN, unsigned)
    assert event.vwmauth is not None and event.vwmauth.startswith("v1.")
    assert event.model_copy(update={"vwmauth": None}) == unsigned
    assert signatures.verify(TOKEN, event)
    for encode in (codec.to_binary, codec.to_structured):
        headers, body = encode(event)
        received = codec.from_http(headers, body)
        assert received.vwmauth == event.vwmauth
        assert signatures.verify(TOKEN, received)
    assert codec.to_binary(event)[0]["ce-vwmauth"] == event.vwmauth


def test_the_same_event_always_gets_the_same_signature_and_time_is_not_covered():
    first = signatures.sign(TOKEN, request(time=datetime(2026, 1, 1, tzinfo=UTC)))
    later = request(time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=1))
    assert signatures.sign(TOKEN, later) == first


@pytest.mark.parametrize(
    "change",
    [
        {"source": "/tickets/another-bot"},
        {"event_id": "ticket-2"},
        {"session_id": "s2"},
        {"data": {"prompt": "Add a retry!"}},
        {"data": {"timeout_s": 901.0}},
        {"data": {"reply_to": "https://attacker.example/hook"}},
        {"data": {"model": "another-model"}},
        {"data": {"new_session": True}},
        {"data": {"not_after": datetime(2030, 1, 1, tzinfo=UTC)}},
    ],
    ids=lambda change: "-".join(change) if "data" not in change else "-".join(change["data"]),
)
def test_every_covered_field_changes_the_signature(change):
    original = signatures.signed(TOKEN, request())
    changed = request(**change).model_copy(update={"vwmauth": original.vwmauth})
    assert signatures.sign(TOKEN, request(**change)) != original.vwmauth
    assert not signatures.verify(TOKEN, changed)


def test_type_and_specversion_are_covered():
    covered = json.loads(signatures.canonical(request()))
    assert covered[:6] == ["vwmauth/v1", "1.0", "dev.vwm.prompt.requested", "/tickets/bot",
                           "ticket-1", SESSION]  # fmt: skip
    assert covered[6]["prompt"] == "Add a retry."


def test_a_broker_that_re_encodes_the_data_does_not_break_it():
    event = signatures.signed(TOKEN, request())
    headers, body = codec.to_structured(event)
    document = json.loads(body)
    document["data"] = dict(sorted(document["data"].items(), reverse=True))
    document["data"]["timeout_s"] = 900  # an integer where a float was written
    reencoded = json.dumps(document, indent=4, separators=(" ,", " : ")).encode()
    assert reencoded != body
    assert signatures.verify(TOKEN, codec.from_http(headers, reencoded))
    binary_headers, data = codec.to_binary(event)
    spaced = json.dumps(json.loads(data), indent=2, ensure_ascii=False).encode()
    assert signatures.verify(TOKEN, codec.from_http(binary_headers, spaced))


def test_it_never_verifies_under_another_token_or_without_a_good_value():
    event = signatures.signed(TOKEN, request())
    value = str(event.vwmauth)
    assert not signatures.verify("the-session-token-of-s2", event)
    assert not signatures.verify("", event)
    for presented in (
        None,  # missing
        "",
        "v1.",
        value[:-1],  # cut short
        value + "A",
        value[:-1] + ("A" if value[-1] != "A" else "B"),  # one character off
        "v2." + value[3:],  # another scheme
        "V1." + value[3:],
        value[3:],  # no scheme
        "v1." + "é" * 43,  # not ASCII
        "v1." + value[3:].upper(),
    ):
        assert not signatures.verify(TOKEN, event.model_copy(update={"vwmauth": presented}))


def test_check_tells_unsigned_from_signed_and_refuses_a_wrong_signature():
    assert signatures.check(TOKEN, request()) is False
    assert signatures.check(TOKEN, signatures.signed(TOKEN, request())) is True
    wrong = signatures.signed("another-token", request())
    with pytest.raises(EventError) as caught:
        signatures.check(TOKEN, wrong)
    error = caught.value
    assert (error.code, error.status, error.retryable) == ("invalid_signature", 401, False)
    assert str(wrong.vwmauth) not in error.message + json.dumps(error.details)


def test_vwmauth_rides_on_prompt_requests_only_and_is_never_shown():
    event = signatures.signed(TOKEN, request())
    assert str(event.vwmauth) not in repr(event)
    ended = new_event(
        SessionEndRequested(requested_at=datetime(2026, 1, 1, tzinfo=UTC)),
        source="/x",
        session_id=SESSION,
    )
    with pytest.raises(EventError) as caught:
        signatures.signed(TOKEN, ended)
    assert caught.value.details["extension"] == "vwmauth"
    attributes = {**ended.attributes(), "vwmauth": "v1.x"}
    with pytest.raises(EventError) as caught:
        decode_event(attributes, ended.data_json())
    assert (caught.value.code, caught.value.details["extension"]) == (
        "invalid_extension",
        "vwmauth",
    )
    too_long = {**event.attributes(), "vwmauth": "v1." + "A" * 300}
    with pytest.raises(EventError) as caught:
        decode_event(too_long, event.data_json())
    assert caught.value.code == "invalid_attribute"
