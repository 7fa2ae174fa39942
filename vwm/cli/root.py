"""The root of the `vwm` command line: the Typer app, its global options and error reporting.

Command modules (`vwm.cli.admin`, `vwm.cli.sessions`, ...) each have a ``register(app)`` that adds
their commands; `vwm.cli` wires them. Every command gets its `Client` from `client(ctx)`
(and the raw options from `cli_state(ctx)`).
Any `VWMError` a command raises is printed as ``error [code]: message`` with exit status 1;
usage errors exit with 2. Set ``VWM_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vwm.errors import ConfigError, VWMError
from vwm.sdk.client import DEFAULT_URL, Client


class _ReportingGroup(TyperGroup):
    """The root command group; the one place where errors become messages and exit codes."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # click's Context is private in typer
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors, --help, exits
            raise
        except VWMError as exc:
            _report(exc.code, exc.message, exc.details)
        except Exception as exc:
            if os.environ.get("VWM_DEBUG"):
                raise
            _report(
                "unexpected", f"{type(exc).__name__}: {exc} (set VWM_DEBUG=1 for the traceback)"
            )
        raise typer.Exit(1)


def _report(code: str, message: str, details: dict[str, Any] | None = None) -> None:
    typer.echo(f"error [{code}]: {message}", err=True)
    if details:
        typer.echo(f"  details: {json.dumps(details, default=str)}", err=True)


@dataclass
class CliState:
    """The global options, and the client made from them on first use."""

    url: str
    api_key: str | None
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            if not self.api_key:
                raise ConfigError("no API key: pass --api-key or set VWM_API_KEY")
            self._client = Client(self.url, self.api_key)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


app = typer.Typer(
    cls=_ReportingGroup,
    name="vwm",
    help="Run coding-agent CLIs as managed virtual workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="VWM_URL", help="The control plane's base URL.")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="VWM_API_KEY", help="An API key (vwm_...).", show_default=False
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(url=url, api_key=api_key)
    ctx.call_on_close(ctx.obj.close)


def cli_state(ctx: typer.Context) -> CliState:
    """The global options of this invocation (``url``, ``api_key``), for any command."""
    found = ctx.find_object(CliState)
    if found is None:
        raise RuntimeError("vwm commands run under vwm.cli.app, whose callback sets the state")
    return found


def client(ctx: typer.Context) -> Client:
    """The client for this invocation's ``--url`` and ``--api-key``."""
    return cli_state(ctx).client()


def main() -> None:
    """The console script."""
    app(prog_name="vwm")
