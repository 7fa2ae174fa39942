"""The stand-in CLI and the recording sink of the harness's publishing tests, shared with the
prompt-request tests (their fixtures are in tests/harness/conftest.py)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from eventing.events import VwmEvent
from tests.support.event_sink import Sink, SinkServer

# Claude Code's stream-json, scripted by the prompt: "emit N GAP_MS [stderr] [fail] [hang]" writes
# the init line, N assistant messages GAP_MS apart, optionally a stderr line, then the result
# line (failed with "fail"); with "hang" it waits, instead of the result, until the harness dies.
STAND_IN_CLI = f"""#!{sys.executable}
import json, os, sys, time
words = sys.argv[sys.argv.index("-p") + 1].split()
count, gap = int(words[1]), int(words[2]) / 1000
def out(obj):
    print(json.dumps(obj), flush=True)
out({{"type": "system", "subtype": "init", "session_id": "stand-in", "model": "stand-in"}})
for number in range(count):
    text = {{"type": "text", "text": f"part {{number}} é"}}
    out({{"type": "assistant", "message": {{"content": [text]}}}})
    time.sleep(gap)
if "stderr" in words:
    print("a warning on stderr", file=sys.stderr, flush=True)
if "hang" in words:  # until the harness is gone (killed), at most a minute
    parent, until = os.getppid(), time.monotonic() + 60
    while os.getppid() == parent and time.monotonic() < until:
        time.sleep(0.1)
    sys.exit(1)
failed = "fail" in words
out({{"type": "result", "subtype": "success", "is_error": failed, "session_id": "stand-in",
     "result": "it broke" if failed else "done", "total_cost_usd": 0.01,
     "usage": {{"input_tokens": 3, "output_tokens": 2}}}})
"""


@dataclass
class RecordingSink(Sink):
    """The test sink, also keeping each request's Authorization header and arrival time."""

    authorizations: list[str | None] = field(default_factory=list)
    received_at: dict[str, float] = field(default_factory=dict)  # event id -> first 2xx arrival

    async def receive(self, request: Request) -> Response:
        now = time.time()
        self.authorizations.append(request.headers.get("authorization"))
        before = len(self.arrivals)
        response = await super().receive(request)
        if len(self.arrivals) > before and 200 <= response.status_code < 300:
            self.received_at.setdefault(self.arrivals[before].event.id, now)
        return response

    def of_job(self, job_id: str) -> list[VwmEvent]:
        return [event for event in self.accepted if event.jobid == job_id]


def recording(server: SinkServer) -> RecordingSink:
    assert isinstance(server.sink, RecordingSink)
    return server.sink
