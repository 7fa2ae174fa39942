"""Signed prompt requests on the control plane's side (`functions.prompt_requests`,
`functions.events`), on a real control plane process whose database a test reads:

- ``VWM_EVENTING=knative``: another service's unsigned request is queued and forwarded once
  as its signed copy (same source, id and data; a `vwmauth` that verifies under the session's
  token), which is what the session's Trigger delivers to its harness. A redelivery of the
  request, or the copy coming back, is not forwarded again.
- A request whose `vwmauth` does not verify (forged, tampered with, or signed for another
  session) is refused with 401 ``invalid_signature`` and nothing is written.
- ``VWM_EVENTING=embedded``: no copy (the embedded broker delivers with the bearer token).
- An async prompt through the HTTP API publishes its request signed, in either mode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from eventing import signatures
from eventing.codec import from_http, to_binary
from eventing.events import PromptRequested, VwmEvent, new_event, prompt_job_id
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import BrokerEvent, Job, OutboxEvent, ProcessedEvent
from functions.runtime.tokens import TokenKey
from tests.db import factories
from tests.support.control_plane import ControlPlane
from tests.support.fake_kube_api import FakeKubeApi, Kind, serving

TRIGGER = Kind("eventing.knative.dev", "v1", "triggers", "Trigger")
SENDER = "/tests/ticket-bot"
STRUCTURED = {"content-type": "application/cloudevents+json"}


class Plane:
    """A control plane process, its database, and its harness token key."""

    def __init__(self, plane: ControlPlane) -> None:
        self.process = plane
        self.engine = make_engine(f"sqlite:///{plane.data_dir / 'vwm.sqlite3'}")
        self.factory = session_factory(self.engine)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with transaction(self.factory) as session:
            return fn(session, *args)

    def token(self, session_id: str) -> str:
        return TokenKey.in_folder(self.process.data_dir).token(session_id)

    def post(self, event: VwmEvent) -> Any:
        headers, body = to_binary(event)
        with self.process.client() as admin:
            return admin.post("/v1/events", headers=headers, content=body)


def _start(data_dir: Path, env: dict[str, str]) -> Iterator[Plane]:
    process = ControlPlane(data_dir, env)
    process.start()
    plane = Plane(process)
    yield plane
    plane.engine.dispose()
    process.stop()


@pytest.fixture(scope="module")
def knative_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    api = FakeKubeApi(kinds=[TRIGGER], namespaces={"vwm-events"})
    with serving(api) as url:
        yield from _start(
            tmp_path_factory.mktemp("signed-knative") / "data",
            {
                "VWM_EVENTING": "knative",
                "VWM_KNATIVE_NAMESPACE": "vwm-events",
                "VWM_KNATIVE_BROKER": "vwm",
                "VWM_KUBE_API_URL": url,
            },
        )


@pytest.fixture(scope="module")
def embedded_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    yield from _start(tmp_path_factory.mktemp("signed-embedded") / "data", {})


def _request(session_id: str, **data: Any) -> VwmEvent:
    return new_event(
        PromptRequested(prompt="hello", **data),
        source=SENDER,
        session_id=session_id,
        event_id=f"req-{uuid.uuid4().hex[:12]}",
    )


def _new_session(session: Session) -> str:
    return factories.session(session).id


def _copies(session: Session, event: VwmEvent) -> list[VwmEvent]:
    """What the control plane published under the request's source and id: its outbox rows
    still waiting, and what the embedded broker took from the outbox."""
    bodies = [
        row.body
        for row in session.scalars(
            select(BrokerEvent).where(
                BrokerEvent.source == event.source, BrokerEvent.id == event.id
            )
        )
    ]
    bodies += [
        row.body
        for row in session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.source == event.source, OutboxEvent.id == event.id
            )
        )
    ]
    return [from_http(STRUCTURED, body.encode()) for body in bodies]


def _written(session: Session, event: VwmEvent) -> tuple[bool, bool]:
    """Whether the request's job row exists, and whether the event was recorded as handled."""
    job = session.get(Job, prompt_job_id(event.source, event.id))
    processed = session.get(ProcessedEvent, (event.source, event.id))
    return job is not None, processed is not None


def _eventually(read: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_an_unsigned_request_is_forwarded_once_signed_for_its_session(
    knative_plane: Plane,
) -> None:
    session_id = knative_plane.run(_new_session)
    request = _request(session_id)

    answer = knative_plane.post(request)
    assert answer.status_code in (200, 202), answer.text
    assert knative_plane.run(_written, request) == (True, True)

    [copy] = _eventually(lambda: knative_plane.run(_copies, request))
    assert (copy.source, copy.id, copy.sessionid) == (request.source, request.id, session_id)
    assert copy.data_json() == request.data_json()
    assert signatures.verify(knative_plane.token(session_id), copy)
    assert not signatures.verify(knative_plane.token(f"{session_id}-other"), copy)

    # A redelivery of the request, and the copy coming back through the events Trigger: both
    # are duplicates, and neither is forwarded again.
    assert knative_plane.post(request).status_code in (200, 202)
    assert knative_plane.post(copy).status_code in (200, 202)
    time.sleep(1)
    assert len(knative_plane.run(_copies, request)) == 1


def test_a_request_signed_by_its_sender_is_not_copied(knative_plane: Plane) -> None:
    session_id = knative_plane.run(_new_session)
    request = signatures.signed(knative_plane.token(session_id), _request(session_id))

    assert knative_plane.post(request).status_code in (200, 202)

    assert knative_plane.run(_written, request) == (True, True)
    time.sleep(1)
    assert knative_plane.run(_copies, request) == []


@pytest.mark.parametrize("forgery", ["other_session", "tampered", "garbage", "other_scheme"])
def test_a_request_whose_signature_does_not_verify_is_refused_with_nothing_written(
    knative_plane: Plane, forgery: str
) -> None:
    session_id = knative_plane.run(_new_session)
    request = _request(session_id)
    if forgery == "other_session":
        other = knative_plane.run(_new_session)
        request = request.model_copy(
            update={"vwmauth": signatures.sign(knative_plane.token(other), request)}
        )
    elif forgery == "tampered":
        signed = signatures.signed(knative_plane.token(session_id), request)
        request = signed.model_copy(update={"data": PromptRequested(prompt="rm -rf the repo")})
    elif forgery == "garbage":
        request = request.model_copy(update={"vwmauth": "v1." + "A" * 43})
    else:
        request = request.model_copy(update={"vwmauth": "v2.whatever"})

    answer = knative_plane.post(request)

    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert str(request.vwmauth) not in answer.text  # the presented value is never echoed
    assert knative_plane.run(_written, request) == (False, False)
    assert knative_plane.run(_copies, request) == []


def test_embedded_eventing_queues_the_request_without_a_copy(embedded_plane: Plane) -> None:
    session_id = embedded_plane.run(_new_session)
    request = _request(session_id)

    assert embedded_plane.post(request).status_code in (200, 202)

    assert embedded_plane.run(_written, request) == (True, True)
    time.sleep(1)
    assert embedded_plane.run(_copies, request) == []
