"""What a harness's first prompt imports is imported ahead, and its TLS context made, on a
thread of its own (harness.warm_imports), in a fresh interpreter each time so that nothing is
imported or made yet."""

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


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_cold_harness_imports_the_first_prompts_modules_in_the_background() -> None:
    assert run(_COLD) == "True True"


def test_nothing_is_started_when_they_are_imported_already() -> None:
    assert run(_WARM) == "0"
