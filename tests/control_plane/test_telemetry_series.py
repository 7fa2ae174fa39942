"""Telemetry over time, `GET /v1/telemetry/series`, with real rows in the database (PostgreSQL, and
the SQLite file of `vwm up`), over real HTTP: totals per UTC minute, hour or day and worker or
session, bucketed by the database, by start then group; a window past 2000 buckets is 422
`too_many_buckets`; no `since` means the last 24 hours (90 days by day); any key reads it, as
the summary. Then the SDK (`client.telemetry.series`) and `vwm telemetry series`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from functions.db.telemetry import Telemetry
from functions.db.transitions import transition_job, transition_session
from functions.telemetry_buckets import bucket_count, floor, window
from tests.db import factories
from tests.support.plane_with_database import PlaneWithDatabase, control_plane_on
from vwm import Client, ValidationError
from vwm.cli import app

SERIES = "/v1/telemetry/series"
DAY = datetime(2026, 5, 4, tzinfo=UTC)
TEN = DAY + timedelta(hours=10)


@dataclass
class Seeded:
    plane: PlaneWithDatabase
    sessions: dict[str, str]  # "alpha-1" -> session id


def _record(db: Session, owner: Any, when: datetime, cost: float | None, **tokens: int) -> None:
    job = factories.job(db, owner, mode="async")
    for step in ("running", "succeeded"):
        job = transition_job(db, job, step)
    Telemetry(db).record_request(
        job_id=job.id,
        session_id=owner.id,
        worker_id=owner.worker_id,
        runtime_id="r",
        cli="claude",
        status="succeeded",
        cost_usd=cost,
        cost_source=None if cost is None else "reported",
        created_at=when,
        **{f"{name}_tokens": count for name, count in tokens.items()},
    )


def _seed(db: Session) -> dict[str, str]:
    """Two workers across 10:00-12:00 UTC, plus one record just before and one at the end of that
    window, and one an hour ago and one 30 days ago (for the default windows)."""
    alpha, beta = factories.worker(db, "alpha"), factories.worker(db, "beta")
    sessions = {
        "alpha-1": factories.session(db, alpha),
        "alpha-2": factories.session(db, alpha),
        "beta-1": factories.session(db, beta),
    }
    a1, a2, b1 = sessions["alpha-1"], sessions["alpha-2"], sessions["beta-1"]
    _record(db, a1, TEN - timedelta(microseconds=1), 9.0, input=900_000)  # before the window
    _record(db, a1, TEN + timedelta(minutes=5, seconds=30), 0.5, input=100, output=10)
    _record(db, a1, TEN + timedelta(minutes=59, seconds=59.999), None, input=200, cache_read=50)
    _record(db, b1, TEN + timedelta(minutes=30), 1.25, input=1000, reasoning=3)
    _record(db, a2, TEN + timedelta(hours=1), None, input=7)
    _record(db, b1, TEN + timedelta(hours=1, minutes=45), 0.25, input=5, cache_write=2)
    _record(db, b1, TEN + timedelta(hours=2), 9.0, input=900_000)  # `until` is excluded
    now = datetime.now(UTC)
    _record(db, a1, now - timedelta(hours=1), 0.125, input=11)
    _record(db, a1, now - timedelta(days=30), 0.0625, input=13)
    for row in sessions.values():  # ended: nothing for the control plane to look after
        for step in ("ending", "ended"):
            row = transition_session(db, row, step)
    return {name: row.id for name, row in sessions.items()}


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    data_dir = tmp_path_factory.mktemp(f"series-{request.param}") / "data"
    with control_plane_on(request.param, data_dir, prefix="vwm_series") as plane:
        yield Seeded(plane, plane.run(_seed))


def _get(seeded: Seeded, key: str | None = None, **params: str) -> Any:
    with seeded.plane.plane.client(key) as http:
        return http.get(SERIES, params=params)


def _tokens(**counts: int) -> dict[str, int]:
    return {
        "input": 0,
        "cache_read": 0,
        "cache_write": 0,
        "output": 0,
        "reasoning": 0,
        **counts,
    }


WINDOW = {"since": "2026-05-04T10:00:00Z", "until": "2026-05-04T12:00:00Z"}


def test_hours_by_worker_split_at_the_hour_in_utc(seeded: Seeded) -> None:
    answer = _get(seeded, **WINDOW)

    assert answer.status_code == 200
    body = answer.json()
    assert (body["group_by"], body["bucket"]) == ("worker", "hour")
    assert (body["since"], body["until"]) == ("2026-05-04T10:00:00Z", "2026-05-04T12:00:00Z")
    assert body["items"] == [
        {
            "start": "2026-05-04T10:00:00Z",
            "worker": "alpha",
            "jobs": 2,
            "tokens": _tokens(input=300, output=10, cache_read=50),
            "cost_usd": 0.5,  # the known costs; the other job's is unknown
        },
        {
            "start": "2026-05-04T10:00:00Z",
            "worker": "beta",
            "jobs": 1,
            "tokens": _tokens(input=1000, reasoning=3),
            "cost_usd": 1.25,
        },
        {
            "start": "2026-05-04T11:00:00Z",
            "worker": "alpha",
            "jobs": 1,
            "tokens": _tokens(input=7),
            "cost_usd": None,  # no cost known at all
        },
        {
            "start": "2026-05-04T11:00:00Z",
            "worker": "beta",
            "jobs": 1,
            "tokens": _tokens(input=5, cache_write=2),
            "cost_usd": 0.25,
        },
    ]


def test_by_session_each_session_is_its_own_group(seeded: Seeded) -> None:
    ids = seeded.sessions
    body = _get(seeded, group_by="session", **WINDOW).json()

    assert body["group_by"] == "session"
    rows = [(item["start"][11:16], item["session"], item["jobs"]) for item in body["items"]]
    expected = [("10:00", ids["alpha-1"], 2), ("10:00", ids["beta-1"], 1)]
    expected += [("11:00", ids["alpha-2"], 1), ("11:00", ids["beta-1"], 1)]
    assert rows == sorted(expected)  # by start, then session id
    assert all("worker" not in item for item in body["items"])


def test_minutes_and_days(seeded: Seeded) -> None:
    minutes = _get(
        seeded, bucket="minute", since="2026-05-04T10:05:00Z", until="2026-05-04T10:31:00Z"
    ).json()["items"]
    days = _get(seeded, bucket="day", **WINDOW).json()["items"]

    assert [(i["start"], i["worker"], i["jobs"]) for i in minutes] == [
        ("2026-05-04T10:05:00Z", "alpha", 1),
        ("2026-05-04T10:30:00Z", "beta", 1),
    ]
    assert [(i["start"], i["worker"], i["jobs"], i["tokens"]["input"]) for i in days] == [
        ("2026-05-04T00:00:00Z", "alpha", 3, 307),
        ("2026-05-04T00:00:00Z", "beta", 2, 1005),
    ]


def test_a_window_past_2000_buckets_is_refused_saying_what_to_do(seeded: Seeded) -> None:
    start = "2026-05-04T10:00:00Z"
    at_most = _get(seeded, bucket="minute", since=start, until="2026-05-05T19:20:00Z")  # 2000
    one_more = _get(seeded, bucket="minute", since=start, until="2026-05-05T19:20:00.000001Z")
    by_hour = _get(seeded, bucket="hour", since=start, until="2026-05-05T19:20:00.000001Z")

    assert at_most.status_code == 200
    assert one_more.status_code == 422
    error = one_more.json()["error"]
    assert error["code"] == "too_many_buckets"
    assert "2001 minute buckets" in error["message"]
    assert "narrow since/until or use a larger bucket" in error["message"]
    assert error["details"] == {"buckets": 2001, "max_buckets": 2000, "bucket": "minute"}
    assert by_hour.status_code == 200
    a_year_of_hours = _get(seeded, since="2025-05-04", until="2026-05-04")
    assert a_year_of_hours.status_code == 422
    assert a_year_of_hours.json()["error"]["details"]["buckets"] == 365 * 24


def test_without_since_the_recent_window_is_taken(seeded: Seeded) -> None:
    before = datetime.now(UTC)
    hours = _get(seeded).json()
    days = _get(seeded, bucket="day").json()
    after = datetime.now(UTC)

    until = datetime.fromisoformat(hours["until"])
    assert before <= until <= after
    assert datetime.fromisoformat(hours["since"]) == floor(until - timedelta(hours=24), "hour")
    assert [item["tokens"]["input"] for item in hours["items"]] == [11]  # an hour ago
    day_until = datetime.fromisoformat(days["until"])
    assert datetime.fromisoformat(days["since"]) == floor(day_until - timedelta(days=90), "day")
    # 30 days ago, then an hour ago (the May records too, were they within 90 days of now).
    recent = [item for item in days["items"] if not item["start"].startswith("2026-05-04")]
    assert [(item["tokens"]["input"], item["jobs"]) for item in recent] == [(13, 1), (11, 1)]
    assert [datetime.fromisoformat(item["start"]).time() for item in recent] == [time(0), time(0)]


def test_any_key_reads_it_and_the_query_is_checked(seeded: Seeded) -> None:
    with seeded.plane.plane.client() as http:
        client_key = http.post("/v1/admin/keys", json={"name": "c", "scope": "client"}).json()
    as_client = _get(seeded, client_key["key"], **WINDOW)
    nobody = _get(seeded, "vwm_nobody_nothing", **WINDOW)
    refused = [
        _get(seeded, bucket="week"),
        _get(seeded, group_by="runtime"),
        _get(seeded, since="yesterday"),
        _get(seeded, colour="blue"),
    ]

    assert as_client.status_code == 200
    assert len(as_client.json()["items"]) == 4
    assert nobody.status_code == 401
    assert [r.status_code for r in refused] == [422, 422, 422, 422]
    assert {r.json()["error"]["code"] for r in refused} == {"invalid_request"}


def test_the_openapi_document_describes_it(seeded: Seeded) -> None:
    with seeded.plane.plane.client() as http:
        operation = http.get("/openapi.json").json()["paths"][SERIES]["get"]

    names = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert set(names) == {"group_by", "bucket", "since", "until"}
    assert names["bucket"]["enum"] == ["minute", "hour", "day"]
    assert "24 h" in operation["summary"] and "90 days" in operation["summary"]
    assert "2000" in operation["summary"]


def test_the_sdk_and_the_cli_show_the_series(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = seeded.plane.plane
    monkeypatch.delenv("VWM_URL", raising=False)
    monkeypatch.delenv("VWM_API_KEY", raising=False)
    with Client(plane.url, str(plane.admin_key), timeout=30) as sdk:
        rows = sdk.telemetry.series(since=TEN, until=TEN + timedelta(hours=2))
        by_session = sdk.telemetry.series("session", "day", since="2026-05-04", until="2026-05-05")
        with pytest.raises(ValidationError) as too_many:
            sdk.telemetry.series(bucket="minute", since="2026-01-01", until="2026-02-01")

    assert [(r["start"], r["worker"]) for r in rows] == [
        ("2026-05-04T10:00:00Z", "alpha"),
        ("2026-05-04T10:00:00Z", "beta"),
        ("2026-05-04T11:00:00Z", "alpha"),
        ("2026-05-04T11:00:00Z", "beta"),
    ]
    assert sum(r["jobs"] for r in by_session) == 7  # the whole day, both edges included
    assert too_many.value.code == "too_many_buckets"

    def vwm(*args: str) -> Any:
        options = ["--url", plane.url, "--api-key", str(plane.admin_key)]
        return CliRunner().invoke(app, [*options, "telemetry", *args])

    table = vwm("series", "--since", WINDOW["since"], "--until", WINDOW["until"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "start",
        "worker",
        "jobs",
        "tokens.input",
        "tokens.cache_read",
        "tokens.cache_write",
        "tokens.output",
        "cost_usd",
    ]
    first = ["2026-05-04T10:00:00Z", "alpha", "2", "300", "50", "0", "10", "$0.50"]
    assert lines[2].split() == first
    assert lines[4].split()[-2:] == ["cost", "unknown"]
    printed = vwm("series", "--bucket", "day", "--json", "--since", "2026-05-04")
    assert printed.exit_code == 0
    assert json.loads(printed.stdout)[0]["start"] == "2026-05-04T00:00:00Z"
    refused = vwm("series", "--bucket", "minute", "--since", "2026-01-01", "--until", "2026-02-01")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error [too_many_buckets]: ")
    # The command without a subcommand still lists records and totals.
    summary = vwm("--summary", "--json")
    assert summary.exit_code == 0
    assert {row["worker"] for row in json.loads(summary.stdout)} == {"alpha", "beta"}


@pytest.mark.parametrize(
    ("bucket", "since", "until", "count"),
    [
        ("hour", "10:00", "12:00", 2),
        ("hour", "10:00", "12:00:00.000001", 3),
        ("hour", "10:59:59", "11:00:01", 2),
        ("minute", "10:00:30", "10:00:40", 1),
        ("day", "10:00", "10:00", 0),
        ("day", "12:00", "10:00", 0),
    ],
)
def test_bucket_count(bucket: Any, since: str, until: str, count: int) -> None:
    def at(clock: str) -> datetime:
        return datetime.fromisoformat(f"2026-05-04T{clock}+00:00")

    assert bucket_count(bucket, at(since), at(until)) == count


def test_the_default_window_starts_at_a_whole_bucket() -> None:
    now = datetime(2026, 5, 4, 10, 17, 42, tzinfo=UTC)
    assert window("minute", None, None, now) == (datetime(2026, 5, 3, 10, 17, tzinfo=UTC), now)
    assert window("hour", None, None, now) == (datetime(2026, 5, 3, 10, tzinfo=UTC), now)
    assert window("day", None, None, now) == (datetime(2026, 2, 3, tzinfo=UTC), now)
    given = datetime(2026, 5, 1, 3, 3, tzinfo=UTC)
    assert window("day", given, None, now) == (given, now)
