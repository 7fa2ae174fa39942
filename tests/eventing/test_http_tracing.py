"""`eventing.http_tracing.HttpTracing`: a server span per request, named by the route template,
continuing the caller's ``traceparent``; one span for a whole streamed answer; nothing at all
while tracing is off."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from eventing import tracing
from eventing.http_tracing import HttpTracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def stream(_: Request) -> Response:
    async def chunks():
        for n in range(5):
            yield f"data: {n}\n\n".encode()

    return StreamingResponse(chunks(), media_type="text/event-stream")


def app() -> Starlette:
    routes = [
        Route("/v1/items/{item_id}", item, methods=["GET"]),
        Route("/v1/stream", stream, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(HttpTracing, routes=routes)])


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.use_provider(provider):
        yield exporter
    provider.shutdown()


async def get(path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://vwm.test") as client:
        return await client.get(path, headers=headers)


async def test_a_request_is_a_server_span_named_by_its_route_in_the_callers_trace(spans):
    answer = await get("/v1/items/item-42", traceparent=f"00-{TRACE_ID}-{SPAN_ID}-01")
    assert answer.json() == {"id": "item-42"}
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /v1/items/{item_id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes["http.route"] == "/v1/items/{item_id}"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == SPAN_ID
    assert "item-42" not in span.name


async def test_an_unknown_path_is_named_by_its_method_alone(spans):
    assert (await get("/v1/nothing/here")).status_code == 404
    (span,) = spans.get_finished_spans()
    assert span.name == "GET"
    assert "http.route" not in span.attributes


async def test_a_streamed_answer_is_one_span(spans):
    answer = await get("/v1/stream")
    assert answer.text.count("data:") == 5
    assert [span.name for span in spans.get_finished_spans()] == ["GET /v1/stream"]


async def test_tracing_off_records_nothing_and_changes_nothing(spans):
    with tracing.use_provider(None):
        answer = await get("/v1/items/x", traceparent=f"00-{TRACE_ID}-{SPAN_ID}-01")
    assert answer.json() == {"id": "x"}
    assert spans.get_finished_spans() == ()
