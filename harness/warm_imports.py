"""The modules a harness first needs at its first prompt, imported ahead of it.

httpx imports its transport's package (httpcore) only when the first client is made, and anyio
its asyncio backend and memory streams at the first call that waits on one (the meter's first
provider check, the first event published): about 25 ms of CPU on a quiet machine, several
times that under load, which a harness started cold paid on its session's first prompt. A pool
member imports them before its claim (`harness.pooled.warm_up`); a harness started cold imports
them in the background once bootstrapped, when the session is ready and its caller has moved on.
"""

from __future__ import annotations

import logging
import sys
import threading

logger = logging.getLogger(__name__)

FIRST_PROMPT_MODULES = ("anyio._backends._asyncio", "anyio.streams.memory", "httpcore")


def import_first_prompt_modules() -> None:
    import importlib

    for name in FIRST_PROMPT_MODULES:
        importlib.import_module(name)


def import_in_background() -> None:
    """Import them on a thread of their own, unless they are imported already (a pool member);
    a failure is only logged: the first prompt imports them again and meets it there."""
    if all(name in sys.modules for name in FIRST_PROMPT_MODULES):
        return
    threading.Thread(target=_import_logged, name="warm-imports", daemon=True).start()


def _import_logged() -> None:
    try:
        import_first_prompt_modules()
    except Exception:
        logger.exception("importing the first prompt's modules ahead failed")
