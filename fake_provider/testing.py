"""A fake provider for tests: `serve_in_thread()` runs one on a free loopback port in a thread.

with serve_in_thread() as provider:
    env["ANTHROPIC_BASE_URL"] = provider.base_url
    mark = provider.ledger.mark()
    ...  # run one job
    assert provider.ledger.counted_usage(key="test-key", after_seq=mark) == reported_by_the_cli
    assert provider.ledger.billed_usage(key="test-key", after_seq=mark) == metered
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fake_provider.app import FakeProvider
from fake_provider.ledger import Ledger
from fake_provider.script import Script
from fake_provider.server import bind_socket, make_server

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RunningProvider:
    base_url: str
    """`http://127.0.0.1:PORT`, no path: ANTHROPIC_BASE_URL and GOOGLE_GEMINI_BASE_URL take it
    as is; OpenAI-style clients want `openai_base_url` (with `/v1`)."""
    provider: FakeProvider

    @property
    def ledger(self) -> Ledger:
        return self.provider.ledger

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"


@contextmanager
def serve_in_thread(
    script: Script | None = None,
    *,
    provider: FakeProvider | None = None,
    host: str = "127.0.0.1",
    dump_dir: Path | None = None,
) -> Iterator[RunningProvider]:
    """Run a fake provider on a free port of `host` for the duration of the `with` block."""
    provider = provider or FakeProvider(script, dump_dir=dump_dir)
    sock = bind_socket(host)
    port = sock.getsockname()[1]
    server = make_server(provider)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-provider-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake provider did not start on {host}:{port}")
            time.sleep(0.01)
        yield RunningProvider(base_url=f"http://{host}:{port}", provider=provider)
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
        sock.close()
