"""The session harness: the HTTP server that runs inside each session and drives one CLI agent.

Layers, each unaware of the ones above it: `transport` (process → JSON objects), `adapters`
(JSON objects → normalized events, one module per CLI), `jobs` (lifecycle, timeouts, resume state,
event logs), and the HTTP edge (`app`, `http`, `sse`, `routes_files`). It never imports
`functions`; both sides share only `eventing`.
"""

from eventing.lean_httpx import skip_httpx_cli

skip_httpx_cli()  # before anything here imports httpx: its CLI's packages are not needed
