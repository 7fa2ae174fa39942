"""The local runtime backend: each session's harness is a ``python -m harness`` process.

Used by the embedded default (``vwm up``) through the `RuntimeBackend` contract of
`functions.runtime.base`. Layout under `data_dir`::

    sessions/<session_id>/workspace/   the session's volume (VWM_WORKSPACE)
    logs/<session_id>.log              the harness's stdout and stderr, appended per launch

Harnesses outlive the control plane: each runs in a session of its own (its own process group,
away from the terminal's Ctrl-C) and is never killed when this process exits. While this process
is the parent, a thread per harness waits for it, so none is left a zombie; after a restart the
harness is found again from the persisted state (pid, start time, port) and relaunched on the
same workspace if it is gone. The harness token is derived from the session id
(`functions.runtime.tokens`), never stored. Session folders and logs are private (0700/0600) and
the harness runs with umask 077.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from functions.metrics import HARNESS_RESTARTS, HARNESS_STARTS
from functions.private_files import open_private_append, private_dir
from functions.runtime import probe, procs
from functions.runtime.base import (
    RESERVED_ENV,
    SESSION_ID,
    HarnessEndpoint,
    HarnessSpec,
    HarnessStatus,
    RuntimeHandle,
    StillOwned,
    checked_session_id,
    marked_idle,
    spec_env,
)
from functions.runtime.errors import (
    HarnessMissing,
    HarnessNotReady,
    HarnessStartFailed,
    InvalidHarnessSpec,
    SandboxUnavailable,
    SessionExists,
    TeardownFailed,
)
from functions.runtime.rules import unapplied_fields
from functions.runtime.sandbox import SandboxChoice
from functions.runtime.tokens import TokenKey
from functions.runtime.warm_pool import REFILL_DELAY_S, Member, WarmPool

# Not secrets, and what the harness passes on to the CLI. Nothing else of this process's
# environment reaches a harness but npm's own settings (`_is_npm_setting`): the control plane's
# own keys stay here.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")

logger = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 4000
_POLL_S = 0.05


class LocalBackend:
    kind = "local"

    def __init__(
        self,
        data_dir: Path,
        python: str = sys.executable,
        harness_module: str = "harness",
        log_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        inherit_env: Sequence[str] = INHERITED_ENV,
        stop_grace_s: float = 15.0,
        startup_grace_s: float = 30.0,
        probe_timeout_s: float = 2.0,
        niceness: int = 10,
        token_key: TokenKey | None = None,
        sandbox: SandboxChoice | None = None,
        sandbox_hide: Sequence[Path] = (),
        warm_harnesses: int = 0,
    ) -> None:
        """`stop_grace_s`: SIGTERM → SIGKILL grace at teardown (the harness itself allows 10 s
        to finish requests). `startup_grace_s`: how long `ensure_running` lets a live harness
        come up before it counts as hung and is replaced. `token_key`: what the harness tokens
        are derived from; by default the key file in `data_dir`, made on first use. `sandbox`:
        whether harnesses confine their CLI in bubblewrap (`functions.runtime.sandbox`; default
        unconfined); the CLI never sees `data_dir`, `log_dir` nor `sandbox_hide`.
        `warm_harnesses`: how many harness processes to keep started ahead of any session
        (`functions.runtime.warm_pool`); `start_pool` starts them, `close` stops them."""
        self.data_dir = Path(data_dir).resolve()
        self.log_dir = Path(log_dir).resolve() if log_dir else self.data_dir / "logs"
        self._python = python
        self._module = harness_module
        self._host = host
        self._inherit_env = tuple(inherit_env)
        self._stop_grace_s = stop_grace_s
        self._startup_grace_s = startup_grace_s
        self._probe_timeout_s = probe_timeout_s
        # Agents are batch work: on a shared machine the API must stay responsive while many
        # CLIs start at once, so harnesses (and the CLIs they start) run at a lower priority.
        nice = shutil.which("nice") if niceness else None
        self._launcher = [nice, "-n", str(niceness)] if nice else []
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._token_key = token_key
        self.sandbox = sandbox or SandboxChoice.off()
        self._sandbox_hide = (self.data_dir, self.log_dir, *map(Path, sandbox_hide))
        self.pool = (
            WarmPool(
                warm_harnesses,
                self.data_dir / "pool",
                [*self._launcher, self._python, "-m", f"{self._module}.pooled"],
                procs.inherited_environment(self._inherit_env),
                self.log_dir / "pool.log",
            )
            if warm_harnesses > 0
            else None
        )

    def start_pool(self) -> None:
        """Start the warm pool's members (in the background: a session never waits for it)."""
        if self.pool is not None:
            self.pool.start()

    def close(self) -> None:
        """Stop the warm pool's unclaimed members. Harnesses of sessions go on running."""
        if self.pool is not None:
            self.pool.close()

    # -- where things are ----------------------------------------------------------------------

    def workspace(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / checked_session_id(session_id) / "workspace"

    def log_path(self, session_id: str) -> Path:
        return self.log_dir / f"{checked_session_id(session_id)}.log"

    # -- the contract --------------------------------------------------------------------------

    async def provision(self, spec: HarnessSpec) -> RuntimeHandle:
        _check_spec(spec)
        unapplied = unapplied_fields(self.kind, image=spec.image, cpu=spec.cpu, memory=spec.memory)
        if unapplied:  # the runtime says it, this backend does not do it: say so once
            logger.warning(
                "runtime fields ignored by the local backend",
                extra={"session_id": spec.session_id, "ignored": list(unapplied)},
            )
        self._check_sandbox(spec.session_id)
        async with self._lock(spec.session_id):
            workspace = self.workspace(spec.session_id)
            if await asyncio.to_thread(workspace.exists):
                raise SessionExists(
                    f"session {spec.session_id} already has a workspace at {workspace}; use its "
                    "handle (ensure_running), or tear it down first",
                    session_id=spec.session_id,
                )
            try:
                return await asyncio.to_thread(self._launch, spec)
            except HarnessStartFailed:
                await asyncio.to_thread(_remove_tree, workspace.parent)
                raise

    async def wait_ready(self, handle: RuntimeHandle, timeout_s: float) -> HarnessEndpoint:
        self._check_handle(handle, needs=("pid", "cli"))
        endpoint = self.endpoint(handle)
        deadline = time.monotonic() + timeout_s
        async with probe.client(self._probe_timeout_s) as http:
            while True:
                if not _running(handle):
                    raise await self._start_failed(handle)
                remaining = deadline - time.monotonic()
                probe_s = min(self._probe_timeout_s, max(remaining, _POLL_S))
                if await probe.answers(http, endpoint, handle.state["cli"], probe_s):
                    return endpoint
                if time.monotonic() >= deadline:
                    raise HarnessNotReady(
                        f"the harness of session {handle.session_id} did not answer on "
                        f"{endpoint.url} within {timeout_s:g} s; wait longer or call "
                        "ensure_running to replace it",
                        session_id=handle.session_id,
                        log_tail=await asyncio.to_thread(_log_tail, handle),
                    )
                await asyncio.sleep(_POLL_S * 2)

    def endpoint(self, handle: RuntimeHandle) -> HarnessEndpoint:
        self._check_handle(handle, needs=("host", "port"))
        state = handle.state
        url = f"http://{state['host']}:{state['port']}"
        return HarnessEndpoint(url=url, token=self._token(handle.session_id))

    async def status(self, handle: RuntimeHandle) -> HarnessStatus:
        self._check_handle(handle)
        # A stopped process (SIGSTOP) serves nothing until SIGCONT: `ensure_running` replaces
        # it. Read from /proc, so a prompt pays no probe for a harness that is fine.
        if await asyncio.to_thread(_serving, handle):
            return "running"
        if await asyncio.to_thread(_running, handle):
            return "stopped"
        workspace = self.workspace(handle.session_id)
        return "stopped" if await asyncio.to_thread(workspace.is_dir) else "missing"

    async def ensure_running(self, handle: RuntimeHandle, spec: HarnessSpec) -> RuntimeHandle:
        self._check_handle(handle)
        _check_spec(spec)
        self._check_sandbox(spec.session_id)
        if spec.session_id != handle.session_id:
            raise InvalidHarnessSpec(
                f"the spec is for session {spec.session_id}, the handle for {handle.session_id}",
                session_id=handle.session_id,
            )
        async with self._lock(handle.session_id):
            workspace = self.workspace(handle.session_id)
            if not await asyncio.to_thread(workspace.is_dir):
                raise HarnessMissing(
                    f"the workspace of session {handle.session_id} ({workspace}) is gone; the "
                    "session cannot be revived, end it",
                    session_id=handle.session_id,
                )
            if (
                _running(handle)
                and not _stopped(handle)
                and await self._answers_within(handle, self._grace_left(handle))
            ):
                return marked_idle(_without_token(handle), False)
            # Dead, stopped, or alive but mute: stop what is left of it (its CLI may still be
            # writing into the workspace), then start afresh on a new port (the old one may be
            # taken now). A hung harness gets no SIGCONT nor SIGTERM grace: woken, it would first
            # act on the requests it had buffered (a job start nobody waits for any more).
            await self._stop(handle, hung=True)
            HARNESS_RESTARTS.inc()
            return await asyncio.to_thread(self._launch, spec)

    async def teardown(self, handle: RuntimeHandle, *, keep_workspace: bool = False) -> None:
        self._check_handle(handle)
        async with self._lock(handle.session_id):
            await self._stop(handle)
            if not keep_workspace:
                session_dir = self.workspace(handle.session_id).parent
                try:
                    await asyncio.to_thread(_remove_tree, session_dir)
                except OSError as exc:
                    raise TeardownFailed(
                        f"could not remove {session_dir}: {exc}; tear down again",
                        session_id=handle.session_id,
                    ) from exc

    def uptime_s(self, handle: RuntimeHandle) -> float | None:
        self._check_handle(handle)
        pid = handle.state.get("pid")
        if not isinstance(pid, int) or not _running(handle):
            return None
        launched_at = handle.state.get("launched_at")
        if isinstance(launched_at, (int, float)):
            return max(0.0, time.time() - launched_at)
        return procs.age_s(pid)  # a handle stored before launches were stamped

    async def stop_idle(self, handle: RuntimeHandle) -> RuntimeHandle:
        await self.teardown(handle, keep_workspace=True)
        return marked_idle(_without_token(handle))

    async def sweep(self, still_owned: StillOwned) -> list[str]:
        """Stop the processes of every session that may no longer run: harnesses and CLIs
        that no live session owns (left by a control plane that died between a launch and the
        session's end, or whose row is gone). Workspaces stay; removing them is the session's
        end. Returns the ids of the sessions whose processes were stopped."""
        found = await asyncio.to_thread(procs.processes_by_session, self.data_dir / "sessions")
        if not found:
            return []
        owned = set(await still_owned(set(found)))
        stopped: list[str] = []
        for session_id in sorted(set(found) - owned):
            if not SESSION_ID.fullmatch(session_id):
                continue  # not a folder this backend made
            async with self._lock(session_id):
                await self._stop(RuntimeHandle(session_id=session_id, backend=self.kind))
            stopped.append(session_id)
        return stopped

    # -- launching -----------------------------------------------------------------------------

    def _launch(self, spec: HarnessSpec) -> RuntimeHandle:
        """Start a harness (blocking: run it in a thread). The caller holds the session lock."""
        token = self._token(spec.session_id)
        workspace = self.workspace(spec.session_id)
        private_dir(self.data_dir)
        private_dir(workspace.parent.parent)  # sessions/
        private_dir(workspace.parent)
        workspace.mkdir(exist_ok=True)
        log_path = self.log_path(spec.session_id)
        private_dir(log_path.parent)
        # Bound and listening here, and handed to the harness: the port is ours from the pick
        # on, so no other launch can take it in the second the harness takes to start.
        listener = procs.listening_socket(self._host)
        port = int(listener.getsockname()[1])
        # Our copy is closed once the harness has its own, and on every way out before that.
        with listener, open_private_append(log_path) as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n=== vwm: harness launch {stamp} on port {port} ===\n".encode())
            log.flush()
            log_offset = log.tell()
            env = self._harness_env(spec, workspace, port, token, listener.fileno())
            member = self._from_pool(workspace, env, listener, log.fileno())
            proc = member.proc if member else self._start_cold(spec, workspace, env, listener, log)
        HARNESS_STARTS.labels(start="warm" if member else "cold").inc()
        self._children[proc.pid] = proc
        state: dict[str, Any] = {
            "workspace": str(workspace),
            "log": str(log_path),
            "log_offset": log_offset,
            "host": self._host,
            "port": port,
            "pid": proc.pid,
            "pid_start": procs.start_ticks(proc.pid),
            # When it became this session's harness: a warm pool member's process is older.
            "launched_at": time.time(),
            "cli": spec.cli,
        }
        if member is not None:  # its folder goes when this harness stops (`_stop`)
            state["pool_member"] = str(member.folder)
        return RuntimeHandle(session_id=spec.session_id, backend=self.kind, state=state)

    def _from_pool(
        self, workspace: Path, env: dict[str, str], listener: socket.socket, log_fd: int
    ) -> Member | None:
        """A warm pool member made this session's harness (None: the pool has none left), and
        a replacement started."""
        if self.pool is None:
            return None
        member = self.pool.take()
        # Later, not now: the claimed harness starts and bootstraps meanwhile (`REFILL_DELAY_S`).
        self.pool.fill_in_background(REFILL_DELAY_S if member is not None else 0.0)
        if member is None:
            return None
        try:
            self.pool.hand_over(member, workspace, env, workspace.parent, listener, log_fd)
        except OSError:
            return None  # it died a moment ago: launch cold
        return member

    def _start_cold(
        self,
        spec: HarnessSpec,
        workspace: Path,
        env: dict[str, str],
        listener: socket.socket,
        log: BinaryIO,
    ) -> subprocess.Popen[bytes]:
        try:
            return procs.start_harness_process(
                [*self._launcher, self._python, "-m", self._module],
                cwd=workspace.parent,
                env=env,
                log_fd=log.fileno(),
                keep_fd=listener.fileno(),
            )
        except OSError as exc:
            raise HarnessStartFailed(
                f"could not run {self._python} -m {self._module}: {exc}",
                session_id=spec.session_id,
                log_tail="",
            ) from exc

    def _harness_env(
        self, spec: HarnessSpec, workspace: Path, port: int, token: str, listen_fd: int
    ) -> dict[str, str]:
        env = procs.inherited_environment(self._inherit_env)
        # npm's own settings (a private registry, its CA, its credentials): the harness installs
        # the runtime's pinned CLI version with npm when the machine's CLI is another version.
        env.update({name: v for name, v in os.environ.items() if _is_npm_setting(name)})
        env.update(spec_env(spec))
        env.update(spec.credential_env)
        env.update(self.sandbox.harness_env(hide=self._sandbox_hide))
        env.update(
            {
                "VWM_WORKSPACE": str(workspace),
                "VWM_HARNESS_HOST": self._host,
                "VWM_HARNESS_PORT": str(port),
                "VWM_HARNESS_LISTEN_FD": str(listen_fd),
                "VWM_SESSION_TOKEN": token,
                # One memo for every harness here: a CLI's --version is asked once per
                # executable, not once per session (`harness.cli_version_memo`).
                "VWM_CLI_VERSION_MEMO": str(self.data_dir / "cli-versions.json"),
            }
        )
        return env

    # -- stopping ------------------------------------------------------------------------------

    async def _stop(self, handle: RuntimeHandle, *, hung: bool = False) -> None:
        """SIGTERM the harness's group, SIGKILL it after the grace (at once if it is `hung`),
        then kill whatever else still runs for the workspace (a CLI in its own group). Raises
        `TeardownFailed` if some survive."""
        pid, started = handle.state.get("pid"), handle.state.get("pid_start")
        if isinstance(pid, int) and hung and _running(handle):
            procs.signal_group(pid, signal.SIGKILL)
            await _until(lambda: not procs.is_running(pid, started), 5.0)
        elif isinstance(pid, int) and _running(handle):
            procs.signal_group(pid, signal.SIGTERM)
            procs.signal_group(pid, signal.SIGCONT)  # a stopped (SIGSTOP) harness must see it
            if not await _until(lambda: not procs.is_running(pid, started), self._stop_grace_s):
                procs.signal_group(pid, signal.SIGKILL)
                await _until(lambda: not procs.is_running(pid, started), 5.0)
        elif isinstance(pid, int) and procs.start_ticks(pid) is None:
            # The leader is gone. Its pid cannot be reused while its group still has members,
            # so signalling the group reaches only what it left behind.
            procs.signal_group(pid, signal.SIGKILL)
        workspace = self.workspace(handle.session_id)

        def leftovers() -> list[int]:
            return procs.processes_in(workspace)

        killed: set[int] = set()

        def kill_leftovers() -> bool:
            for leftover in leftovers():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(leftover, signal.SIGKILL)
                killed.add(leftover)
            # A process that is exiting has no environment to be found by any more, yet it is
            # not gone: wait until each one killed has exited.
            killed.difference_update([p for p in killed if procs.start_ticks(p) is None])
            return not killed and not leftovers()

        if not await _until(kill_leftovers, 10.0, blocking=True):
            raise TeardownFailed(
                f"processes {leftovers()} of session {handle.session_id} survived SIGKILL; "
                "tear down again",
                session_id=handle.session_id,
            )
        if isinstance(pid, int):
            self._children.pop(pid, None)
        if member_folder := handle.state.get("pool_member"):
            await asyncio.to_thread(shutil.rmtree, member_folder, True)

    # -- helpers -------------------------------------------------------------------------------

    def _check_sandbox(self, session_id: str) -> None:
        if self.sandbox.refused:
            raise SandboxUnavailable(self.sandbox.refusal(), session_id=session_id)

    def _token(self, session_id: str) -> str:
        if self._token_key is None:  # read (or made) on first use: the folder may not exist yet
            self._token_key = TokenKey.in_folder(self.data_dir)
        return self._token_key.token(session_id)

    def _grace_left(self, handle: RuntimeHandle) -> float:
        """How long a live harness may still take to answer: what is left of its startup grace
        (it may be starting), at least one probe (an older one had its chance)."""
        age = procs.age_s(handle.state["pid"]) if isinstance(handle.state.get("pid"), int) else None
        left = self._startup_grace_s - age if age is not None else self._startup_grace_s
        return max(self._probe_timeout_s, left)

    async def _answers_within(self, handle: RuntimeHandle, timeout_s: float) -> bool:
        # A harness of ours that refuses the token was started under another key (or before
        # tokens were derived): it will never accept this one, so do not wait for it.
        async with probe.client(self._probe_timeout_s) as http:
            endpoint = self.endpoint(handle)
            cli = str(handle.state.get("cli"))
            if await probe.refuses_token(http, endpoint, cli, self._probe_timeout_s):
                return False
        try:
            await self.wait_ready(handle, timeout_s)
        except (HarnessStartFailed, HarnessNotReady):
            return False
        return True

    async def _start_failed(self, handle: RuntimeHandle) -> HarnessStartFailed:
        exit_code = None
        if (child := self._children.get(handle.state.get("pid", -1))) is not None:
            await _until(lambda: child.returncode is not None, 2.0)  # the reaper thread sets it
            exit_code = child.returncode
        tail = await asyncio.to_thread(_log_tail, handle)
        return HarnessStartFailed(
            f"the harness of session {handle.session_id} exited (code {exit_code}) before it "
            "was ready; the log tail below says why",
            session_id=handle.session_id,
            log_tail=tail,
            exit_code=exit_code,
            # A harness that binds its port itself (not this one: it serves on the socket the
            # launch bound) may find it taken by another program: a retry picks anew.
            retryable="address already in use" in tail.lower(),
        )

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def _check_handle(self, handle: RuntimeHandle, needs: Sequence[str] = ()) -> None:
        """Teardown and status need only the session id (a handle whose state was lost still
        tears down); the rest needs what provision recorded."""
        checked_session_id(handle.session_id)
        missing = [key for key in needs if key not in handle.state]
        if handle.backend != self.kind or missing:
            raise InvalidHarnessSpec(
                f"the {handle.backend!r} handle of session {handle.session_id} cannot be used "
                f"by the {self.kind!r} backend (missing: {', '.join(missing) or 'nothing'}); "
                "pass the handle that provision or ensure_running returned",
                session_id=handle.session_id,
            )


def _check_spec(spec: HarnessSpec) -> None:
    checked_session_id(spec.session_id)
    clashes = sorted(RESERVED_ENV & (set(spec.extra_env) | set(spec.credential_env)))
    if clashes:
        raise InvalidHarnessSpec(
            f"{', '.join(clashes)} are set by the runtime backend; remove them from the spec",
            session_id=spec.session_id,
        )


def _is_npm_setting(name: str) -> bool:
    """``npm_config_*`` in any case (``NPM_CONFIG_REGISTRY``): npm's configuration by environment."""
    return name.lower().startswith("npm_config_")


def _without_token(handle: RuntimeHandle) -> RuntimeHandle:
    """A handle stored before tokens were derived held the token: drop it on the next save."""
    if "token" not in handle.state:
        return handle
    state = {key: value for key, value in handle.state.items() if key != "token"}
    return RuntimeHandle(session_id=handle.session_id, backend=handle.backend, state=state)


def _stopped(handle: RuntimeHandle) -> bool:
    pid = handle.state.get("pid")
    return isinstance(pid, int) and procs.is_stopped(pid)


def _serving(handle: RuntimeHandle) -> bool:
    """Alive and not stopped: it may answer (it may still be starting, or be mute)."""
    return _running(handle) and not _stopped(handle)


def _running(handle: RuntimeHandle) -> bool:
    pid = handle.state.get("pid")
    return isinstance(pid, int) and procs.is_running(pid, handle.state.get("pid_start"))


def _log_tail(handle: RuntimeHandle) -> str:
    """The end of what this launch of the harness wrote (earlier launches are above it)."""
    try:
        with open(handle.state["log"], "rb") as log:
            start = max(
                int(handle.state.get("log_offset", 0)), log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES
            )
            log.seek(start)
            return log.read().decode(errors="replace")
    except (OSError, KeyError):
        return "(no log)"


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


async def _until(
    condition: Callable[[], bool], timeout_s: float, *, blocking: bool = False
) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; a `blocking` one (a scan of
    ``/proc``) runs in a worker thread, a cheap one in the event loop."""
    deadline = time.monotonic() + timeout_s
    while not (await asyncio.to_thread(condition) if blocking else condition()):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True
