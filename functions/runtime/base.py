"""The runtime backend contract: how a session's harness is provisioned, found and torn down.

The sessions and events functions call a `RuntimeBackend`; `functions.runtime.local` runs each
harness as a local process (the embedded default), `functions.runtime.knative` runs it as a
Knative Service bound to a PVC. Both pass the contract suite in ``tests/runtime/contract.py``.

A backend keeps no state of its own that a restart would lose: everything needed to find a
harness again is in the `RuntimeHandle` it returns, which the caller persists (JSON) with the
session. Secrets the harness needs (the provider key) travel in `HarnessSpec.credential_env`,
which no backend ever persists: the caller resolves it again from the runtime's credential
reference before every `provision` and `ensure_running`. The harness token is derived, never
kept (`functions.runtime.tokens`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from functions.runtime.errors import InvalidHarnessSpec

# Given the ids of sessions that have a harness, those of them that may still run.
StillOwned = Callable[[Collection[str]], Awaitable[Collection[str]]]

HarnessStatus = Literal["running", "stopped", "missing"]
"""``running``: the harness process (or Service) exists, ready or still starting.
``stopped``: its workspace (volume) is there but nothing serves it (no process, or one that is
stopped, e.g. by SIGSTOP); `ensure_running` fixes that.
``missing``: the workspace is gone (torn down, or never provisioned here); nothing can be
revived."""

# Variables each backend sets itself: a spec may not override them.
RESERVED_ENV = frozenset(
    {
        "VWM_WORKSPACE",
        "VWM_SESSION_ID",
        "VWM_HARNESS_HOST",
        "VWM_HARNESS_PORT",
        "VWM_HARNESS_LISTEN_FD",
        "VWM_SESSION_TOKEN",
        "VWM_CLI",
        "VWM_CLI_VERSION",
        "VWM_GIT_ALLOW_LOCAL",
        "VWM_SANDBOX",
        "VWM_SANDBOX_BWRAP",
        "VWM_SANDBOX_HIDE",
        "VWM_SANDBOX_SHOW",
    }
)


# Session ids a backend takes: fit for a folder name, turned into a resource name by each backend.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def checked_session_id(session_id: str) -> str:
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidHarnessSpec(
            f"session id {session_id!r} must be 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            session_id=session_id,
        )
    return session_id


@dataclass(frozen=True)
class HarnessSpec:
    """What to run for one session. Built by the caller from the worker and its runtime row.

    `credential_env` (e.g. ``{"VWM_PROVIDER_API_KEY": ...}``) reaches only the harness's
    environment: it is never part of a handle, a log line or a repr. `extra_env` carries any other
    ``VWM_*`` setting of docs/harness.md (``VWM_PRICES``, ``VWM_SYSTEM_PROMPT``, ...).

    `cli_version`: the exact version the runtime pins (``VWM_CLI_VERSION``): the harness runs
    its image's CLI if that reports this version, else installs it once on the session's volume
    (docs/harness.md, "The CLI's version"). None: whatever CLI the harness finds.

    `git_allow_local`: the repo URL policy allows local paths and ``file://`` repositories
    (the ``allow_local_repos`` setting). Only then does the harness get ``VWM_GIT_ALLOW_LOCAL=1``
    and let its git use the file transport; otherwise it refuses local repositories itself too,
    whatever the control plane checked.
    """

    session_id: str
    cli: str
    cli_bin: str | None
    model: str | None
    provider_base_url: str | None
    credential_env: dict[str, str] = field(repr=False)
    job_timeout_s: float | None
    extra_env: dict[str, str] = field(default_factory=dict)
    git_allow_local: bool = False
    cli_version: str | None = None
    # Where it runs, for backends that run images (the local one runs this checkout's harness):
    # the runtime's image (None: the backend's default), its worker's name for labels, and the
    # runtime's CPU and memory (Kubernetes quantities; None: the backend's defaults).
    image: str | None = None
    worker: str | None = None
    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class HarnessEndpoint:
    """Where the control plane calls the harness, and the bearer token it must send."""

    url: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class RuntimeHandle:
    """What a backend needs to find a session's harness again; persist `to_dict()` as JSON.

    `state` is backend-specific and JSON-able. Locally it holds the workspace path, port and pid;
    the Knative backend's holds only resource names. Never the harness token: backends derive
    it from the session id (`functions.runtime.tokens`), so the handle can be stored as is.
    """

    session_id: str
    backend: str
    state: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "backend": self.backend, "state": dict(self.state)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeHandle:
        return cls(
            session_id=str(data["session_id"]),
            backend=str(data["backend"]),
            state=dict(data.get("state") or {}),
        )


def spec_env(spec: HarnessSpec) -> dict[str, str]:
    """What the spec says of the harness, as its environment (docs/harness.md), for every
    backend alike; each adds where it runs it (workspace, host, port), the token and the
    credentials in its own way."""
    env = dict(spec.extra_env)
    optional = {
        "VWM_CLI_BIN": spec.cli_bin,
        "VWM_CLI_VERSION": spec.cli_version,
        "VWM_MODEL": spec.model,
        "VWM_PROVIDER_BASE_URL": spec.provider_base_url,
        "VWM_JOB_TIMEOUT_S": None if spec.job_timeout_s is None else f"{spec.job_timeout_s:g}",
    }
    env.update({name: value for name, value in optional.items() if value is not None})
    if spec.git_allow_local:  # harness-side half of the repo URL policy (gitops)
        env["VWM_GIT_ALLOW_LOCAL"] = "1"
    env.update({"VWM_SESSION_ID": spec.session_id, "VWM_CLI": spec.cli})
    if spec.worker:  # names the agent in the harness's traces
        env["VWM_WORKER"] = spec.worker
    return env


@runtime_checkable
class RuntimeBackend(Protocol):
    """Provision, find and tear down one harness per session.

    Every method may raise a `functions.runtime.errors.RuntimeBackendError`; its `retryable`
    says whether the same call may succeed later.
    """

    kind: str
    """The name stored in `RuntimeHandle.backend` (``"local"``, ``"knative"``)."""

    async def provision(self, spec: HarnessSpec) -> RuntimeHandle:
        """Create the session's workspace and start its harness; do not wait for it to be ready.

        Raises `SessionExists` if the session already has a workspace here."""
        ...

    async def wait_ready(self, handle: RuntimeHandle, timeout_s: float) -> HarnessEndpoint:
        """Poll ``GET /healthz`` until the harness answers as the right CLI and accepts the token.

        Raises `HarnessStartFailed` (it exited; with its log tail) or `HarnessNotReady` (timed
        out)."""
        ...

    def endpoint(self, handle: RuntimeHandle) -> HarnessEndpoint:
        """The URL and token of the harness, without checking that it answers."""
        ...

    async def status(self, handle: RuntimeHandle) -> HarnessStatus: ...

    async def ensure_running(self, handle: RuntimeHandle, spec: HarnessSpec) -> RuntimeHandle:
        """Relaunch the harness on the same workspace if it is gone, stopped, or does not answer
        (a harness past its startup grace gets one probe). A hung harness is killed outright: it
        must not wake up and act on requests it read while hung.

        Returns the handle to persist from now on (it may name a new pid or port; the token
        stays). The harness may still be starting: call `wait_ready` next. Raises `HarnessMissing`
        when the workspace itself is gone."""
        ...

    async def teardown(self, handle: RuntimeHandle, *, keep_workspace: bool = False) -> None:
        """Stop the harness (SIGTERM, grace, SIGKILL) and remove the workspace unless asked to
        keep it. Idempotent: tearing down what is already gone succeeds."""
        ...

    async def sweep(self, still_owned: StillOwned) -> list[str]:
        """Stop every harness (and what it started) of a session that may no longer run,
        leaving workspaces alone; returns the ids of the sessions stopped.

        The harnesses are listed first and `still_owned` is asked afterwards which of their
        sessions may run (provisioning, ready, ending): a session's row is written before its
        harness starts, so one starting during the sweep is either not on the list or already
        owned. Asking first would take a harness launched in between for an orphan."""
        ...


@runtime_checkable
class VolumeKeeper(Protocol):
    """A backend whose workspaces are objects of their own that outlive a harness (Knative's
    claims), so one left behind costs storage until someone removes it. The reconciler lists
    them first, then reads which sessions may still need theirs, and removes the others."""

    async def volumes(self) -> dict[str, str]:
        """The session volumes there are, by session id (the value names the volume)."""
        ...

    async def remove_volumes(self, session_ids: Collection[str]) -> list[str]:
        """Delete the volumes of these sessions, as the volume retention setting allows;
        returns the ids whose volume was deleted."""
        ...


# The mark of a harness stopped for being idle (`IdleStopper.stop_idle`), in its handle's state:
# it is meant to be down, so nothing takes it for a harness that died (the reconciler leaves it
# alone) and the next call that needs it relaunches it (`session_runtime.harness_of`).
IDLE_STOPPED = "idle_stopped"


def idle_stopped(handle: RuntimeHandle) -> bool:
    return bool(handle.state.get(IDLE_STOPPED))


def marked_idle(handle: RuntimeHandle, mark: bool = True) -> RuntimeHandle:
    """`handle` with the idle mark set (or taken off)."""
    state = {key: value for key, value in handle.state.items() if key != IDLE_STOPPED}
    if mark:
        state[IDLE_STOPPED] = True
    return RuntimeHandle(session_id=handle.session_id, backend=handle.backend, state=state)


@runtime_checkable
class IdleStopper(Protocol):
    """A backend whose harnesses do not scale to zero by themselves (local processes; Knative's
    autoscaler does it for its Services). The reconciler stops a harness idle past
    ``VWM_HARNESS_IDLE_S``, keeping its workspace, as Knative would scale its pod to zero."""

    def uptime_s(self, handle: RuntimeHandle) -> float | None:
        """How long the harness has been up (None: it is not running): one relaunched a moment
        ago for a files call is not idle yet, however old the session's last job."""
        ...

    async def stop_idle(self, handle: RuntimeHandle) -> RuntimeHandle:
        """Stop the harness (SIGTERM, grace, SIGKILL), keep its workspace, and return the handle
        to persist: `idle_stopped`, so that `ensure_running` brings it back."""
        ...


@dataclass(frozen=True)
class PoolShape:
    """What a runtime fixes of its harnesses' Services: its image, CPU and memory (None: the
    backend's default). A warm pool serves one shape."""

    image: str | None = None
    cpu: str | None = None
    memory: str | None = None

    @classmethod
    def of(cls, spec: HarnessSpec) -> PoolShape:
        return cls(spec.image, spec.cpu, spec.memory)


@runtime_checkable
class ServicePooling(Protocol):
    """A backend that keeps harnesses made ahead per runtime shape in the cluster (Knative's
    warm Services). The reconciler fills the pools of the runtimes there are."""

    async def fill_pools(self, shapes: Collection[PoolShape]) -> int:
        """Make what the pools of `shapes` lack, remove the members of any other shape;
        returns how many members were made."""
        ...


@runtime_checkable
class WarmPooling(Protocol):
    """A backend that keeps harnesses started ahead of any session (the local backend's warm
    pool). `vwm up` starts them; the services' shutdown stops the ones no session claimed."""

    def start_pool(self) -> None: ...

    def close(self) -> None: ...
