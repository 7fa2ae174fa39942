"""Process and port facts for the local runtime backend (`functions.runtime.local`).

A pid alone does not identify a process across a restart of the control plane: the harness may
have died and its pid been given to another program. So a harness is known by its pid *and* its
start time (clock ticks since boot, field 22 of ``/proc/<pid>/stat``), and a zombie counts as
gone. Everything here is synchronous and cheap; the backend calls it from worker threads.
Without ``/proc`` (macOS) liveness falls back to ``kill(pid, 0)`` and start times are unknown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from eventing.sockets import listening_tcp_socket

_PROC = Path("/proc")
PORT_FLOOR = 20000  # harness ports are picked from here up to the ephemeral range
_HAS_PROC = (_PROC / "self" / "stat").exists()
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from field 3 (the state) on, or None."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return stat[stat.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When `pid` started, or None if there is no live process with that pid (zombies are dead)
    or no ``/proc`` to tell."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):  # zombie or dead: exited, not yet reaped
        return None
    return int(fields[19])


def is_stopped(pid: int) -> bool:
    """True if `pid` is stopped (SIGSTOP, SIGTSTP, a debugger): alive, but it answers nothing
    until someone sends SIGCONT. Unknown without ``/proc``: False."""
    fields = _stat(pid)
    return fields is not None and fields[0] in ("T", "t")


def age_s(pid: int) -> float | None:
    """Seconds since `pid` started, or None if unknown (no such process, no ``/proc``)."""
    ticks = start_ticks(pid)
    try:
        uptime = float((_PROC / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if ticks is None else max(0.0, uptime - ticks / _TICKS_PER_S)


def is_running(pid: int, started: int | None) -> bool:
    """True if `pid` is alive and (when `started` is known) is the same process we launched."""
    if not _HAS_PROC:
        return _exists(pid)
    ticks = start_ticks(pid)
    return ticks is not None and (started is None or ticks == started)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group that is gone already is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def processes_in(workspace: Path) -> list[int]:
    """Our own live processes that belong to a session workspace, found by their environment:
    the harness and its git (``VWM_WORKSPACE=<workspace>``), the CLI and the tools it starts
    (``HOME`` inside the workspace). The CLI runs in a process group of its own, so it outlives a
    SIGKILLed harness; this finds it. The working directory is deliberately not a criterion: a
    person's shell sitting in a workspace is not the session's."""
    root = str(workspace)
    harness_marker = f"VWM_WORKSPACE={root}".encode()
    home_prefix = f"HOME={root}{os.sep}".encode()
    return [
        pid
        for pid, env in _own_processes()
        if harness_marker in env
        or any(var.startswith(home_prefix) or _claimed_by(var) == root for var in env)
    ]


# A warm pool member's mark (`functions.runtime.warm_pool`): the variable naming its folder, where
# its claim (`CLAIM_FILE`) names the workspace it serves. Its environment on /proc is the one it
# started with, before any session.
POOL_MEMBER = "VWM_POOL_MEMBER"
CLAIM_FILE = "workspace"
_POOL_MEMBER = f"{POOL_MEMBER}=".encode()


def _claimed_by(var: bytes) -> str | None:
    """The workspace a pool member's claim names, if `var` is its mark and it was claimed."""
    if not var.startswith(_POOL_MEMBER):
        return None
    folder = var[len(_POOL_MEMBER) :].decode(errors="replace")
    try:
        return Path(folder, CLAIM_FILE).read_text(encoding="utf-8")
    except OSError:
        return None


def pool_members(pool_dir: Path) -> dict[str, int]:
    """Live pool members under `pool_dir` (claimed or not), by member folder."""
    root = f"{pool_dir}{os.sep}".encode()
    found: dict[str, int] = {}
    for pid, env in _own_processes():
        for var in env:
            if var.startswith(_POOL_MEMBER + root):
                found[var[len(_POOL_MEMBER) :].decode(errors="replace")] = pid
                break
    return found


def processes_by_session(sessions_dir: Path) -> dict[str, list[int]]:
    """Our own live processes under ``<sessions_dir>/<session id>/workspace``, by session id,
    found as `processes_in` finds them, in one pass over ``/proc`` (the reconciler asks for all
    sessions at once)."""
    root = f"{sessions_dir}{os.sep}"
    markers = (b"VWM_WORKSPACE=" + root.encode(), b"HOME=" + root.encode())
    found: dict[str, list[int]] = {}
    for pid, env in _own_processes():
        for var in env:
            claimed = _claimed_by(var)  # a pool member's mark stands for the workspace it serves
            mark = var if claimed is None else b"VWM_WORKSPACE=" + claimed.encode()
            if mark.startswith(markers):
                rest = mark.split(b"=", 1)[1][len(root) :].decode(errors="replace")
                session_id, _, below = rest.partition(os.sep)
                if below == "workspace" or below.startswith(f"workspace{os.sep}"):
                    found.setdefault(session_id, []).append(pid)
                break
    return found


def inherited_environment(inherit: Sequence[str]) -> dict[str, str]:
    """What every harness process starts with, of this process's environment: the `inherit`
    variables that are set, a UTF-8 `LANG` by default, unbuffered output."""
    env = {name: os.environ[name] for name in inherit if name in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_harness_process(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_fd: int, keep_fd: int
) -> subprocess.Popen[bytes]:
    """A harness process (or a warm pool member, one to be) as the local backend starts them:
    in a session of its own (its own process group, out of reach of the terminal's Ctrl-C),
    stdin from /dev/null, stdout and stderr to `log_fd`, `keep_fd` its only other descriptor
    (it keeps its number), umask 077 (what the harness makes, its state and the CLI's home, is
    private by default; the agent may still loosen what it means to share). A thread waits for
    it, so it never lingers as a zombie while this process is its parent."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        pass_fds=(keep_fd,),
        start_new_session=True,
        umask=0o077,
    )
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def _own_processes() -> Iterator[tuple[int, list[bytes]]]:
    """Each live process of this user but this one, with its environment (``NAME=value``). A
    process that exits while it is read is skipped."""
    if not _HAS_PROC:
        return
    me, uid = os.getpid(), os.getuid()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid or start_ticks(int(entry.name)) is None:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), environ


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours to signal
    return True


def listening_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of `host` and listening, for a harness to serve on
    (it inherits the socket: `functions.runtime.local`). Holding the port from the pick on is
    what keeps two launches at once from picking the same one: a port that is only probed is
    free again until the harness binds it, a second later.

    The port is picked below the kernel's ephemeral range, which is where ``bind(0)`` and every
    outgoing connection take theirs: a harness port there would compete with them (the meter's
    own port, the CLI's calls). Falls back to ``bind(0)`` when no such port is free."""
    first, _ = _ephemeral_range()
    if first - PORT_FLOOR >= 100:
        for _attempt in range(50):
            candidate = PORT_FLOOR + secrets.randbelow(first - PORT_FLOOR)
            with contextlib.suppress(OSError):
                return listening_tcp_socket(host, candidate)
    return listening_tcp_socket(host, 0)


def _ephemeral_range() -> tuple[int, int]:
    try:
        first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(first), int(last)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; IANA's dynamic range starts at 49152
