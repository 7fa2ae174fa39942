"""A CloudEvents sink on a local port, for `vwm events tail`: the subscription's deliveries land here.

A `ThreadingHTTPServer` in a daemon thread takes ``POST`` requests in binary or structured mode,
decodes each with `eventing.codec.from_http` and hands the `VwmEvent` over a queue to the command,
which prints. It answers as a broker expects of a subscriber: 202 with an empty body once the event
is queued (a body would read as a reply event), the `EventError`'s 4xx and JSON error for an event
that will never be accepted (the broker does not retry it), and 413 for a body over the event limit.
"""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eventing.codec import MAX_EVENT_BYTES, from_http
from eventing.events import EventError, VwmEvent


class EventSink:
    """Listens on ``host`` (a free port) once entered; `url` is what to subscribe."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.events: queue.Queue[VwmEvent] = queue.Queue()
        self._host = host
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self.events))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="vwm-event-sink", daemon=True
        )

    @property
    def url(self) -> str:
        shown = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{shown}:{self._server.server_port}/"

    def __enter__(self) -> EventSink:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(events: queue.Queue[VwmEvent]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("content-length") or "0")
            except ValueError:
                self._refuse(EventError("invalid_request", "content-length is not a number"))
                return
            if length > MAX_EVENT_BYTES:
                self._refuse(
                    EventError("event_too_large", f"at most {MAX_EVENT_BYTES} bytes", status=413)
                )
                return
            body = self.rfile.read(length)
            try:
                event = from_http(dict(self.headers.items()), body)
            except EventError as exc:
                self._refuse(exc)
                return
            events.put(event)
            self._answer(202)

        def _refuse(self, error: EventError) -> None:
            self._answer(error.status, json.dumps(error.to_body()).encode())

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            if body:
                self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            """The tail's output is the events; requests are not logged."""

    return Handler
