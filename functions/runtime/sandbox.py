"""Whether the local backend's harnesses confine their CLI in bubblewrap: decided once per process.

The CLIs run with full permissions on content other people control. In production each session
is a pod of its own; in the embedded default every harness is a process of the invoking user, so
the harness runs its CLI in ``bwrap`` (the profile is `harness.sandbox`, described in
docs/runtime.md). The ``VWM_SANDBOX`` setting (`ControlPlaneSettings.sandbox`):

- ``auto`` (default): bwrap if it works on this machine, else unconfined, said plainly at start;
- ``required``: without a working bwrap, ``vwm up`` refuses to start and so does every session
  (`SandboxUnavailable`, code ``sandbox_unavailable``);
- ``off``: unconfined.

Built by `functions.context.backend`, held by `functions.runtime.local.LocalBackend`, announced
by `functions.embedded.serve`. The harness probes bwrap again itself: it never runs a CLI
unconfined because bwrap broke after this decision.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from eventing.bwrap import probe

MODES = ("auto", "required", "off")
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap)"


@dataclass(frozen=True)
class SandboxChoice:
    """The decision: `kind` is what the harnesses use (``bwrap`` or ``none``); `mode` the setting
    it came from; `bwrap` the executable (when it works); `problem` why bwrap is not used;
    `show` paths the CLI sees read-only although the profile hides their parent."""

    mode: str
    kind: str
    bwrap: str | None = None
    problem: str | None = None
    show: tuple[Path, ...] = ()

    @classmethod
    def off(cls) -> SandboxChoice:
        return cls(mode="off", kind="none", problem="VWM_SANDBOX=off")

    @property
    def refused(self) -> bool:
        """Sessions may not start: a sandbox is required and there is none."""
        return self.mode == "required" and self.kind != "bwrap"

    def harness_env(self, hide: Iterable[Path]) -> dict[str, str]:
        """The harness's ``VWM_SANDBOX*`` variables; `hide`: paths its CLI must not see."""
        if self.kind != "bwrap" or self.bwrap is None:
            return {"VWM_SANDBOX": "none"}
        return {
            "VWM_SANDBOX": "bwrap",
            "VWM_SANDBOX_BWRAP": self.bwrap,
            "VWM_SANDBOX_HIDE": _joined(hide),
            "VWM_SANDBOX_SHOW": _joined(self.show),
        }

    def refusal(self) -> str:
        return (
            f"VWM_SANDBOX=required, but bubblewrap cannot confine the agents here ({self.problem}); "
            f"{INSTALL_HINT} where user namespaces are allowed, or set VWM_SANDBOX=auto to run "
            "them unconfined"
        )

    def announcement(self) -> str:
        """What ``vwm up`` says at start about how agents run."""
        if self.kind == "bwrap":
            return (
                f"vwm: agents run sandboxed in bubblewrap ({self.bwrap}): each CLI sees only its "
                "own workspace, the rest of the machine read-only, the data folder not at all"
            )
        if self.mode == "off":
            return (
                "vwm: agents run UNCONFINED (VWM_SANDBOX=off): every CLI can read and change "
                "whatever your user can; unset VWM_SANDBOX to confine them in bubblewrap"
            )
        return (
            "vwm: agents run UNCONFINED: every CLI can read and change whatever your user can "
            f"(other sessions, the database, your files), because {self.problem}; {INSTALL_HINT} "
            "to confine them, or set VWM_SANDBOX=required to refuse to start without it"
        )


def choose(mode: str, bwrap: str = "bwrap", show: Iterable[Path] = ()) -> SandboxChoice:
    """Decide from the setting, probing `bwrap` (a path or a name on ``PATH``) unless it is off."""
    if mode not in MODES:
        raise ValueError(f"VWM_SANDBOX={mode!r}: use {', '.join(MODES)}")
    if mode == "off":
        return SandboxChoice.off()
    executable = shutil.which(bwrap) or bwrap
    problem = probe(executable)
    if problem is None:
        return SandboxChoice(mode=mode, kind="bwrap", bwrap=executable, show=tuple(show))
    return SandboxChoice(mode=mode, kind="none", problem=problem)


def _joined(paths: Iterable[Path]) -> str:
    return os.pathsep.join(dict.fromkeys(str(path) for path in paths))
