"""`FakeBroker` (tests/support/fake_broker.py): Knative's broker ingress, Trigger filters,
retries, dead letters and replies, with Triggers stored through the real `kubernetes` client
and subscribers on real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from cloudevents.http import CloudEvent, from_http
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.fake_broker import FakeBroker, iso_duration
from tests.support.fake_knative import SERVICES
from tests.support_tests.conftest import NAMESPACE, Cluster

BROKER = "default"


@dataclass
class Subscriber:
    """Records every event per path; answers each path from its script (status, headers,
    body), 200 once the script is used up."""

    url: str = ""
    events: dict[str, list[CloudEvent]] = field(default_factory=lambda: defaultdict(list))
    scripts: dict[str, deque[tuple[int, dict[str, str], bytes]]] = field(
        default_factory=lambda: defaultdict(deque)
    )

    def answer(self, path: str, *answers: int | tuple[int, dict[str, str], bytes]) -> None:
        for each in answers:
            self.scripts[path].append(each if isinstance(each, tuple) else (each, {}, b""))

    async def receive(self, request: Request) -> Response:
        path = request.url.path
        self.events[path].append(from_http(dict(request.headers), await request.body()))
        status, headers, body = (
            self.scripts[path].popleft() if self.scripts[path] else (200, {}, b"")
        )
        return Response(body, status_code=status, headers=headers)


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    sub = Subscriber()
    app = Starlette(routes=[Route("/{path:path}", sub.receive, methods=["POST"])])
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    sub.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield sub
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def broker(cluster: Cluster) -> Iterator[FakeBroker]:
    with FakeBroker(cluster.fake, {(NAMESPACE, BROKER)}, time_scale=0.01) as fake:
        yield fake


def trigger(cluster: Cluster, name: str, subscriber: dict[str, Any], **spec: Any) -> None:
    cluster.custom.create_namespaced_custom_object(
        "eventing.knative.dev",
        "v1",
        NAMESPACE,
        "triggers",
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": name},
            "spec": {"broker": BROKER, "subscriber": subscriber, **spec},
        },
    )


def event(type_: str = "dev.vwm.job.output", **extensions: str) -> CloudEvent:
    return CloudEvent({"type": type_, "source": "/vwm/jobs", **extensions}, {"seq": 1})


def test_filters_pick_the_triggers_an_event_goes_to(
    cluster: Cluster, broker: FakeBroker, subscriber: Subscriber
) -> None:
    filters = {
        "exact": [{"exact": {"type": "dev.vwm.job.output"}}],
        "prefix": [{"prefix": {"sessionid": "s-"}}],
        "suffix": [{"suffix": {"type": ".failed"}}],
        "all": [{"all": [{"exact": {"source": "/vwm/jobs"}}, {"prefix": {"type": "dev.vwm."}}]}],
        "any": [{"any": [{"exact": {"type": "nope"}}, {"suffix": {"sessionid": "-7"}}]}],
        "not": [{"not": {"exact": {"type": "dev.vwm.job.output"}}}],
        "list": [{"exact": {"type": "dev.vwm.job.output"}}, {"exact": {"sessionid": "x"}}],
    }
    for name, spec in filters.items():
        trigger(cluster, name, {"uri": f"{subscriber.url}/{name}"}, filters=spec)
    trigger(
        cluster,
        "attributes",
        {"uri": f"{subscriber.url}/attributes"},
        filter={"attributes": {"type": "dev.vwm.job.output", "sessionid": ""}},
    )
    trigger(cluster, "everything", {"uri": f"{subscriber.url}/everything"})

    assert broker.send(NAMESPACE, BROKER, event(sessionid="s-7")) == 202
    assert broker.send(NAMESPACE, BROKER, event("dev.vwm.job.failed")) == 202
    broker.wait_idle()

    got = {path: sorted(e["type"] for e in events) for path, events in subscriber.events.items()}
    assert got == {
        "/exact": ["dev.vwm.job.output"],
        "/prefix": ["dev.vwm.job.output"],
        "/suffix": ["dev.vwm.job.failed"],
        "/all": ["dev.vwm.job.failed", "dev.vwm.job.output"],
        "/any": ["dev.vwm.job.output"],
        "/not": ["dev.vwm.job.failed"],
        "/attributes": ["dev.vwm.job.output"],  # "" needs the extension present
        "/everything": ["dev.vwm.job.failed", "dev.vwm.job.output"],
    }


def test_filters_beat_the_older_filter_and_cesql_is_refused_loudly(
    cluster: Cluster, broker: FakeBroker, subscriber: Subscriber
) -> None:
    trigger(
        cluster,
        "both",
        {"uri": f"{subscriber.url}/both"},
        filter={"attributes": {"type": "other"}},
        filters=[{"exact": {"type": "dev.vwm.job.output"}}],
    )
    trigger(cluster, "sql", {"uri": f"{subscriber.url}/sql"}, filters=[{"cesql": "true"}])

    broker.send(NAMESPACE, BROKER, event())

    with pytest.raises(RuntimeError, match="cesql"):
        broker.wait_idle()
    assert list(subscriber.events) == ["/both"]


def test_ingress_takes_binary_and_structured_events_and_refuses_the_rest(
    broker: FakeBroker, cluster: Cluster, subscriber: Subscriber
) -> None:
    trigger(cluster, "all", {"uri": f"{subscriber.url}/all"})
    structured = event(sessionid="s-1")
    structured_status = broker.send(NAMESPACE, BROKER, structured, structured=True)
    binary_status = broker.send(NAMESPACE, BROKER, event(sessionid="s-2"))
    url = broker.ingress_url(NAMESPACE, BROKER)
    malformed = httpx.post(url, headers={"ce-specversion": "1.0"}, content=b"{}").status_code
    not_json = httpx.post(
        url, headers={"content-type": "application/cloudevents+json"}, content=b"{"
    ).status_code
    unknown = broker.send(NAMESPACE, "other", event())
    broker.wait_idle()

    assert (structured_status, binary_status, malformed, not_json, unknown) == (
        202,
        202,
        400,
        400,
        404,
    )
    delivered = subscriber.events["/all"]
    assert sorted(e["sessionid"] for e in delivered) == ["s-1", "s-2"]
    assert all(e.data == {"seq": 1} and e["knativearrivaltime"] for e in delivered)
    assert structured["id"] in {e["id"] for e in delivered}


def test_retries_then_the_dead_letter_sink_with_knatives_extensions(
    cluster: Cluster, broker: FakeBroker, subscriber: Subscriber
) -> None:
    delivery = {
        "retry": 3,
        "backoffPolicy": "linear",
        "backoffDelay": "PT1S",  # 10 ms each at time_scale 0.01
        "deadLetterSink": {"uri": f"{subscriber.url}/dead"},
    }
    trigger(cluster, "flaky", {"uri": f"{subscriber.url}/flaky"}, delivery=delivery)
    subscriber.answer("/flaky", 503, 429, 404, (500, {}, b"database locked" * 200))
    sent = event(sessionid="s-1")

    broker.send(NAMESPACE, BROKER, sent)
    broker.wait_idle()

    assert [a.status for a in broker.attempts_of("flaky")] == [503, 429, 404, 500]
    assert [a.attempt for a in broker.attempts_of("flaky")] == [1, 2, 3, 4]
    (dead,) = subscriber.events["/dead"]
    assert dead["id"] == sent["id"] and dead["sessionid"] == "s-1"
    assert dead["knativeerrorcode"] == "500"
    assert dead["knativeerrordest"] == f"{subscriber.url}/flaky"
    data = dead["knativeerrordata"]
    assert len(data) == 1024
    assert base64.b64decode(data + "=" * (-len(data) % 4)).startswith(b"database locked")


def test_a_client_error_is_not_retried_and_no_answer_is(
    cluster: Cluster, broker: FakeBroker, subscriber: Subscriber
) -> None:
    dead_letter = {"uri": f"{subscriber.url}/dead"}
    trigger(
        cluster,
        "refuses",
        {"uri": f"{subscriber.url}/refuses"},
        delivery={"retry": 5, "backoffDelay": "PT0.1S", "deadLetterSink": dead_letter},
    )
    with socket.create_server(("127.0.0.1", 0)) as closed:
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    trigger(
        cluster,
        "down",
        {"uri": nobody},
        delivery={"retry": 1, "backoffDelay": "PT0.1S", "deadLetterSink": dead_letter},
    )
    subscriber.answer("/refuses", (400, {}, b"bad payload"))

    broker.send(NAMESPACE, BROKER, event())
    broker.wait_idle()

    assert [a.status for a in broker.attempts_of("refuses")] == [400]
    assert [a.status for a in broker.attempts_of("down")] == [0, 0]
    codes = sorted(
        (e["knativeerrordest"], e["knativeerrorcode"]) for e in subscriber.events["/dead"]
    )
    assert codes == sorted([(f"{subscriber.url}/refuses", "400"), (nobody, "500")])
    by_dest = {e["knativeerrordest"]: e for e in subscriber.events["/dead"]}
    assert base64.b64decode(by_dest[f"{subscriber.url}/refuses"]["knativeerrordata"]) == (
        b"bad payload"
    )
    assert base64.b64decode(by_dest[nobody]["knativeerrordata"]).startswith(b"dispatch error")


@contextlib.contextmanager
def hanging_subscriber() -> Iterator[str]:
    """A subscriber that never answers in time; yields its URL."""
    released = threading.Event()

    async def hang(request: Request) -> Response:
        await asyncio.to_thread(released.wait, 5)
        return Response(status_code=200)

    app = Starlette(routes=[Route("/slow", hang, methods=["POST"])])
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/slow"
    finally:
        released.set()
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_exponential_backoff_and_a_timeout_per_attempt(
    cluster: Cluster, broker: FakeBroker
) -> None:
    with hanging_subscriber() as url:
        delivery = {"retry": 2, "backoffDelay": "PT10S", "timeout": "PT0.3S"}
        trigger(cluster, "slow", {"uri": url}, delivery=delivery)
        started = time.monotonic()
        broker.send(NAMESPACE, BROKER, event())
        broker.wait_idle()
        elapsed = time.monotonic() - started

    attempts = broker.attempts_of("slow")
    assert [(a.status, a.error.split(":")[0]) for a in attempts] == [(0, "ReadTimeout")] * 3
    # 3 attempts of 0.3 s, and 10 s * 2 then 10 s * 4 of backoff at time_scale 0.01
    assert 0.9 + 0.6 - 0.05 < elapsed < 4
    assert iso_duration("P1DT2H3M4.5S") == 86400 + 7200 + 180 + 4.5


def test_a_reply_event_goes_back_into_the_broker(
    cluster: Cluster, broker: FakeBroker, subscriber: Subscriber
) -> None:
    trigger(
        cluster,
        "asks",
        {"uri": f"{subscriber.url}/asks"},
        filters=[{"exact": {"type": "dev.vwm.prompt"}}],
    )
    trigger(
        cluster,
        "answers",
        {"uri": f"{subscriber.url}/answers"},
        filters=[{"exact": {"type": "dev.vwm.reply"}}],
    )
    reply_headers = {
        "ce-specversion": "1.0",
        "ce-id": "reply-1",
        "ce-source": "/harness",
        "ce-type": "dev.vwm.reply",
        "content-type": "application/json",
    }
    subscriber.answer("/asks", (200, reply_headers, json.dumps({"ok": True}).encode()))
    subscriber.answer("/answers", (200, {"content-type": "text/plain"}, b"OK"))

    broker.send(NAMESPACE, BROKER, event("dev.vwm.prompt"))
    broker.wait_idle()

    (reply,) = subscriber.events["/answers"]
    assert (reply["id"], reply.data) == ("reply-1", {"ok": True})
    assert len(subscriber.events["/asks"]) == 1  # "OK" in text is a success, not an event
    assert [a.status for a in broker.attempts] == [200, 200]


def test_a_subscriber_ref_resolves_through_the_services_address(
    cluster: Cluster, broker: FakeBroker, subscriber: Subscriber
) -> None:
    cluster.fake.put(
        SERVICES,
        NAMESPACE,
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "sessions"},
            "status": {"address": {"url": subscriber.url}},
        },
    )
    ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "sessions"}
    trigger(cluster, "by-ref", {"ref": ref, "uri": "/events"})
    missing = {**ref, "name": "gone"}
    trigger(cluster, "dangling", {"ref": missing}, delivery={"retry": 1})

    broker.send(NAMESPACE, BROKER, event())
    broker.wait_idle()

    assert len(subscriber.events["/events"]) == 1
    assert [(a.status, a.error) for a in broker.attempts_of("dangling")] == [(0, "unresolved")] * 2
