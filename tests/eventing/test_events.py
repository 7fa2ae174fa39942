"""The event catalogue and envelope (`eventing.events`): every type decodes into its payload model
with its extensions, anything off-contract is refused with a stable code, and the examples in
docs/events.md are the golden fixtures in tests/fixtures/events/, so docs and code cannot drift."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

import eventing.events as ev
from eventing.agent_events import EventKind
from eventing.inputs import InputError
from eventing.job_events import JobEvent, JobStatus

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "events"
TYPES = [
    "dev.vwm.prompt.requested",
    "dev.vwm.job.started",
    "dev.vwm.job.output",
    "dev.vwm.job.completed",
    "dev.vwm.job.failed",
    "dev.vwm.session.created",
    "dev.vwm.session.ready",
    "dev.vwm.session.end.requested",
    "dev.vwm.session.ended",
    "dev.vwm.learning.completed",
    "dev.vwm.tick",
]


def golden(type_: str) -> dict:
    return json.loads((FIXTURES / f"{type_.removeprefix('dev.vwm.')}.json").read_text())


def split(document: dict) -> tuple[dict, object]:
    attributes = {name: value for name, value in document.items() if name != "data"}
    return attributes, document.get("data")


def refused(document: dict) -> ev.EventError:
    with pytest.raises(ev.EventError) as caught:
        ev.decode_event(*split(document))
    return caught.value


def test_the_catalogue_holds_exactly_the_issue_types():
    assert sorted(ev.CATALOGUE) == sorted(TYPES)
    constants = [
        ev.PROMPT_REQUESTED,
        ev.JOB_STARTED,
        ev.JOB_OUTPUT,
        ev.JOB_COMPLETED,
        ev.JOB_FAILED,
        ev.SESSION_CREATED,
        ev.SESSION_READY,
        ev.SESSION_END_REQUESTED,
        ev.SESSION_ENDED,
        ev.LEARNING_COMPLETED,
        ev.TICK,
    ]
    assert constants == TYPES
    assert sorted(path.name for path in FIXTURES.glob("*.json")) == sorted(
        f"{t.removeprefix('dev.vwm.')}.json" for t in TYPES
    )


@pytest.mark.parametrize("type_", TYPES)
def test_every_golden_event_decodes_into_its_model_and_back(type_):
    document = golden(type_)
    event = ev.decode_event(*split(document))
    spec = ev.CATALOGUE[type_]
    assert type(event.data) is spec.payload
    for name in spec.required:
        assert getattr(event, name) == document[name]
    assert {**event.attributes(), "data": event.data_json()} == document


@pytest.mark.parametrize(
    ("type_", "extension"),
    [(t, name) for t in TYPES for name in sorted(ev.CATALOGUE[t].required)],
)
def test_a_required_extension_missing_is_refused(type_, extension):
    document = golden(type_)
    del document[extension]
    document["data"].pop("session_id", None)  # a prompt request's other way to name it
    error = refused(document)
    assert (error.code, error.details["extension"], error.status) == (
        "missing_extension",
        extension,
        400,
    )


@pytest.mark.parametrize(
    ("type_", "extension", "value"),
    [
        ("dev.vwm.tick", "sessionid", "abc"),
        ("dev.vwm.session.created", "seq", 3),
        ("dev.vwm.session.ended", "jobid", "abc"),
        ("dev.vwm.learning.completed", "seq", 1),
    ],
)
def test_an_extension_the_type_does_not_carry_is_refused(type_, extension, value):
    document = golden(type_) | {extension: value}
    assert refused(document).code == "invalid_extension"


def test_prompt_requested_carries_no_job_id():
    """Its job is named by its source + id (`prompt_job_id`): a sender cannot name another."""
    document = golden("dev.vwm.prompt.requested") | {"jobid": "j1"}
    assert refused(document).details["extension"] == "jobid"


def test_extension_values_from_headers_are_strings_and_read_as_the_same_event():
    document = golden("dev.vwm.job.output")
    as_headers = document | {"seq": str(document["seq"])}
    assert ev.decode_event(*split(as_headers)) == ev.decode_event(*split(document))


@pytest.mark.parametrize("seq", ["0", "-1", "٣", "3.0", "", True, 3.5])
def test_seq_must_be_a_whole_number_from_one(seq):
    document = golden("dev.vwm.job.started") | {"seq": seq}
    assert refused(document).code in ("invalid_extension", "invalid_attribute")


@pytest.mark.parametrize("value", ["../etc", "a b", "x" * 65, ""])
def test_ids_in_extensions_keep_to_the_id_alphabet(value):
    document = golden("dev.vwm.job.started") | {"jobid": value}
    assert refused(document).code == "invalid_attribute"


def test_unknown_type_is_refused_with_its_name():
    error = refused(golden("dev.vwm.tick") | {"type": "dev.vwm.job.exploded"})
    assert error.code == "unknown_event_type"
    assert isinstance(error, InputError)  # the edges that map input errors map this one too
    assert error.details["type"] == "dev.vwm.job.exploded"


@pytest.mark.parametrize(
    ("attribute", "value", "code"),
    [
        ("specversion", "0.3", "unsupported_specversion"),
        ("specversion", None, "unsupported_specversion"),
        ("id", "", "missing_attribute"),
        ("source", None, "missing_attribute"),
        ("type", 7, "missing_attribute"),
        ("time", "2026-11-25", "invalid_attribute"),
        ("time", "yesterday", "invalid_attribute"),
        ("datacontenttype", "text/plain", "unsupported_content_type"),
        ("datacontenttype", "application/json; charset=latin-1", "unsupported_content_type"),
        ("subject", 5, "invalid_attribute"),
    ],
)
def test_bad_core_attributes_are_refused(attribute, value, code):
    document = golden("dev.vwm.session.ready")
    if value is None:
        del document[attribute]
    else:
        document[attribute] = value
    assert refused(document).code == code


def test_time_in_another_zone_is_read_as_utc():
    document = golden("dev.vwm.tick") | {"time": "2026-11-25T11:00:00+01:00"}
    event = ev.decode_event(*split(document))
    assert event.time == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert event.attributes()["time"] == "2026-11-25T10:00:00Z"


@pytest.mark.parametrize(
    ("type_", "change"),
    [
        ("dev.vwm.job.completed", lambda d: d.update(surprise=1)),  # extra field
        ("dev.vwm.job.completed", lambda d: d.update(exit_code="0")),  # no coercion
        ("dev.vwm.job.completed", lambda d: d.update(status="failed")),  # completed succeeds
        ("dev.vwm.job.failed", lambda d: d.update(status="succeeded")),
        ("dev.vwm.job.failed", lambda d: d.pop("error")),  # a failure says why
        ("dev.vwm.job.completed", lambda d: d["summary"]["usage"].update(input="12")),
        ("dev.vwm.job.completed", lambda d: d["summary"].update(extra=True)),
        ("dev.vwm.job.completed", lambda d: d["timings"].update(total_ms=-1)),
        ("dev.vwm.job.completed", lambda d: d.update(started_at="2026-11-25T10:00:00")),  # naive
        ("dev.vwm.job.output", lambda d: d["events"].pop(1)),  # a gap
        ("dev.vwm.job.output", lambda d: d["events"].reverse()),  # out of order
        ("dev.vwm.job.output", lambda d: d["events"][0].update(kind="job_started")),
        ("dev.vwm.job.output", lambda d: d.update(events=[])),
        ("dev.vwm.prompt.requested", lambda d: d.update(prompt="")),
        ("dev.vwm.prompt.requested", lambda d: d.update(mode="later")),
        ("dev.vwm.session.end.requested", lambda d: d.update(reason="bored")),
        ("dev.vwm.learning.completed", lambda d: d.update(commit_sha="not-a-sha")),
        ("dev.vwm.session.created", lambda d: d.pop("worker_id")),
    ],
)
def test_payloads_of_the_wrong_shape_are_refused(type_, change):
    document = golden(type_)
    change(document["data"])
    error = refused(document)
    assert error.code == "invalid_payload"
    assert error.details["type"] == type_
    assert error.details["errors"]


@pytest.mark.parametrize("data", [None, "text", [1, 2], 3, {"schedule": float("nan")}])
def test_data_that_is_not_a_json_object_is_refused(data):
    assert refused(golden("dev.vwm.tick") | {"data": data}).code == "invalid_data"


def test_an_output_batch_names_its_last_seq_in_the_extension():
    error = refused(golden("dev.vwm.job.output") | {"seq": 3})
    assert (error.code, error.details["extension"]) == ("invalid_extension", "seq")


def test_new_event_fills_type_id_and_utc_time():
    payload = ev.SessionEndRequested(requested_at=datetime.now(UTC))
    before = datetime.now(UTC)
    first = ev.new_event(payload, source=ev.CONTROL_PLANE_SOURCE, session_id="s1")
    second = ev.new_event(payload, source=ev.CONTROL_PLANE_SOURCE, session_id="s1")
    assert first.type == "dev.vwm.session.end.requested"
    assert first.id != second.id
    assert first.time is not None and first.time.utcoffset() == timedelta(0)
    assert first.time >= before
    east = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5)))
    pinned = ev.new_event(payload, source="/x", session_id="s1", time=east)
    assert pinned.attributes()["time"] == "2026-01-01T07:00:00Z"


def test_new_event_refuses_extensions_that_do_not_fit():
    payload = ev.Tick()
    with pytest.raises(ev.EventError) as caught:
        ev.new_event(payload, source="/x", session_id="s1")
    assert caught.value.code == "invalid_extension"
    started = ev.JobStarted(prompt="p", cli="claude", started_at=datetime.now(UTC))
    with pytest.raises(ev.EventError) as caught:
        ev.new_event(started, source=ev.harness_source("s1"), session_id="s1", job_id="j1")
    assert (caught.value.code, caught.value.details["extension"]) == ("missing_extension", "seq")


def test_new_event_refuses_a_payload_outside_the_catalogue():
    with pytest.raises(TypeError):
        ev.new_event(ev.ErrorInfo(code="x", message="y"), source="/x")


def test_conventions_for_sources_and_ids():
    assert ev.harness_source("s1") == "/vwm/harness/s1"
    assert ev.CONTROL_PLANE_SOURCE == "/vwm/control-plane"
    assert ev.job_event_id("j1", 7) == ev.job_event_id("j1", 7) == "j1.7"
    assert len({ev.new_event_id() for _ in range(100)}) == 100


def test_payloads_are_strict_when_built_in_python_too():
    with pytest.raises(ValidationError):
        ev.JobTimings(total_ms="5")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ev.JobFailed(  # type: ignore[call-arg]
            status=JobStatus.FAILED,
            summary=ev.JobSummary(),
            started_at=datetime.now(UTC),
            finished_at=datetime.now(UTC),
            timings=ev.JobTimings(total_ms=1),
        )


def test_output_events_are_built_from_the_harness_job_log():
    entry = JobEvent(job_id="j1", seq=5, kind="tool_call", data={"id": "t", "name": "Bash"}, ts=2.5)
    output = ev.OutputEvent.from_log(entry)
    assert (output.kind, output.seq, output.ts, output.data) == (
        EventKind.TOOL_CALL,
        5,
        2.5,
        {"id": "t", "name": "Bash"},
    )
    batch = ev.JobOutput(first_seq=5, last_seq=5, events=[output])
    event = ev.new_event(batch, source=ev.harness_source("s1"), session_id="s1", job_id="j1", seq=5)
    assert ev.decode_event(event.attributes(), event.data_json()) == event


# -- the docs are the fixtures ------------------------------------------------------------------

_EXAMPLE = re.compile(r"^### `(dev\.vwm\.[a-z.]+)`.*?```json\n(.*?)```", re.DOTALL | re.MULTILINE)


def test_every_example_in_the_docs_is_its_golden_fixture():
    text = (ROOT / "docs" / "events.md").read_text()
    examples = {type_: json.loads(body) for type_, body in _EXAMPLE.findall(text)}
    assert sorted(examples) == sorted(TYPES)
    for type_, example in examples.items():
        assert example == golden(type_), f"docs/events.md's {type_} example drifted"


def test_every_payload_field_is_in_the_docs_table():
    text = (ROOT / "docs" / "events.md").read_text()
    sections = dict(_sections(text))
    for type_, spec in ev.CATALOGUE.items():
        for field in spec.payload.model_fields:
            assert f"| `{field}` |" in sections[type_], f"{type_}: field {field} not documented"


def _sections(text: str):
    parts = re.split(r"^### `(dev\.vwm\.[a-z.]+)`", text, flags=re.MULTILINE)
    return zip(parts[1::2], parts[2::2], strict=True)


def test_a_prompt_request_names_its_session_in_the_extension_the_data_or_both():
    document = golden(ev.PROMPT_REQUESTED)
    session_id = document["sessionid"]
    only_data = {name: value for name, value in document.items() if name != "sessionid"}
    assert ev.decode_event(*split(only_data)).sessionid == session_id
    only_extension = {**document, "data": {**document["data"], "session_id": None}}
    assert ev.decode_event(*split(only_extension)).sessionid == session_id
    disagree = {**document, "sessionid": "another"}
    error = refused(disagree)
    assert (error.code, error.details["extension"]) == ("invalid_extension", "sessionid")


def test_a_prompt_requests_job_id_is_its_source_and_id_and_nothing_else():
    job = ev.prompt_job_id("/tickets/bot", "42")
    assert job == ev.prompt_job_id("/tickets/bot", "42")
    assert len(job) == 32 and job.isalnum()
    others = {
        ev.prompt_job_id("/tickets/bot", "43"),
        ev.prompt_job_id("/tickets/bot2", "42"),
        ev.prompt_job_id("/tickets/bot\x004", "2"),
    }
    assert job not in others and len(others) == 3


def test_causationid_rides_on_job_events_only():
    completed = golden(ev.JOB_COMPLETED)
    assert ev.decode_event(*split(completed)).causationid == completed["causationid"]
    asking = {**golden(ev.SESSION_END_REQUESTED), "causationid": "x"}
    assert refused(asking).details["extension"] == "causationid"
