"""The strict readers both HTTP edges share: every entry of the hostile corpus is refused with its
code and reason, and the input next to each rule's edge is still accepted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest

from eventing.inputs import (
    MAX_JSON_DEPTH,
    InputError,
    ascii_uint,
    check_json_content_type,
    check_path,
    check_query,
    load_json_object,
    timestamp,
)
from tests.support.hostile import (
    BAD_SEGMENTS,
    BAD_TIMESTAMPS,
    CONTROL_CHARACTERS,
    GOOD_TIMESTAMPS,
    NOT_ASCII_INTEGERS,
    json_bodies,
)

BODIES = json_bodies({"prompt": "hi", "mode": "async"})


@pytest.mark.parametrize("body", BODIES, ids=[b.label for b in BODIES])
def test_hostile_bodies_are_refused_with_their_code_and_reason(body):
    with pytest.raises(InputError) as refused:
        check_json_content_type(body.content_type)
        load_json_object(body.raw)
    assert (refused.value.code, refused.value.details.get("reason")) == (body.code, body.reason)
    assert refused.value.message


def test_the_edges_of_each_json_rule_are_accepted():
    at_limit = {"a": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    assert load_json_object(json.dumps(at_limit).encode()) == at_limit
    brackets_in_text = {"prompt": "[" * 10_000 + "{" * 10_000, "q": 'say "[[[" \\" {'}
    assert load_json_object(json.dumps(brackets_in_text).encode()) == brackets_in_text
    numbers = {"max": 2**63 - 1, "min": -(2**63), "big": 1.7e308, "tiny": -5e-324}
    assert load_json_object(json.dumps(numbers).encode()) == numbers
    text = {"tab\tkey": "line\nbreak \u0001 é ٣ 😀", "same": {"a": 1}, "other": {"a": 2}}
    assert load_json_object(json.dumps(text, ensure_ascii=False).encode()) == text
    for content_type in (
        None,
        "",
        "application/json",
        "Application/JSON; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/merge-patch+json",
    ):
        check_json_content_type(content_type)


@pytest.mark.parametrize("raw", NOT_ASCII_INTEGERS)
def test_integers_are_ascii_digits_only(raw):
    with pytest.raises(InputError) as refused:
        ascii_uint(raw, "after")
    assert refused.value.code == "invalid_parameter"
    assert refused.value.details["parameter"] == "after"
    assert refused.value.details["reason"] in ("not_ascii", "not_integer")


def test_plain_ascii_integers_are_read():
    assert [ascii_uint(raw, "n") for raw in ("0", "7", "0042", "9" * 18)] == [0, 7, 42, 10**18 - 1]


@pytest.mark.parametrize("raw", BAD_TIMESTAMPS)
def test_times_that_are_no_instant_in_utc_are_refused(raw):
    with pytest.raises(ValueError, match="ISO 8601"):
        timestamp(raw)


@pytest.mark.parametrize("raw", GOOD_TIMESTAMPS)
def test_times_are_read_as_aware_utc(raw):
    parsed = timestamp(raw)
    assert parsed.tzinfo is UTC


def test_a_time_without_a_zone_is_utc_and_offsets_are_converted():
    assert timestamp("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    assert timestamp("2025-06-01T10:30") == datetime(2025, 6, 1, 10, 30, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    assert timestamp("2025-06-01T10:00:00+02:00") == datetime(2025, 6, 1, 10, tzinfo=plus_two)
    assert timestamp("2025-06-01T10:00:00+02:00").hour == 8


@pytest.mark.parametrize("char", CONTROL_CHARACTERS)
def test_query_values_and_names_with_control_characters_are_refused(char):
    for items in ([("worker", f"w{char}")], [(f"w{char}", "1")]):
        with pytest.raises(InputError) as refused:
            check_query(items)
        assert refused.value.details["reason"] == "control_character"
    check_query([("path", f"dir/a{char}b")], free_text=("path",))  # the path policy's to judge


def test_query_parameters_come_once_and_bounded():
    with pytest.raises(InputError) as repeated:
        check_query([("limit", "1"), ("worker", "w"), ("limit", "2")])
    assert repeated.value.details == {"parameter": "limit", "reason": "repeated"}
    with pytest.raises(InputError) as long_value:
        check_query([("worker", "w" * 8193)])
    assert long_value.value.details == {"parameter": "worker", "reason": "too_long"}
    check_query([("worker", "w" * 8192), ("limit", "5"), ("cursor", "")])


@pytest.mark.parametrize(("segment", "reason"), BAD_SEGMENTS, ids=[s[:20] for s, _ in BAD_SEGMENTS])
def test_url_paths_are_printable_ascii(segment, reason):
    with pytest.raises(InputError) as refused:
        check_path(unquote(f"/v1/sessions/{segment}/files"))
    assert refused.value.details == {"parameter": "path", "reason": reason}


def test_ids_names_and_keys_pass_the_path_check():
    for path in ("/", "/v1/sessions/0123abcdef", "/v1/admin/workers/w-1.a_b", "/v1/x/" + "k" * 200):
        check_path(path)
