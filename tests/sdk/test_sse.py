"""Job events over SSE: the parser, and streams that survive dropped connections.

The fake control plane drops the connection after a number of events (optionally in the middle of
an event) and can replay events on a resumed stream; the client must resume with Last-Event-ID and
deliver every event exactly once, in order."""

from __future__ import annotations

import json

import pytest

from tests.sdk.fake_control_plane import FakeControlPlane
from vwm import Client, JobResult
from vwm.errors import ProtocolError, StreamInterruptedError
from vwm.sdk.sse import parse_sse


def frame(seq: int, kind: str, data: dict, job_id: str = "job_1") -> list[str]:
    payload = {"job_id": job_id, "seq": seq, "kind": kind, "data": data, "ts": 1.5}
    return [f"id: {seq}", f"event: {kind}", f"data: {json.dumps(payload)}", ""]


class TestParser:
    def test_events_and_heartbeats(self):
        lines = [
            ": heartbeat",
            "",
            *frame(1, "job_started", {}),
            ":heartbeat",
            "",
            *frame(2, "text_delta", {"text": "hi"}),
        ]
        events = list(parse_sse(lines))
        assert [(e.seq, e.kind, e.data, e.job_id, e.ts) for e in events] == [
            (1, "job_started", {}, "job_1", 1.5),
            (2, "text_delta", {"text": "hi"}, "job_1", 1.5),
        ]

    def test_an_event_cut_off_by_a_drop_is_not_emitted(self):
        lines = [*frame(1, "job_started", {}), "id: 2", "event: text_delta"]
        assert [e.seq for e in parse_sse(lines)] == [1]

    def test_data_over_several_lines_is_joined(self):
        lines = [
            "id: 7",
            "event: text_delta",
            'data: {"seq": 7, "kind": "text_delta",',
            'data:  "data": {"text": "x"}}',
            "",
        ]
        (event,) = parse_sse(lines)
        assert (event.seq, event.data) == (7, {"text": "x"})

    def test_the_sse_id_stands_in_for_a_missing_seq(self):
        (event,) = parse_sse(["id: 3", "event: usage", 'data: {"data": {"output": 1}}', ""])
        assert (event.seq, event.kind, event.data) == (3, "usage", {"output": 1})

    @pytest.mark.parametrize("data", ["not json", "[1, 2]", '{"kind": "x"}'])
    def test_malformed_events_fail_loudly(self, data: str):
        with pytest.raises(ProtocolError):
            list(parse_sse(["event: x", f"data: {data}", ""]))


@pytest.fixture
def session(client: Client, worker_ready: str):
    return client.worker(worker_ready).session()


def kinds_and_seqs(events) -> list[tuple[int, str]]:
    return [(e.seq, e.kind) for e in events]


def test_a_stream_without_drops(session, fake: FakeControlPlane):
    events = list(session.stream("say hello"))
    assert [e.seq for e in events] == list(range(1, 12))
    assert events[0].kind == "job_started" and events[-1].kind == "job_finished"
    result = JobResult.from_event(events[-1])
    assert (result.status, result.final_text, result.job_id) == (
        "succeeded",
        "Hello, world\nDone.",
        "job_1",
    )


def test_a_dropped_stream_resumes_with_last_event_id(session, fake: FakeControlPlane):
    fake.drops = [3, 4]  # the POST stream breaks after 3 events, the first resume after 4 more
    events = list(session.stream("say hello"))
    assert [e.seq for e in events] == list(range(1, 12))
    resumes = fake.recorded("GET", "/v1/jobs/job_1/events")
    assert [r.headers["last-event-id"] for r in resumes] == ["3", "7"]


def test_a_drop_in_the_middle_of_an_event_loses_nothing(session, fake: FakeControlPlane):
    fake.drops, fake.cut_mid_event = [5], True
    assert [e.seq for e in session.stream("say hello")] == list(range(1, 12))


def test_events_replayed_on_resume_are_not_doubled(session, fake: FakeControlPlane):
    fake.drops, fake.overlap = [4], 2
    assert [e.seq for e in session.stream("say hello")] == list(range(1, 12))


def test_a_stream_that_keeps_dropping_gives_up(session, fake: FakeControlPlane):
    fake.drops = [2, 0, 0, 0, 0]  # max_reconnects is 3 in these tests
    events = session.stream("say hello")
    assert [next(events).seq, next(events).seq] == [1, 2]
    with pytest.raises(StreamInterruptedError) as caught:
        next(events)
    assert caught.value.details == {"job_id": "job_1", "last_seq": 2}
    assert "vwm job events job_1 --after 2" in caught.value.message


def test_a_drop_before_the_first_event_cannot_be_resumed(session, fake: FakeControlPlane):
    fake.drops = [0]
    with pytest.raises(StreamInterruptedError, match="before its first event"):
        list(session.stream("say hello"))


def test_job_events_after_a_point(session, client: Client, fake: FakeControlPlane):
    job = session.submit("say hello")
    assert [e.seq for e in job.events(after=8)] == [9, 10, 11]
    assert fake.recorded("GET", "/v1/jobs/job_1/events")[0].headers["last-event-id"] == "8"


def test_job_events_resume_too(session, fake: FakeControlPlane):
    job = session.submit("say hello")
    fake.drops = [2, 2]
    assert [e.seq for e in job.events()] == list(range(1, 12))
