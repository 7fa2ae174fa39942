"""A Knative Broker (the channel-based one: no ordering), played on a loopback port over a
`FakeKubeApi` that holds the Triggers (``eventing.knative.dev/v1``, the kind
`functions.broker.knative_triggers.TRIGGERS` names), for tests of publishers and subscribers.

`FakeBroker` serves the broker ingress, ``POST /{namespace}/{broker}``: a CloudEvent in binary
or structured mode (`cloudevents.http.from_http`) is answered 202, a malformed one 400, a
broker not declared on the FakeBroker 404. Then, for every Trigger of that namespace whose
``spec.broker`` is that broker and whose filter matches, it delivers the event in binary mode
to the Trigger's subscriber, concurrently and independently per Trigger and per event:

- Filters: ``spec.filters`` when given (the SubscriptionsAPI dialects ``exact``, ``prefix``,
  ``suffix``, ``all``, ``any``, ``not``; a list of them must all match), else
  ``spec.filter.attributes`` (exact values; ``""`` matches any non-empty value of an attribute
  that is present). ``cesql`` is not supported: such a Trigger gets nothing and the failure is
  in `FakeBroker.errors`, which `wait_idle` raises.
- Subscriber: ``uri``, or a ``ref`` to a ``serving.knative.dev/v1`` Service (its
  ``status.address.url``) or to a Broker declared here, with a relative ``uri`` resolved
  against it. A ref that does not resolve counts as an attempt with no answer (status 0).
- Retries by ``spec.delivery``, else the broker's: ``retry`` more attempts after the first,
  waiting ``backoffDelay`` * n (``linear``) or * 2^n (``exponential``, the default) before
  retry n, times `time_scale`; ``timeout`` per attempt (not scaled). Retried: no answer, a
  timeout, 404, 409, 429, 5xx; any other status ends it. Then ``deadLetterSink`` gets the event
  with ``knativeerrordest``, ``knativeerrorcode`` and ``knativeerrordata`` (the base64 of the
  last response body, cut to 1024 characters; for no answer, code 500 and
  ``dispatch error: ...``), as Knative's dispatcher sends it.
- A 2xx answer carrying a CloudEvent (``ce-specversion`` header, or a structured body) is
  published back into the same broker, as Knative does with replies; any other 2xx is done.

Every attempt is recorded (`Attempt`); `wait_idle` returns once nothing is in flight.
Where the fake differs from Knative: the ingress adds ``knativearrivaltime`` as the real one
does but no tracing headers; no ``retryAfterMax``; replies are not guarded against loops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from cloudevents.conversion import to_binary, to_structured
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from functions.broker.knative_triggers import TRIGGERS as TRIGGER_RESOURCE
from tests.support.fake_knative import SERVICES
from tests.support.fake_kube_api import FakeKubeApi, Kind

log = logging.getLogger(__name__)

TRIGGERS = Kind(
    TRIGGER_RESOURCE.group, TRIGGER_RESOURCE.version, TRIGGER_RESOURCE.plural, TRIGGER_RESOURCE.kind
)
BrokerKey = tuple[str, str]  # (namespace, broker name)

ERROR_DATA_MAX = 1024  # characters of base64, as Knative's KnativeErrorDataExtensionMaxLength
_DURATION = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


class UnsupportedFilter(ValueError):
    """A Trigger filter the fake does not evaluate (``cesql``) or does not know."""


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: `status` is the HTTP status, 0 when nothing answered."""

    trigger: str
    event_id: str
    event_type: str
    attempt: int  # 1 for the first try
    status: int
    url: str
    target: str = "subscriber"  # or "dead-letter"
    error: str = ""


def iso_duration(text: str) -> float:
    """Seconds of an ISO 8601 duration such as ``PT0.2S``, ``PT1M``, ``P1DT2H``."""
    match = _DURATION.fullmatch(text or "")
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
    ) + parts.get("s", 0)


def _attribute(event: CloudEvent, name: str) -> str | None:
    value = event.get_attributes().get(name)
    return None if value is None else str(value)


def filters_match(filters: list[Any], event: CloudEvent) -> bool:
    """The SubscriptionsAPI: every filter of the list must match."""
    return all(_one_filter(f, event) for f in filters)


def _one_filter(expression: Any, event: CloudEvent) -> bool:
    if not isinstance(expression, dict) or len(expression) != 1:
        raise UnsupportedFilter(f"a filter has exactly one dialect: {expression!r}")
    ((dialect, operand),) = expression.items()
    match dialect:
        case "exact" | "prefix" | "suffix":
            return all(_compare(dialect, _attribute(event, k), str(v)) for k, v in operand.items())
        case "all":
            return all(_one_filter(f, event) for f in operand)
        case "any":
            return any(_one_filter(f, event) for f in operand)
        case "not":
            return not _one_filter(operand, event)
        case "cesql":
            raise UnsupportedFilter(f"cesql filters are not supported by the fake: {operand!r}")
    raise UnsupportedFilter(f"unknown filter dialect {dialect!r}")


