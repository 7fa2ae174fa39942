"""Event commands: ``vwm events tail``, VWM's CloudEvents printed live as they happen.

The tail listens on a free local port (`vwm.cli.event_sink`), subscribes that URL through the SDK
under a name of its own (``tail-<random>``), prints each event once (delivery is at least once:
a redelivery has the same `source` and `id`) and deletes the subscription when it stops: Ctrl-C
or SIGTERM, exit 0. The control plane must be able to POST to this machine, which `vwm up` can.
"""

from __future__ import annotations

import queue
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from vwm.cli.event_lines import Seen, event_json, event_line
from vwm.cli.event_sink import EventSink
from vwm.cli.root import cli_state, client
from vwm.errors import AuthError, ValidationError, VWMError
from vwm.sdk.client import Client

events_app = typer.Typer(help="VWM's CloudEvents: watch what sessions and jobs do.")

POLL_S = 0.2  # how often the wait for the next event looks up for a stop


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events", no_args_is_help=True)


@events_app.command("tail")
def tail(
    ctx: typer.Context,
    session: Annotated[
        str | None, typer.Option("--session", metavar="ID", help="Only this session's events.")
    ] = None,
    type_prefix: Annotated[
        str | None,
        typer.Option("--type", metavar="PREFIX", help="Only types starting so, e.g. dev.vwm.job."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON event (structured mode) per line.")
    ] = False,
) -> None:
    """Print VWM's events live, one line each, until Ctrl-C.

    Each line: time, type, session, job, seq and a summary of the data. The control plane
    delivers to a port on this machine, so it must run here (`vwm up`) or be allowed local sinks.
    """
    sdk = client(ctx)
    url = cli_state(ctx).url
    if session is not None:
        sdk.get_session(session)  # a mistyped id is NotFoundError now, not a silent tail
    name = f"tail-{secrets.token_hex(4)}"
    with EventSink() as sink, _stopped_by_sigterm():
        try:
            _subscribe(sdk, name, sink.url, session, type_prefix)
        except KeyboardInterrupt:  # the subscription may exist though its answer never came
            _unsubscribe(sdk, name, url)
            return
        typer.echo(
            f"tailing events through subscription {name} → {sink.url}; Ctrl-C to stop", err=True
        )
        try:
            _print_events(sink, as_json)
        except KeyboardInterrupt:
            pass
        finally:
            _unsubscribe(sdk, name, url)


def _subscribe(
    sdk: Client, name: str, sink_url: str, session: str | None, type_prefix: str | None
) -> None:
    try:
        sdk.subscribe(name, sink_url, session=session, type_prefix=type_prefix)
    except AuthError as exc:
        raise AuthError(
            f"{exc.message}; pass a valid API key with --api-key or VWM_API_KEY "
            "(`vwm key create NAME --scope client` makes one)",
            status=exc.status,
            code=exc.code,
            details=exc.details,
        ) from None
    except ValidationError as exc:
        if not exc.code.startswith("sink_url"):
            raise
        raise ValidationError(
            f"the control plane refused this machine's sink {sink_url}: {exc.message}. "
            "`vwm events tail` receives events on this machine: run it where the control plane "
            "runs (`vwm up`), or subscribe a sink the control plane can reach with "
            "POST /v1/subscriptions",
            status=exc.status,
            code=exc.code,
            details=exc.details,
        ) from None


def _print_events(sink: EventSink, as_json: bool) -> None:
    seen = Seen()
    while True:
        try:
            event = sink.events.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if seen.first_time(event):
            typer.echo(event_json(event) if as_json else event_line(event))


def _unsubscribe(sdk: Client, name: str, url: str) -> None:
    """Delete the subscription; one that was never made, or is gone, is fine."""
    try:
        sdk.subscriptions.delete(name, missing_ok=True)
    except VWMError as exc:
        typer.echo(
            f"error [{exc.code}]: could not delete subscription {name}: {exc.message}; delete it "
            f'later with `curl -X DELETE -H "Authorization: Bearer $VWM_API_KEY" '
            f"{url}/v1/subscriptions/{name}`",
            err=True,
        )
        raise typer.Exit(1) from None


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM stops the tail as Ctrl-C does, so the subscription is deleted either way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
