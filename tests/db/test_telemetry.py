"""Telemetry: records are written once per job and bounded, and the summaries add up to numbers
worked out by hand (tokens, known cost and how many jobs lack one, mean and median duration)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from functions.db.engine import transaction
from functions.db.models import Job, TelemetryRequest, Worker, WorkerSession
from functions.db.telemetry import RAW_OUTPUT_LIMIT, Telemetry, UsageSummary, bound_raw_output
from tests.db import factories

Factory = sessionmaker[Session]
T0 = datetime(2025, 6, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_short_output_is_kept_whole() -> None:
    assert bound_raw_output("all of it\n") == "all of it\n"
    assert bound_raw_output("x" * RAW_OUTPUT_LIMIT) == "x" * RAW_OUTPUT_LIMIT


def test_long_output_keeps_head_and_tail_within_the_limit() -> None:
    text = "HEAD" + "m" * 10_000 + "TAIL"
    bounded = bound_raw_output(text, limit=1000)
    assert len(bounded.encode()) <= 1000
    assert bounded.startswith("HEAD") and bounded.endswith("TAIL")
    omitted = int(re.search(r"\[\.\.\. (\d+) bytes of output omitted", bounded)[1])  # type: ignore[index]
    marker = re.search(r"\n\[\.\.\..*\.\.\.\]\n", bounded)[0]  # type: ignore[index]
    assert omitted == len(text) - (len(bounded) - len(marker))


def test_bounding_never_splits_a_character_and_drops_nul() -> None:
    bounded = bound_raw_output("é" * 100_000 + "\x00end", limit=4096)
    assert len(bounded.encode()) <= 4096
    assert bounded.endswith("\ufffdend") and "\x00" not in bounded
    assert set(bounded.split("\n")[0]) == {"é"}
    assert bound_raw_output("a\x00b") == "a\ufffdb"
    with pytest.raises(ValueError, match="too small"):
        bound_raw_output("x", limit=10)


def _job(db: Session, session: WorkerSession) -> Job:
    """A finished job (many may exist per session; only an active one is unique)."""
    job = Job(session_id=session.id, prompt="p", mode="sync", status="succeeded")
    db.add(job)
    db.flush()
    return job


def _record(db: Session, session: WorkerSession, at: datetime, **fields: Any) -> TelemetryRequest:
    worker = db.get(Worker, session.worker_id)
    assert worker is not None
    return Telemetry(db).record_request(
        job_id=_job(db, session).id,
        session_id=session.id,
        worker_id=session.worker_id,
        runtime_id=worker.runtime_id,
        cli="claude",
        status="succeeded",
        created_at=at,
        **fields,
    )


def _cost(usd: float, source: str = "reported") -> dict[str, Any]:
    return {"cost_usd": usd, "cost_source": source}


@pytest.fixture
def usage(factory: Factory) -> dict[str, str]:
    """Two workers, three sessions, six records (one outside the window [T0, T0 + 1 day))."""
    with transaction(factory) as db:
        one, two = factories.worker(db, "one"), factories.worker(db, "two")
        s1, s2, s3 = (
            factories.session(db, one),
            factories.session(db, one),
            factories.session(db, two),
        )
        tokens = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
        rows = [  # session, hours after T0, (input, cache read, cache write, output), reasoning, cost, total_ms
            (s1, 1, (100, 10, 5, 50), 0, _cost(0.10), 1000),
            (s1, 2, (200, 0, 0, 20), 7, {}, 3000),
            (s2, 3, (300, 30, 0, 30), 3, _cost(0.25, "estimated"), 2000),
            (s1, 5, (0, 0, 0, 0), 0, _cost(0.0), 1500),
            (s3, 4, (50, 0, 0, 5), 0, _cost(0.05), None),
            (s3, -24, (70, 0, 0, 7), 0, _cost(0.07), 500),
        ]
        for session, hours, counts, reasoning, cost, total in rows:
            _record(
                db, session, T0 + hours * HOUR, **dict(zip(tokens, counts, strict=True)),
                reasoning_tokens=reasoning, total_ms=total, **cost,
            )  # fmt: skip
        return {"one": one.id, "two": two.id, "s1": s1.id, "s2": s2.id, "s3": s3.id}


def _by_key(summaries: list[UsageSummary]) -> dict[str, UsageSummary]:
    return {summary.key: summary for summary in summaries}


def test_summary_by_worker_in_a_window(factory: Factory, usage: dict[str, str]) -> None:
    with transaction(factory) as db:
        summaries = Telemetry(db).summary("worker", since=T0, until=T0 + 24 * HOUR)
    assert [s.key for s in summaries] == sorted([usage["one"], usage["two"]])
    one, two = _by_key(summaries)[usage["one"]], _by_key(summaries)[usage["two"]]
    assert (one.jobs, one.input_tokens, one.cache_read_tokens, one.cache_write_tokens) == (
        4, 600, 40, 5,
    )  # fmt: skip
    assert (one.output_tokens, one.reasoning_tokens) == (100, 10)
    assert one.cost_usd == pytest.approx(0.35) and one.jobs_without_cost == 1
    assert one.avg_total_ms == pytest.approx(1875.0)  # (1000 + 3000 + 2000 + 1500) / 4
    assert one.p50_total_ms == pytest.approx(1750.0)  # between 1500 and 2000
    assert (two.jobs, two.input_tokens, two.output_tokens) == (1, 50, 5)
    assert two.cost_usd == pytest.approx(0.05) and two.jobs_without_cost == 0
    assert two.avg_total_ms is None and two.p50_total_ms is None


def test_summary_by_session_over_all_time(factory: Factory, usage: dict[str, str]) -> None:
    with transaction(factory) as db:
        summaries = _by_key(Telemetry(db).summary("session"))
    s1, s2, s3 = (summaries[usage[name]] for name in ("s1", "s2", "s3"))
    assert (s1.jobs, s1.input_tokens, s1.output_tokens, s1.reasoning_tokens) == (3, 300, 70, 7)
    assert s1.cost_usd == pytest.approx(0.10) and s1.jobs_without_cost == 1
    assert s1.avg_total_ms == pytest.approx(5500 / 3)
    assert s1.p50_total_ms == pytest.approx(1500.0)  # the middle of 1000, 1500, 3000
    assert (s2.jobs, s2.cache_read_tokens, s2.p50_total_ms) == (1, 30, 2000.0)
    assert (s3.jobs, s3.input_tokens, s3.avg_total_ms, s3.p50_total_ms) == (2, 120, 500.0, 500.0)
    assert s3.cost_usd == pytest.approx(0.12)


def test_an_empty_window_has_no_groups(factory: Factory, usage: dict[str, str]) -> None:
    with transaction(factory) as db:
        assert Telemetry(db).summary("worker", since=T0 + 48 * HOUR) == []


def test_listing_requests(factory: Factory, usage: dict[str, str]) -> None:
    with transaction(factory) as db:
        telemetry = Telemetry(db)
        newest_first = telemetry.requests()
        assert [r.created_at for r in newest_first] == sorted(
            (r.created_at for r in newest_first), reverse=True
        )
        assert len(telemetry.requests(worker_id=usage["one"])) == 4
        assert len(telemetry.requests(session_id=usage["s3"], since=T0)) == 1
        assert len(telemetry.requests(until=T0)) == 1
        assert len(telemetry.requests(limit=2)) == 2


def test_a_job_is_recorded_once(factory: Factory) -> None:
    with transaction(factory) as db:
        session = factories.session(db)
        first = _record(db, session, T0, raw_output="x" * (RAW_OUTPUT_LIMIT * 2))
        again = Telemetry(db).record_request(**{
            "job_id": first.job_id, "session_id": session.id, "worker_id": session.worker_id,
            "runtime_id": "r", "cli": "codex", "status": "failed",
        })  # fmt: skip
        assert again.id == first.id and again.cli == "claude"
        assert db.scalar(select(func.count()).select_from(TelemetryRequest)) == 1
        assert len(first.raw_output.encode()) <= RAW_OUTPUT_LIMIT


def test_learnings_are_recorded_once_per_job(factory: Factory) -> None:
    with transaction(factory) as db:
        session = factories.session(db)
        telemetry = Telemetry(db)
        ids = {"session_id": session.id, "worker_id": session.worker_id}
        job_id = _job(db, session).id
        first = telemetry.record_learning(
            summary="learnt", files_changed=["AGENTS.md"], job_id=job_id, created_at=T0, **ids
        )
        again = telemetry.record_learning(summary="again", job_id=job_id, **ids)
        telemetry.record_learning(summary="by hand", created_at=T0 + HOUR, **ids)
        assert again.id == first.id and again.summary == "learnt"
        newest_first = telemetry.learnings(worker_id=session.worker_id)
        assert [(item.summary, item.files_changed) for item in newest_first] == [
            ("by hand", []),
            ("learnt", ["AGENTS.md"]),
        ]
        assert telemetry.learnings(session_id="other") == []
