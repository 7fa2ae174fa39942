"""`vwm up` (the embedded system on this machine) and `vwm demo` (the whole product, offline)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        port: Annotated[int, typer.Option(help="Port of the control plane.")] = 8000,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        data_dir: Annotated[
            Path, typer.Option(envvar="VWM_DATA_DIR", help="Database, workspaces and logs.")
        ] = Path(".data"),
        log_format: Annotated[
            str,
            typer.Option(
                envvar="VWM_LOG_FORMAT",
                help="auto (text on a terminal, JSON lines otherwise), text or json.",
            ),
        ] = "auto",
    ) -> None:
        """Start the embedded control plane: SQLite file, local harness processes, folders."""
        from eventing.errors import VwmError
        from eventing.logs import configure_logging
        from functions.embedded import serve
        from vwm.errors import VWMError

        try:
            configure_logging(format_name=log_format)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--log-format") from None
        os.environ["VWM_DATA_DIR"] = str(data_dir.resolve())
        typer.echo("vwm: try the whole product offline with `vwm demo`", err=True)
        try:
            serve(host, port)
        except VwmError as exc:  # a setting, the runtime backend, its API server: their code
            raise VWMError(exc.message, code=exc.code) from None

    @app.command()
    def demo(
        cli: Annotated[str, typer.Option(help="claude, codex, gemini or opencode.")] = "claude",
        keep: Annotated[bool, typer.Option(help="Keep the demo's data folder.")] = False,
    ) -> None:
        """Run the whole product offline, no API key: fake model, real CLI, streamed prompt."""
        from vwm.local.demo import run_demo

        raise typer.Exit(run_demo(cli, keep=keep))
