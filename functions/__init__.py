"""The control plane's scale-to-zero functions (admin, sessions, prompts, telemetry, events).

It never imports `harness`: the two talk over HTTP and CloudEvents, sharing only `eventing`.
"""
