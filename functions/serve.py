"""The functions image's entry point: one functions-framework target served in this process.

    python -m functions.serve --source functions/main.py [--target T] [--signature-type cloudevent]

It takes the options of `functions-framework --asgi` (and the same variables: FUNCTION_TARGET,
FUNCTION_SOURCE, FUNCTION_SIGNATURE_TYPE, HOST, PORT), builds the same app with
functions-framework's own `create_asgi_app`, and serves it with uvicorn, as functions-framework
does in its debug mode. functions-framework's own command runs gunicorn instead, whose arbiter
forks one uvicorn worker: a second process start on every cold start, which a single worker
gains nothing from. The function stays functions-framework's (its routes, its CloudEvent parsing, its error
answers), so `functions-framework --target T --asgi` still serves it the same
(bench/cold_start.py compares the two).

The garbage collector is paused from the start until the first answer begins
(`eventing.start_gc`).
"""

from __future__ import annotations

import argparse
import gc
import os

from eventing.start_gc import CollectAfterFirstAnswer

SIGNATURE_TYPES = ("http", "event", "cloudevent", "typed")
# Gunicorn's defaults, which the functions-framework command served with: an idle connection
# kept 2 s, proxy headers trusted from the pod's own loopback (Knative's queue-proxy).
KEEP_ALIVE_S = 2
FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
# What a stop (Knative's SIGTERM) leaves open requests to finish in: gunicorn's graceful timeout.
GRACEFUL_SHUTDOWN_S = 30


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """functions-framework's options (`functions_framework._cli`), with its variables as
    defaults; ``--asgi`` is accepted and implied."""
    parser = argparse.ArgumentParser(prog="python -m functions.serve", description=__doc__)
    env = os.environ.get
    parser.add_argument("--target", default=env("FUNCTION_TARGET"))
    parser.add_argument("--source", default=env("FUNCTION_SOURCE"))
    parser.add_argument(
        "--signature-type", choices=SIGNATURE_TYPES, default=env("FUNCTION_SIGNATURE_TYPE")
    )
    # Every address: in a pod, Knative's queue-proxy reaches it on the pod's own.
    parser.add_argument("--host", default=env("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("PORT", "8080")))
    parser.add_argument("--asgi", action="store_true", help="accepted: always ASGI")
    arguments = parser.parse_args(argv)
    if not arguments.target:
        parser.error("--target (or FUNCTION_TARGET) is required")
    return arguments


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    gc.disable()
    # Imported here, with the collector paused: they are most of the start.
    import uvicorn
    from functions_framework.aio import create_asgi_app

    app = create_asgi_app(arguments.target, arguments.source, arguments.signature_type)
    uvicorn.run(
        CollectAfterFirstAnswer(app),
        host=arguments.host,
        port=arguments.port,
        # The root logger is the function's (JSON lines, functions.main); uvicorn adds none.
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    main()
