"""Trigger filter semantics (`functions.broker.filters`): one table per dialect, then nesting,
empty filters, the older `filter.attributes`, which of `filter`/`filters` wins, and the specs
that are refused. Each case states what Knative Eventing v1.22 does with the same Trigger."""

from __future__ import annotations

from typing import Any

import pytest

from functions.broker.errors import BrokerError, InvalidSpec
from functions.broker.filters import MAX_DEPTH, Result, parse_trigger_filter

OUTPUT = {
    "specversion": "1.0",
    "type": "dev.vwm.job.output",
    "source": "/sessions/s-1/harness",
    "id": "e-1",
    "time": "2026-12-02T12:00:00Z",
    "datacontenttype": "application/json; charset=utf-8",
    "dataschema": "https://vwm.dev/schemas/job.output/1",
    "sessionid": "s-1",
    "jobid": "j-1",
    "seq": "7",
}
READY = {
    "specversion": "1.0",
    "type": "dev.vwm.session.ready",
    "source": "/control-plane",
    "id": "e-2",
    "subject": "sessions/s-2",
    "sessionid": "s-2",
}
TICK = {"specversion": "1.0", "type": "dev.vwm.tick", "source": "/ping", "id": "e-3"}
# A caller that hands over a whole structured-mode event: filters must still ignore `data`.
WITH_DATA = {**TICK, "data": "dev.vwm.job.output"}


def matches(filters: Any, event: dict[str, str]) -> bool:
    return parse_trigger_filter({"filters": filters}).matches(event)


def one(dialect: str, name: str, value: str) -> list[dict[str, Any]]:
    return [{dialect: {name: value}}]


EXACT = [
    ("type equal", "type", "dev.vwm.job.output", OUTPUT, True),
    ("type other", "type", "dev.vwm.job.output", READY, False),
    ("value is case-sensitive", "type", "DEV.VWM.JOB.OUTPUT", OUTPUT, False),
    ("a prefix of the value is not equal", "type", "dev.vwm.job", OUTPUT, False),
    ("a longer value is not equal", "type", "dev.vwm.job.output.x", OUTPUT, False),
    ("extension equal", "sessionid", "s-1", OUTPUT, True),
    ("extension other value", "sessionid", "s-1", READY, False),
    ("extension missing", "jobid", "j-1", READY, False),
    ("extension as string", "seq", "7", OUTPUT, True),
    ("subject equal", "subject", "sessions/s-2", READY, True),
    ("subject missing", "subject", "sessions/s-2", OUTPUT, False),
    ("source", "source", "/control-plane", READY, True),
    ("id", "id", "e-3", TICK, True),
    ("time as its text", "time", "2026-12-02T12:00:00Z", OUTPUT, True),
    (
        "schemaurl reads dataschema",
        "schemaurl",
        "https://vwm.dev/schemas/job.output/1",
        OUTPUT,
        True,
    ),
    ("datamediatype drops parameters", "datamediatype", "application/json", OUTPUT, True),
    ("datacontenttype keeps them", "datacontenttype", "application/json", OUTPUT, False),
    ("datamediatype of no content type", "datamediatype", "application/json", TICK, False),
    ("data is never matched", "data", "dev.vwm.job.output", WITH_DATA, False),
]


@pytest.mark.parametrize(
    ("name", "value", "event", "expected"), [c[1:] for c in EXACT], ids=[c[0] for c in EXACT]
)
def test_exact(name: str, value: str, event: dict[str, str], expected: bool) -> None:
    assert matches(one("exact", name, value), event) is expected


PREFIX = [
    ("type family", "type", "dev.vwm.job.", OUTPUT, True),
    ("whole value is its own prefix", "type", "dev.vwm.job.output", OUTPUT, True),
    ("other family", "type", "dev.vwm.job.", READY, False),
    ("case-sensitive", "type", "Dev.vwm.", OUTPUT, False),
    ("longer than the value", "type", "dev.vwm.job.output.more", OUTPUT, False),
    ("not a prefix but a middle", "type", "vwm.job", OUTPUT, False),
    ("extension", "sessionid", "s-", OUTPUT, True),
    ("extension missing", "jobid", "j", READY, False),
    ("subject", "subject", "sessions/", READY, True),
    ("subject missing", "subject", "sessions/", TICK, False),
    ("source", "source", "/sessions/s-1/", OUTPUT, True),
    ("data is never matched", "data", "dev", WITH_DATA, False),
]


@pytest.mark.parametrize(
    ("name", "value", "event", "expected"), [c[1:] for c in PREFIX], ids=[c[0] for c in PREFIX]
)
def test_prefix(name: str, value: str, event: dict[str, str], expected: bool) -> None:
    assert matches(one("prefix", name, value), event) is expected


