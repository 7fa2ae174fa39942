"""The `vwm` command line (Typer). `app` is the root; each module in `COMMAND_MODULES` adds its
commands with ``register(app)``. To add commands, write a module with a ``register`` function and
list it here."""

from vwm.cli import admin, events, local, prompts, sessions, skills, telemetry
from vwm.cli.root import app, main

COMMAND_MODULES = (admin, skills, sessions, prompts, events, telemetry, local)

for _module in COMMAND_MODULES:
    _module.register(app)

__all__ = ["COMMAND_MODULES", "app", "main"]
