"""Whether bubblewrap can confine a process on this machine: one probe, shared by both sides.

The control plane probes once to decide whether its harnesses confine their CLI
(`functions.runtime.sandbox`); each harness probes again before it starts (`harness.sandbox`),
so a CLI never runs unconfined because bwrap broke in between. Both must ask the same question:
the isolation the harness's profile uses, all of it (a container may allow ``--ro-bind / /`` but
not a new PID namespace with its own ``/proc``).
"""

from __future__ import annotations

import subprocess

PROBE_TIMEOUT_S = 10.0

# Process-level isolation of every sandboxed run (`harness.sandbox` starts its profile with it).
ISOLATION = (
    "--dev", "/dev",
    "--proc", "/proc",
    "--unshare-pid",
    "--unshare-ipc",
    "--cap-drop", "ALL",
    "--die-with-parent",
    "--new-session",
)  # fmt: skip


def probe(bwrap: str) -> str | None:
    """None if `bwrap` can run a command with `ISOLATION` and a private ``/tmp`` here, else why
    not. Blocking, about 10 ms: call it once at start-up."""
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", *ISOLATION, "--tmpfs", "/tmp", "true"],  # noqa: S108
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return f"{bwrap} was not found"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not run: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        return f"{bwrap} failed: {reason}"
    return None