SUFFIX = [
    ("type end", "type", ".output", OUTPUT, True),
    ("whole value is its own suffix", "type", "dev.vwm.tick", TICK, True),
    ("other end", "type", ".output", READY, False),
    ("case-sensitive", "type", ".OUTPUT", OUTPUT, False),
    ("longer than the value", "type", "x.dev.vwm.tick", TICK, False),
    ("a middle is not a suffix", "type", ".job", OUTPUT, False),
    ("source end", "source", "/harness", OUTPUT, True),
    ("extension", "jobid", "-1", OUTPUT, True),
    ("extension missing", "jobid", "-1", TICK, False),
    ("subject missing", "subject", "s-2", OUTPUT, False),
    ("data is never matched", "data", ".output", WITH_DATA, False),
]


@pytest.mark.parametrize(
    ("name", "value", "event", "expected"), [c[1:] for c in SUFFIX], ids=[c[0] for c in SUFFIX]
)
def test_suffix(name: str, value: str, event: dict[str, str], expected: bool) -> None:
    assert matches(one("suffix", name, value), event) is expected


JOB = {"prefix": {"type": "dev.vwm.job."}}
SESSION_1 = {"exact": {"sessionid": "s-1"}}
READY_TYPE = {"exact": {"type": "dev.vwm.session.ready"}}

NESTED = [
    ("all: both pass", [{"all": [JOB, SESSION_1]}], OUTPUT, True),
    ("all: one fails", [{"all": [JOB, SESSION_1]}], READY, False),
    ("all: order does not matter", [{"all": [SESSION_1, JOB]}], OUTPUT, True),
    ("any: first passes", [{"any": [JOB, READY_TYPE]}], OUTPUT, True),
    ("any: second passes", [{"any": [JOB, READY_TYPE]}], READY, True),
    ("any: none passes", [{"any": [JOB, READY_TYPE]}], TICK, False),
    ("not: inverts a pass", [{"not": JOB}], OUTPUT, False),
    ("not: inverts a fail", [{"not": JOB}], READY, True),
    ("not of a missing attribute passes", [{"not": {"exact": {"jobid": "j-1"}}}], TICK, True),
    ("not not", [{"not": {"not": JOB}}], OUTPUT, True),
    ("top-level list is all", [JOB, SESSION_1], OUTPUT, True),
    ("top-level list: one fails", [JOB, {"exact": {"sessionid": "s-2"}}], OUTPUT, False),
    ("any of alls", [{"any": [{"all": [JOB, SESSION_1]}, READY_TYPE]}], READY, True),
    ("any of alls: none", [{"any": [{"all": [JOB, SESSION_1]}, READY_TYPE]}], TICK, False),
    ("all with a not", [{"all": [JOB, {"not": {"suffix": {"type": ".output"}}}]}], OUTPUT, False),
    ("not of any", [{"not": {"any": [JOB, READY_TYPE]}}], TICK, True),
    ("not of any: one passes", [{"not": {"any": [JOB, READY_TYPE]}}], READY, False),
    ("deep nesting", [{"all": [{"any": [{"not": {"not": SESSION_1}}]}]}], OUTPUT, True),
]


@pytest.mark.parametrize(
    ("filters", "event", "expected"), [c[1:] for c in NESTED], ids=[c[0] for c in NESTED]
)
def test_all_any_not(filters: Any, event: dict[str, str], expected: bool) -> None:
    assert matches(filters, event) is expected


# An empty filter is "no filter" in Knative: neutral inside all/any, unchanged under not, a
# match at the top. `Result` shows the difference between passing and not filtering.
EMPTY = [
    ("no filters key", {}, Result.NO_FILTER),
    ("filters null", {"filters": None}, Result.NO_FILTER),
    ("empty filters list", {"filters": []}, Result.NO_FILTER),
    ("empty expression", {"filters": [{}]}, Result.NO_FILTER),
    ("empty exact", {"filters": [{"exact": {}}]}, Result.NO_FILTER),
    ("empty all", {"filters": [{"all": []}]}, Result.NO_FILTER),
    ("empty any", {"filters": [{"any": []}]}, Result.NO_FILTER),
    ("not of empty", {"filters": [{"not": {}}]}, Result.NO_FILTER),
    ("empty cesql is unset", {"filters": [{"cesql": ""}]}, Result.NO_FILTER),
    ("empty beside a failing one", {"filters": [{}, {"exact": {"type": "x"}}]}, Result.FAIL),
    ("empty inside all is neutral", {"filters": [{"all": [{}, JOB]}]}, Result.FAIL),
    ("empty inside any is neutral", {"filters": [{"any": [{}, JOB]}]}, Result.FAIL),
    ("not of all with an empty", {"filters": [{"not": {"all": [{}, JOB]}}]}, Result.PASS),
    ("empty dialect beside another", {"filters": [{"exact": {}, **JOB}]}, Result.FAIL),
    ("filter without attributes", {"filter": {}}, Result.NO_FILTER),
    ("filter.attributes empty", {"filter": {"attributes": {}}}, Result.PASS),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in EMPTY], ids=[c[0] for c in EMPTY])
