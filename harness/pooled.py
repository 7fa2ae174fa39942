"""`python -m harness.pooled`: a harness started before its session exists, for the embedded
default's warm pool (`functions.runtime.warm_pool`).

It does now what takes a harness longest to start, importing what it runs, and then waits on the
socket the pool gave it (``VWM_POOL_SOCKET_FD``) for the one session it will serve: that
session's environment and working directory, with its listening socket and log file as
descriptors. From then on it is that session's harness, exactly as ``python -m harness`` started
with that environment would be (bootstrap, repos and instructions, comes after, as for any
harness). A member serves one session and ends with it; it is never given back to the pool. If
the pool closes the socket instead (the control plane stopped, or died), it exits.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import uvicorn
from starlette.types import Receive, Scope, Send

# What a harness imports, imported before any session asks for one.
from eventing.lazy_models import build_all
from harness import serve as harness_entry
from harness.warm_imports import prepare_first_prompt

# Far above what a session's environment takes (a few KiB; prices, instructions stay in files).
MAX_ASSIGNMENT_BYTES = 1 << 20


def warm_up() -> None:
    """What a harness does the first time in a process and the same way for any session, done
    before the claim rather than after it (about 0.1 s of CPU here): nothing of a session is
    known yet, and nothing made here is kept but what a module caches for any caller."""
    # The first prompt's modules, and the process's TLS context with its CA bundle loaded: the
    # CAs a member is told of (`SSL_CERT_FILE`, `SSL_CERT_DIR`) are those its session is given,
    # so the harness's clients find it made. Were they others, `verified_context` would make
    # another.
    prepare_first_prompt()
    # uvicorn imports its HTTP protocol and lifespan modules when a server is configured, and
    # its first configuration sets up its loggers; the harness configures its own server
    # again, its way, at the claim (`harness.serve`).
    uvicorn.Config(_no_app, access_log=False).load()
    # Models are built on first use (`eventing.lazy_models`): a member builds them all now,
    # so that its session's first requests and events do not.
    build_all()


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("the warm-up configures a server but never runs one")


def main() -> int:
    warm_up()
    channel = socket.socket(fileno=int(os.environ["VWM_POOL_SOCKET_FD"]))
    try:
        message, fds, _flags, _address = socket.recv_fds(channel, MAX_ASSIGNMENT_BYTES, 2)
    except OSError:
        return 0
    finally:
        channel.close()
    if not message or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return 0  # the pool closed: no session for this one
    assignment = json.loads(message)
    listener, log = fds
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.chdir(assignment["cwd"])
    os.environ.clear()
    os.environ.update(assignment["env"])
    os.environ["VWM_HARNESS_LISTEN_FD"] = str(listener)
    return harness_entry.serve()


if __name__ == "__main__":
    sys.exit(main())
