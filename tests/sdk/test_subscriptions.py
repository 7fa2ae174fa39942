"""`client.subscribe` and `client.subscriptions` against the real control plane (`vwm up`'s
embedded system in a subprocess): the filters built from a session and a type prefix reach the
broker as written, a subscriber gets exactly the events they let through, and the API's refusals
come back as the SDK's typed errors."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from eventing import codec
from eventing.events import CONTROL_PLANE_SOURCE, SessionCreated, VwmEvent, new_event
from tests.support.control_plane import ControlPlane
from tests.support.harness_process import free_port
from vwm import errors
from vwm.cli.event_sink import EventSink
from vwm.sdk import Client, Subscription
from vwm.sdk.subscriptions import event_filters

SINK = "https://hooks.example.com/vwm"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    data = tmp_path_factory.mktemp("subscriptions") / "data"
    plane = ControlPlane(data, {})
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[Client]:
    with plane.client() as admin:
        made = admin.post(
            "/v1/admin/keys", json={"name": f"sdk-{uuid.uuid4().hex[:6]}", "scope": "client"}
        )
        assert made.status_code == 201, made.text
    with Client(plane.url, made.json()["key"], timeout=30) as sdk:
        yield sdk
        for subscription in sdk.subscriptions.list():
            sdk.subscriptions.delete(subscription.name)


def test_filters_are_the_given_ones_then_the_session_then_the_type_prefix() -> None:
    raw = [{"suffix": {"type": ".failed"}}]
    assert event_filters() == []
    assert event_filters(session="s1", type_prefix="dev.vwm.job.", filters=raw) == [
        {"suffix": {"type": ".failed"}},
        {"exact": {"sessionid": "s1"}},
        {"prefix": {"type": "dev.vwm.job."}},
    ]


def test_subscribe_list_get_and_delete(client: Client) -> None:
    made = client.subscribe(
        "watch-one",
        SINK,
        session="a1b2",
        type_prefix="dev.vwm.job.",
        delivery={"retry": 3},
    )
    assert isinstance(made, Subscription)
    assert made.name == "watch-one"
    assert made.sink == SINK
    assert made.filters == [
        {"exact": {"sessionid": "a1b2"}},
        {"prefix": {"type": "dev.vwm.job."}},
    ]
    assert made.delivery == {"retry": 3}
    assert made.created_by == "client"
    assert made.created_at

    raw = [{"any": [{"exact": {"type": "dev.vwm.job.completed"}}, {"suffix": {"type": "failed"}}]}]
    other = client.subscribe("ends", SINK, filters=raw)
    assert other.filters == raw and other.delivery is None

    assert [s.name for s in client.subscriptions.list()] == ["ends", "watch-one"]
    assert client.subscriptions.get("watch-one") == made
    client.subscriptions.delete("watch-one")
    with pytest.raises(errors.NotFoundError) as missing:
        client.subscriptions.get("watch-one")
    assert missing.value.code == "subscription_not_found"
    with pytest.raises(errors.NotFoundError):
        client.subscriptions.delete("watch-one")
    client.subscriptions.delete("watch-one", missing_ok=True)
    assert [s.name for s in client.subscriptions.list()] == ["ends"]


def test_refusals_are_typed_errors(client: Client, plane: ControlPlane) -> None:
    client.subscribe("taken", SINK)
    with pytest.raises(errors.ConflictError) as taken:
        client.subscribe("taken", SINK)
    assert taken.value.code == "subscription_exists" and taken.value.status == 409
    with pytest.raises(errors.ValidationError) as bad_sink:
        client.subscribe("bad-sink", "ftp://example.com/")
    assert bad_sink.value.code == "sink_url_invalid"
    with pytest.raises(errors.ValidationError) as bad_filter:
        client.subscribe("bad-filter", SINK, filters=[{"nope": {}}])
    assert bad_filter.value.code == "invalid_filter"
    assert bad_filter.value.details["path"].startswith("filters[0]")

    with Client(plane.url, "vwm_not_a_key") as stranger, pytest.raises(errors.AuthError):
        stranger.subscribe("stranger", SINK)
    nobody = f"http://127.0.0.1:{free_port()}"
    with Client(nobody, "vwm_any") as lost, pytest.raises(errors.UnreachableError):
        lost.subscriptions.list()


def test_a_subscriber_gets_only_what_its_filters_let_through(
    client: Client, plane: ControlPlane
) -> None:
    with EventSink() as sink:
        client.subscribe("sessions", sink.url, session="watched", type_prefix="dev.vwm.session.")
        posted = [
            _session_created("other"),  # another session
            _session_created("watched"),
            _session_created("watched"),
        ]
        with plane.client() as admin:  # an admin key may post any type to the broker
            for event in posted:
                headers, body = codec.to_binary(event)
                answer = admin.post("/v1/broker", headers=headers, content=body)
                assert answer.status_code == 202, answer.text
        arrived = [_next(sink), _next(sink)]
        assert [event.id for event in arrived] == [event.id for event in posted[1:]]
        assert all(event.sessionid == "watched" for event in arrived)
        assert sink.events.empty()


def _session_created(session_id: str) -> VwmEvent:
    payload = SessionCreated(
        worker_id="w1", workspace=f"/tmp/{session_id}", created_at=datetime.now(UTC)
    )
    return new_event(payload, source=CONTROL_PLANE_SOURCE, session_id=session_id)


def _next(sink: EventSink) -> VwmEvent:
    try:
        return sink.events.get(timeout=30)
    except queue.Empty:
        raise AssertionError("no event reached the subscriber within 30 s") from None