def test_empty_filters(spec: dict[str, Any], expected: Result) -> None:
    parsed = parse_trigger_filter(spec)
    assert parsed.result(TICK) is expected
    assert parsed.matches(TICK) is (expected is not Result.FAIL)


ATTRIBUTES = [
    ("one equal", {"type": "dev.vwm.job.output"}, OUTPUT, True),
    ("one other", {"type": "dev.vwm.job.output"}, READY, False),
    ("all must match", {"type": "dev.vwm.job.output", "sessionid": "s-1"}, OUTPUT, True),
    (
        "all must match: one differs",
        {"type": "dev.vwm.job.output", "sessionid": "s-2"},
        OUTPUT,
        False,
    ),
    ("case-sensitive", {"type": "Dev.vwm.job.output"}, OUTPUT, False),
    ("empty value: set to anything", {"subject": ""}, READY, True),
    ("empty value: not set", {"subject": ""}, OUTPUT, False),
    ("empty value: set but empty", {"subject": ""}, {**TICK, "subject": ""}, False),
    ("empty value: extension set", {"jobid": ""}, OUTPUT, True),
    ("empty value: extension missing", {"jobid": ""}, READY, False),
    ("missing extension", {"jobid": "j-1"}, TICK, False),
    ("data is never matched", {"data": ""}, WITH_DATA, False),
]


@pytest.mark.parametrize(
    ("attributes", "event", "expected"),
    [c[1:] for c in ATTRIBUTES],
    ids=[c[0] for c in ATTRIBUTES],
)
def test_filter_attributes(
    attributes: dict[str, str], event: dict[str, str], expected: bool
) -> None:
    assert parse_trigger_filter({"filter": {"attributes": attributes}}).matches(event) is expected


LEGACY_OUTPUT = {"attributes": {"type": "dev.vwm.job.output"}}
PRECEDENCE = [
    ("filters wins over filter", {"filter": LEGACY_OUTPUT, "filters": [READY_TYPE]}, READY, True),
    (
        "filters wins: filter not consulted",
        {"filter": LEGACY_OUTPUT, "filters": [READY_TYPE]},
        OUTPUT,
        False,
    ),
    ("empty filters falls back to filter", {"filter": LEGACY_OUTPUT, "filters": []}, READY, False),
    ("empty filters falls back: match", {"filter": LEGACY_OUTPUT, "filters": []}, OUTPUT, True),
    ("filters of only empties still wins", {"filter": LEGACY_OUTPUT, "filters": [{}]}, READY, True),
    (
        "other trigger fields are ignored",
        {"broker": "default", "subscriber": {"uri": "x"}},
        TICK,
        True,
    ),
]


@pytest.mark.parametrize(
    ("spec", "event", "expected"), [c[1:] for c in PRECEDENCE], ids=[c[0] for c in PRECEDENCE]
)
def test_filter_and_filters(spec: dict[str, Any], event: dict[str, str], expected: bool) -> None:
    assert parse_trigger_filter(spec).matches(event) is expected


def deep(levels: int) -> dict[str, Any]:
    expression: dict[str, Any] = JOB
    for _ in range(levels):
        expression = {"not": expression}
    return expression


