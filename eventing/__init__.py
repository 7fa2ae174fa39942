"""The contract shared by the control plane (`functions/`) and the session harness (`harness/`).

Both sides import this package; it imports neither of them. It owns the normalized agent event
schema that every CLI adapter produces and every consumer reads.
"""
