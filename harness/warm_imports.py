"""What a harness first needs at its first prompt, made ahead of it: modules and the TLS context.

httpx imports its transport's package (httpcore) only when the first client is made, and anyio
its asyncio backend and memory streams at the first call that waits on one (the meter's first
provider check, the first event published): about 25 ms of CPU on a quiet machine, several
times that under load, which a harness started cold paid on its session's first prompt. The
process's TLS context (`eventing.tls`, its CA bundle read: about 20 ms) is the first client's
too, the meter's or the event publisher's, both made at the first prompt. A pool member makes
them before its claim (`harness.pooled.warm_up`); a harness started cold makes them in the
background once bootstrapped, when the session is ready and its caller has moved on.
"""

from __future__ import annotations

import logging
import sys
import threading

logger = logging.getLogger(__name__)

FIRST_PROMPT_MODULES = ("anyio._backends._asyncio", "anyio.streams.memory", "httpcore")


def prepare_first_prompt() -> None:
    """The modules above imported and the process's TLS context made (cached: the clients made
    later use it). The CAs are those the environment names now, the session's."""
    import importlib

    for name in FIRST_PROMPT_MODULES:
        importlib.import_module(name)
    # Imported here: `harness` first keeps httpx's command-line client out (eventing.lean_httpx).
    from eventing.tls import verified_context

    verified_context()


def prepare_in_background() -> None:
    """Prepare them on a thread of their own, unless a pool member's warm-up did already; a
    failure is only logged: the first prompt makes them again and meets it there."""
    if all(name in sys.modules for name in FIRST_PROMPT_MODULES) and _has_tls_context():
        return
    threading.Thread(target=_prepare_logged, name="warm-imports", daemon=True).start()


def _has_tls_context() -> bool:
    from eventing.tls import has_verified_context

    return has_verified_context()


def _prepare_logged() -> None:
    try:
        prepare_first_prompt()
    except Exception:
        logger.exception("preparing the first prompt's modules and TLS context ahead failed")
