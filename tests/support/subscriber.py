"""A CloudEvents subscriber for tests that drive a control plane from synchronous code: an HTTP
server on a local port, served from a thread, that decodes each POST with
`eventing.codec.from_http` and keeps the event with its headers (where Knative's extensions
outside VWM's catalogue, such as the dead-letter `knativeerror*`, are still to be read).

It answers every event with one fixed status (202, as a Knative broker does, unless told
otherwise). Its port can be chosen before it listens, so a test can point a subscription at a
port with nothing behind it and start the subscriber there later."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eventing import codec
from eventing.events import EventError, VwmEvent
from tests.support.harness_process import free_port


@dataclass(frozen=True)
class Received:
    event: VwmEvent
    headers: dict[str, str]  # names in lower case


class Subscriber:
    """``with Subscriber() as sink:`` serves on ``sink.url`` for the block. `status` and
    `answer` are what every POST gets back; `port` (a free one by default) is fixed at once."""

    def __init__(self, *, port: int | None = None, status: int = 202, answer: bytes = b"") -> None:
        self.port = port or free_port()
        self.status = status
        self.answer = answer
        self._received: list[Received] = []
        self._refused: list[str] = []  # bodies that were not a VWM event: a test fails on them
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, answer = subscriber.status, subscriber.answer
                try:
                    event = codec.from_http(headers, body)
                except EventError as exc:
                    with subscriber._lock:
                        subscriber._refused.append(f"{exc.code}: {exc.message}")
                    status, answer = exc.status, exc.message.encode()
                else:
                    with subscriber._lock:
                        subscriber._received.append(Received(event, headers))
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        # HTTPServer sets SO_REUSEADDR: the port binds again right after a stop.
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> Subscriber:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def received(self) -> list[Received]:
        """What it took so far, in arrival order; AssertionError if anything was not an event."""
        with self._lock:
            assert not self._refused, self._refused
            return list(self._received)

    def events(self) -> list[VwmEvent]:
        return [arrival.event for arrival in self.received()]