def _compare(dialect: str, value: str | None, wanted: str) -> bool:
    if value is None:
        return False
    if dialect == "exact":
        return value == wanted
    return value.startswith(wanted) if dialect == "prefix" else value.endswith(wanted)


def attributes_match(attributes: Mapping[str, Any], event: CloudEvent) -> bool:
    """The older ``filter.attributes``: exact values, ``""`` for any value that is set."""
    for name, wanted in attributes.items():
        value = _attribute(event, name)
        if value is None or (wanted == "" and value == ""):
            return False
        if wanted != "" and value != str(wanted):
            return False
    return True


def trigger_matches(spec: Mapping[str, Any], event: CloudEvent) -> bool:
    if spec.get("filters"):
        return filters_match(spec["filters"], event)
    return attributes_match((spec.get("filter") or {}).get("attributes") or {}, event)


def retried(status: int) -> bool:
    return status in (0, 404, 409, 429) or status >= 500


def _is_event(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return "ce-specversion" in response.headers or content_type.startswith(
        "application/cloudevents+json"
    )


class FakeBroker:
    """See the module docstring. A context manager: serves on a thread with its own event
    loop for the block."""

    def __init__(
        self,
        api: FakeKubeApi,
        brokers: Mapping[BrokerKey, Mapping[str, Any] | None] | Iterable[BrokerKey],
        *,
        time_scale: float = 1.0,
        attempt_timeout_s: float = 30.0,
    ) -> None:
        self.api = api
        if isinstance(brokers, Mapping):
            self.brokers = {key: dict(spec or {}) for key, spec in brokers.items()}
        else:
            self.brokers = {key: {} for key in brokers}
        self.time_scale = time_scale
        self.attempt_timeout_s = attempt_timeout_s  # when a delivery sets no timeout
        self.attempts: list[Attempt] = []
        self.received: list[tuple[BrokerKey, CloudEvent]] = []  # accepted, replies included
        self.errors: list[str] = []
        self.url = ""
        self._idle = threading.Condition()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeBroker:
        self.api.register(TRIGGERS, SERVICES)
        sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(routes=[Route("/{namespace}/{broker}", self._ingress, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(sock)), name="fake-broker", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake broker did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    async def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        async with httpx.AsyncClient() as client:
            self._client = client
            try:
                await self._server.serve(sockets=[sock])
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                sock.close()

    # -- for tests -------------------------------------------------------------------------

    def ingress_url(self, namespace: str, broker: str) -> str:
        return f"{self.url}/{namespace}/{broker}"

    def send(
        self, namespace: str, broker: str, event: CloudEvent, *, structured: bool = False
    ) -> int:
        """POST `event` to the ingress as a publisher would; the HTTP status."""
        headers, body = to_structured(event) if structured else to_binary(event)
        return httpx.post(
            self.ingress_url(namespace, broker), headers=headers, content=body
        ).status_code

    def wait_idle(self, timeout: float = 10) -> None:
        """Until no delivery is in flight (TimeoutError if that takes longer than `timeout`);
        raises RuntimeError when the fake met a Trigger it cannot serve."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout):
                raise TimeoutError(f"{self._in_flight} deliveries still in flight")
        if self.errors:
            raise RuntimeError("fake broker: " + "; ".join(self.errors))

    def attempts_of(self, trigger: str, target: str = "subscriber") -> list[Attempt]:
        return [a for a in self.attempts if a.trigger == trigger and a.target == target]

    # -- ingress and fan-out ---------------------------------------------------------------

    async def _ingress(self, request: Request) -> Response:
        key = (request.path_params["namespace"], request.path_params["broker"])
        if key not in self.brokers:
            return Response(f"broker {key[0]}/{key[1]} not found", status_code=404)
        try:
            event = from_http(dict(request.headers), await request.body())
        except (GenericException, ValueError) as exc:
            return Response(f"malformed CloudEvent: {exc}", status_code=400)
        self._publish(key, event)
        return Response(status_code=202)

    def _publish(self, key: BrokerKey, event: CloudEvent) -> None:
        """Start one delivery per matching Trigger; returns at once."""
        event["knativearrivaltime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.received.append((key, event))
        namespace, broker = key
        for name, trigger in sorted(self.api.objects(TRIGGERS, namespace).items()):
            spec = trigger.get("spec") or {}
            if spec.get("broker") != broker:
                continue
            try:
                if not trigger_matches(spec, event):
                    continue
            except UnsupportedFilter as exc:
                log.error("trigger %s/%s: %s", namespace, name, exc)
                self.errors.append(f"trigger {namespace}/{name}: {exc}")
                continue
            with self._idle:
                self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._deliver(key, name, spec, event))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(f"delivery failed inside the fake: {task.exception()!r}")
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    # -- delivery --------------------------------------------------------------------------

    async def _deliver(
        self, key: BrokerKey, trigger: str, spec: Mapping[str, Any], event: CloudEvent
    ) -> None:
        delivery = spec.get("delivery") or self.brokers[key] or {}
        try:
            timeout = iso_duration(delivery["timeout"]) if delivery.get("timeout") else None
            last = await self._attempts(
                key, trigger, "subscriber", spec.get("subscriber") or {}, event, delivery, timeout
            )
        except ValueError as exc:
            self.errors.append(f"trigger {key[0]}/{trigger}: {exc}")
            return
        if last is None or not delivery.get("deadLetterSink"):
            return
        status, body, url = last
        dead = CloudEvent(dict(event.get_attributes()), event.data)
        dead["knativeerrordest"] = url
        dead["knativeerrorcode"] = str(status or 500)
        data = base64.b64encode(body).decode()[:ERROR_DATA_MAX]
        if data:
            dead["knativeerrordata"] = data
        sink = delivery["deadLetterSink"]
        await self._attempts(key, trigger, "dead-letter", sink, dead, delivery, timeout)

    async def _attempts(
        self,
        key: BrokerKey,
        trigger: str,
        target: str,
        destination: Mapping[str, Any],
        event: CloudEvent,
        delivery: Mapping[str, Any],
        attempt_timeout: float | None,
    ) -> tuple[int, bytes, str] | None:
        """Deliver with retries; None when delivered, else the last (status, body, url)."""
        retries = int(delivery.get("retry", 0))
        delay = iso_duration(delivery["backoffDelay"]) if delivery.get("backoffDelay") else 0.0
        linear = delivery.get("backoffPolicy", "exponential") == "linear"
        last: tuple[int, bytes, str] = (0, b"", "")
        for number in range(1, retries + 2):
            if number > 1:
                retry = number - 1
                await asyncio.sleep(delay * (retry if linear else 2**retry) * self.time_scale)
            url = self._resolve(key[0], destination)
            status, body, error, reply = await self._post(url, event, attempt_timeout)
            self.attempts.append(
                Attempt(
                    trigger, event["id"], event["type"], number, status, url or "", target, error
                )
            )
            if 200 <= status < 300:
                if reply is not None:
                    self._publish(key, reply)
                return None
            last = (status, body, url or "")
            if not retried(status):
                break
        return last

    async def _post(
        self, url: str | None, event: CloudEvent, attempt_timeout: float | None
    ) -> tuple[int, bytes, str, CloudEvent | None]:
        """(status, body, error, reply event) of one binary-mode POST; status 0 when nothing
        answered, with the body Knative's dispatcher reports for that."""
        if url is None:
            return 0, b"dispatch error: destination did not resolve", "unresolved", None
        assert self._client is not None
        headers, body = to_binary(event)
        try:
            response = await self._client.post(
                url,
                headers=headers,
                content=body,
                timeout=attempt_timeout or self.attempt_timeout_s,
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            return 0, f"dispatch error: {error}".encode(), error, None
        reply = None
        if 200 <= response.status_code < 300 and _is_event(response):
            try:
                reply = from_http(dict(response.headers), response.content)
            except (GenericException, ValueError) as exc:
                log.warning("a malformed reply from %s is ignored: %s", url, exc)
        return response.status_code, response.content, "", reply

    def _resolve(self, namespace: str, destination: Mapping[str, Any]) -> str | None:
        uri = destination.get("uri") or ""
        ref = destination.get("ref")
        if not ref:
            return uri or None
        base = self._ref_url(ref.get("namespace") or namespace, ref)
        if base is None:
            return None
        return urllib.parse.urljoin(base + "/", uri) if uri else base

    def _ref_url(self, namespace: str, ref: Mapping[str, Any]) -> str | None:
        kind = (ref.get("apiVersion"), ref.get("kind"))
        if kind == ("serving.knative.dev/v1", "Service"):
            service = self.api.get(SERVICES, namespace, ref.get("name", "")) or {}
            status = service.get("status") or {}
            url = (status.get("address") or {}).get("url") or status.get("url")
            return str(url).rstrip("/") if url else None
        if kind == ("eventing.knative.dev/v1", "Broker") and (namespace, ref.get("name")) in (
            self.brokers
        ):
            return self.ingress_url(namespace, str(ref.get("name")))
        return None


@contextlib.contextmanager
def fake_broker(api: FakeKubeApi, brokers: Any, **options: Any) -> Iterator[FakeBroker]:
    """`FakeBroker` as a context manager function, for fixtures that prefer one."""
    with FakeBroker(api, brokers, **options) as broker:
        yield broker
