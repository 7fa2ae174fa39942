"""The session harness: the HTTP server that runs inside each session and drives one CLI agent.

Layers, each unaware of the ones above it: `transport` (process → JSON objects), `adapters`
(JSON objects → normalized events, one module per CLI), `jobs` (lifecycle, timeouts, resume state,
event logs), and the HTTP edge (`app`, `http`, `sse`, `routes_files`). It never imports
`functions`; both sides share only `eventing`.
"""
