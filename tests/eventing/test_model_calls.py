"""The model-call contract (`eventing.model_calls`) and what it adds to a job's summary and end:
a call reads what a newer harness adds, keeps text PostgreSQL can store and a bounded error;
the metered total is the sum of the calls; old summaries and ends still parse."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from eventing.agent_events import RunSummary, Usage
from eventing.events import JobCompleted, JobSummary, JobTimings
from eventing.model_calls import MAX_CALL_ERROR_CHARS, ModelCall, metered_total


def call(number: int, **fields: Any) -> ModelCall:
    values: dict[str, Any] = {
        "seq": number,
        "api": "openai_responses",
        "model": "gpt-5",
        "streamed": True,
        "status": 200,
        "outcome": "ok",
        "usage": Usage(input=10, output=3),
        "complete": True,
        "started_at": 1_795_600_801.5,
        "latency_ms": 120.0,
        "ttft_ms": 40.0,
    }
    return ModelCall.model_validate({**values, **fields})


def test_the_metered_total_is_the_sum_of_the_calls() -> None:
    calls = [call(1), call(2, usage=Usage(input=5, cache_read=100, output=7, reasoning=2))]
    assert metered_total(calls) == Usage(input=15, cache_read=100, output=10, reasoning=2)
    assert metered_total([]) == Usage()


def test_a_call_ignores_fields_it_does_not_know_and_round_trips_as_json() -> None:
    made = call(1, retry_of=None, error="boom")
    assert ModelCall.model_validate(made.model_dump(mode="json")) == made
    assert "retry_of" not in made.model_dump()


def test_a_call_keeps_text_postgresql_can_store_and_a_bounded_error() -> None:
    made = call(1, model="gpt\x005", error="x" * 50_000)
    assert made.model == "gpt\ufffd5"
    assert made.error is not None and len(made.error) == MAX_CALL_ERROR_CHARS


@pytest.mark.parametrize(
    "change",
    [{"outcome": "exploded"}, {"seq": "one"}, {"usage": None}, {"started_at": None}],
)
def test_a_call_of_the_wrong_shape_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        call(1, **change)


def test_a_summary_from_before_metering_reads_as_the_clis_usage() -> None:
    summary = RunSummary.model_validate({"final_text": "hi", "usage": {"input": 3}})
    assert (summary.usage_source, summary.cli_usage, summary.usage_mismatch) == ("cli", None, False)


def test_a_jobs_end_carries_its_calls_as_plain_objects_and_none_without_a_meter() -> None:
    moment = datetime(2026, 11, 25, 10, tzinfo=UTC)
    fields: dict[str, Any] = {
        "summary": JobSummary(usage_source="metered", usage_mismatch=True),
        "started_at": moment,
        "finished_at": moment,
        "timings": JobTimings(total_ms=1),
    }
    assert JobCompleted(**fields).calls is None  # no meter
    sent = [call(1).model_dump(mode="json"), {"seq": "not checked here"}]
    assert JobCompleted(**fields, calls=sent).calls == sent
    with pytest.raises(ValidationError):
        JobCompleted(**fields, calls=["not an object"])
    with pytest.raises(ValidationError):  # the wire's summary is strict about the new fields too
        JobSummary.model_validate({"usage_source": "guessed"})