INVALID = [
    (
        "two keys in exact",
        {"filters": [{"exact": {"type": "a", "source": "b"}}]},
        "filters[0].exact",
        "invalid_filter",
        "only one key-value",
    ),
    (
        "two keys in prefix",
        {"filters": [{"prefix": {"type": "a", "source": "b"}}]},
        "filters[0].prefix",
        "invalid_filter",
        "only one key-value",
    ),
    (
        "two keys in suffix",
        {"filters": [{"suffix": {"type": "a", "id": "b"}}]},
        "filters[0].suffix",
        "invalid_filter",
        "one entry per attribute",
    ),
    (
        "two dialects",
        {"filters": [{"exact": {"type": "a"}, "prefix": {"type": "b"}}]},
        "filters[0]",
        "invalid_filter",
        "multiple dialects found (exact, prefix)",
    ),
    (
        "dialect and not",
        {"filters": [{"all": [JOB], "not": JOB}]},
        "filters[0]",
        "invalid_filter",
        "multiple dialects",
    ),
    (
        "cesql",
        {"filters": [{"cesql": "type = 'x'"}]},
        "filters[0].cesql",
        "unsupported_filter",
        "cesql dialect (CloudEvents SQL) is not supported",
    ),
    (
        "cesql nested",
        {"filters": [{"any": [JOB, {"cesql": "true"}]}]},
        "filters[0].any[1].cesql",
        "unsupported_filter",
        "not supported",
    ),
    (
        "upper-case name",
        {"filters": [{"exact": {"Type": "a"}}]},
        "filters[0].exact",
        "invalid_filter",
        "invalid attribute name 'Type'",
    ),
    (
        "name with a dash",
        {"filters": [{"prefix": {"session-id": "a"}}]},
        "filters[0].prefix",
        "invalid_filter",
        "lower case letters and digits",
    ),
    (
        "name starting with a digit",
        {"filters": [{"suffix": {"1type": "a"}}]},
        "filters[0].suffix",
        "invalid_filter",
        "starts with a letter",
    ),
    (
        "empty value in exact",
        {"filters": [{"exact": {"type": ""}}]},
        "filters[0].exact.type",
        "invalid_filter",
        "non-empty string",
    ),
    (
        "empty value in prefix",
        {"filters": [{"prefix": {"type": ""}}]},
        "filters[0].prefix.type",
        "invalid_filter",
        "filter.attributes with an empty value",
    ),
    (
        "number value",
        {"filters": [{"exact": {"seq": 7}}]},
        "filters[0].exact.seq",
        "invalid_filter",
        "got int",
    ),
    (
        "unknown dialect",
        {"filters": [{"exakt": {"type": "a"}}]},
        "filters[0]",
        "invalid_filter",
        "unknown field(s) exakt",
    ),
    (
        "filters not a list",
        {"filters": {"exact": {"type": "a"}}},
        "filters",
        "invalid_filter",
        "expected a list",
    ),
    ("filters a string", {"filters": "type=a"}, "filters", "invalid_filter", "expected a list"),
    (
        "expression not a mapping",
        {"filters": ["type"]},
        "filters[0]",
        "invalid_filter",
        "expected a mapping",
    ),
    (
        "all not a list",
        {"filters": [{"all": JOB}]},
        "filters[0].all",
        "invalid_filter",
        "expected a list",
    ),
    (
        "exact not a mapping",
        {"filters": [{"exact": "type"}]},
        "filters[0].exact",
        "invalid_filter",
        "expected a mapping",
    ),
    (
        "bad entry deep inside",
        {"filters": [{"not": {"any": [JOB, {"exact": {"A": "b"}}]}}]},
        "filters[0].not.any[1].exact",
        "invalid_filter",
        "invalid attribute name",
    ),
    (
        "too deep",
        {"filters": [deep(MAX_DEPTH + 5)]},
        "filters[0]" + ".not" * MAX_DEPTH,
        "invalid_filter",
        "nest deeper",
    ),
    (
        "filter not a mapping",
        {"filter": ["type"]},
        "filter",
        "invalid_filter",
        "expected a mapping",
    ),
    (
        "filter unknown key",
        {"filter": {"attribute": {"type": "a"}}},
        "filter",
        "invalid_filter",
        "unknown field(s) attribute",
    ),
    (
        "attributes not a mapping",
        {"filter": {"attributes": "type"}},
        "filter.attributes",
        "invalid_filter",
        "expected a mapping",
    ),
    (
        "attributes bad name",
        {"filter": {"attributes": {"Type": "a"}}},
        "filter.attributes",
        "invalid_filter",
        "invalid attribute name",
    ),
    (
        "attributes number value",
        {"filter": {"attributes": {"seq": 7}}},
        "filter.attributes.seq",
        "invalid_filter",
        "must be a string",
    ),
    (
        "broken filter beside winning filters",
        {"filter": {"attributes": {"Type": "a"}}, "filters": [JOB]},
        "filter.attributes",
        "invalid_filter",
        "invalid attribute name",
    ),
    ("spec not a mapping", ["filters"], "spec", "invalid_filter", "expected a mapping"),
]


@pytest.mark.parametrize(
    ("spec", "path", "code", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_specs_are_refused(spec: Any, path: str, code: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_trigger_filter(spec)
    error = raised.value
    assert isinstance(error, BrokerError)
    assert (error.code, error.path) == (code, path)
    assert fragment in error.message
    assert error.details == {"path": path}
    assert error.retryable is False


def test_deepest_allowed_nesting_parses() -> None:
    # MAX_DEPTH levels count the top-level entry itself, so MAX_DEPTH - 1 `not`s around it fit.
    parsed = parse_trigger_filter({"filters": [deep(MAX_DEPTH - 1)]})
    assert parsed.matches(OUTPUT) is ((MAX_DEPTH - 1) % 2 == 0)
