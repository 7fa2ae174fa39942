"""How `vwm events tail` prints each type of the catalogue, read from the golden events of
docs/events.md (tests/fixtures/events/), and how it drops a redelivery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventing.events import CATALOGUE, VwmEvent, decode_event
from vwm.cli.event_lines import MAX_SUMMARY, Seen, event_json, event_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"


def golden(type_: str, **changes: Any) -> VwmEvent:
    document = json.loads((FIXTURES / f"{type_.removeprefix('dev.vwm.')}.json").read_text())
    document.update(changes)
    data = document.pop("data")
    return decode_event(document, data)


@pytest.mark.parametrize("type_", sorted(CATALOGUE))
def test_every_type_prints_as_one_line_with_its_attributes(type_: str) -> None:
    event = golden(type_)
    line = event_line(event)
    assert "\n" not in line
    when, shown_type, session, job, seq, *_ = line.split(" ")
    assert when.endswith("Z") and shown_type == type_
    assert session == f"session={event.sessionid or '-'}"
    assert job == f"job={event.jobid or '-'}"
    assert seq == f"seq={event.seq if event.seq is not None else '-'}"
    assert json.loads(event_json(event)) == {**event.attributes(), "data": event.data_json()}


@pytest.mark.parametrize(
    ("type_", "summary"),
    [
        ("dev.vwm.job.output", "I will add the retry. → Edit"),
        ("dev.vwm.job.completed", "succeeded: Added the retry and its test."),
        ("dev.vwm.job.failed", "timeout: timeout: the job ran longer than 900 s"),
        ("dev.vwm.job.started", "cli=claude model=claude-sonnet-4-5 prompt='Add a retry"),
        ("dev.vwm.prompt.requested", "prompt='Add a retry to the fetcher and test it.'"),
        ("dev.vwm.session.ended", "ended reason=idle"),
        ("dev.vwm.session.end.requested", "reason=idle"),
        ("dev.vwm.tick", "schedule=*/1 * * * *"),
    ],
)
def test_the_summary_says_what_the_data_is_about(type_: str, summary: str) -> None:
    assert summary in event_line(golden(type_))


def test_a_prompt_request_and_the_events_of_its_job_name_it() -> None:
    request = golden("dev.vwm.prompt.requested", id="req-1")
    assert " seq=- id=req-1 prompt='Add a retry" in event_line(request)
    line = event_line(golden("dev.vwm.job.completed", causationid="req-1"))
    assert " cause=req-1 succeeded: " in line


def test_a_long_summary_is_cut_to_one_bounded_line() -> None:
    event = golden("dev.vwm.prompt.requested")
    long = event.model_copy(update={"data": event.data.model_copy(update={"prompt": "x\n" * 999})})
    summary = event_line(long).split(" ", 6)[-1]  # after time, type, session, job, seq, id
    assert len(summary) <= MAX_SUMMARY and summary.endswith("…") and "\n" not in summary


def test_a_redelivery_is_seen_by_source_and_id() -> None:
    seen = Seen(capacity=2)
    first = golden("dev.vwm.tick")
    assert seen.first_time(first)
    assert not seen.first_time(first)
    assert seen.first_time(golden("dev.vwm.tick", source="/elsewhere"))  # another source
    assert seen.first_time(golden("dev.vwm.tick", id="other"))
    assert seen.first_time(first)  # forgotten: only the last `capacity` keys are kept
