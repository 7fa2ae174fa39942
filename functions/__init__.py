"""The control plane's scale-to-zero functions (admin, sessions, prompts, telemetry, events).

It never imports `harness`: the two talk over HTTP and CloudEvents, sharing only `eventing`.
"""

from eventing.lean_httpx import skip_httpx_cli

skip_httpx_cli()  # before anything here imports httpx: its CLI's packages are not needed
