"""What a harness's first prompt imports is imported ahead, and its TLS context made, on a
thread of its own (harness.warm_imports), and not on the way to ready; in a fresh interpreter
each time so that nothing is imported or made yet."""

from __future__ import annotations

import subprocess
import sys

_COLD = """
import sys, threading
from harness import warm_imports
assert not any(m in sys.modules for m in warm_imports.FIRST_PROMPT_MODULES), "imported already"
from eventing import tls
assert not tls.has_verified_context(), "TLS context made already"
warm_imports.prepare_in_background()
for thread in threading.enumerate():
    if thread.name == "warm-imports":
        thread.join(30)
        break
else:
    raise SystemExit("no import thread started")
print(all(m in sys.modules for m in warm_imports.FIRST_PROMPT_MODULES), tls.has_verified_context())
"""

_WARM = """
import threading
from harness import warm_imports
warm_imports.prepare_first_prompt()
before = threading.active_count()
warm_imports.prepare_in_background()
print(threading.active_count() - before)
"""


# A harness that publishes events, through its lifespan (where it is ready): its event client is
# made at the first event, so neither httpx's transport nor the TLS context is made on the way.
_STARTED = """
import asyncio, os, sys
os.environ.update({
    "VWM_WORKSPACE": sys.argv[1], "VWM_CLI": "claude", "VWM_SESSION_ID": "s-start",
    "VWM_SESSION_TOKEN": "t" * 32, "VWM_EVENT_SINK": "http://127.0.0.1:9/", "VWM_SANDBOX": "none",
})
from eventing import tls
from harness.app import create_app
from harness.settings import HarnessSettings
app = create_app(HarnessSettings.from_env())

async def main():
    async with app.router.lifespan_context(app):
        print("httpcore" in sys.modules, tls.has_verified_context())

asyncio.run(main())
"""


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_cold_harness_imports_the_first_prompts_modules_in_the_background() -> None:
    assert run(_COLD) == "True True"


def test_nothing_is_started_when_they_are_imported_already() -> None:
    assert run(_WARM) == "0"


def test_a_harness_is_ready_before_its_event_client_is_made(tmp_path) -> None:
    assert run(_STARTED, str(tmp_path / "workspace")) == "False False"
