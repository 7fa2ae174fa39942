"""The local backend's warm pool: harness processes started before any session asks for one
(`harness.pooled`), so that a session's harness skips the start of a Python process and the
imports of a harness, most of what its launch costs.

A member is generic: what makes it a session's harness (the environment: session, CLI, model,
credentials, token; the working directory; the listening socket and the log) is handed to it at
the claim (`hand_over`), over a Unix socket pair only the pool and the member hold, so nothing of
a session (its secrets least of all) is in a member's environment on `/proc` before. One pool
serves every runtime: the runtime's CLI and settings arrive with the claim, and its bootstrap
(repositories, instructions, skills) runs after it, as for a harness launched cold. A member
serves one session and ends with it; it is never given back, so no session ever finds another's
leftovers. The pool starts a replacement for each member taken.

Members are found on `/proc` by ``VWM_POOL_MEMBER=<pool dir>/<member id>`` in their environment,
which is all they have there: the claim writes the session's workspace into
``<pool dir>/<member id>/workspace``, which is how `procs.processes_in` and
`procs.processes_by_session` find a claimed member as they find any harness. The local backend
removes a claimed member's folder when it stops that harness (`pool_member` in its handle); `start`
removes those an earlier process left. An unclaimed member exits when the pool closes its end of
the socket, or when the process holding it dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from functions.private_files import open_private_append, private_dir
from functions.runtime import procs

logger = logging.getLogger(__name__)

POOL_SOCKET_FD = "VWM_POOL_SOCKET_FD"
# How long after a claim its replacement starts. A member's start is a Python process importing
# the harness (about 0.2 s of CPU), and the claimed harness is starting and cloning just then: at
# once, on two cores, the replacement took about a fifth of the claimed session's time to ready.
REFILL_DELAY_S = 0.5


@dataclass
class Member:
    proc: subprocess.Popen[bytes]
    started: int | None  # its start time (`procs.start_ticks`): a pid alone may be reused
    channel: socket.socket  # the pool's end
    folder: Path

    def alive(self) -> bool:
        # Not `proc.poll()`: the reaper thread is in `wait()`, so poll cannot tell.
        return procs.is_running(self.proc.pid, self.started)


class WarmPool:
    """Keeps `size` members started. `take` and `hand_over` run in the launching thread;
    `fill` in any thread (one at a time)."""

    def __init__(
        self,
        size: int,
        folder: Path,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
    ) -> None:
        """`command`: what starts a member (``[nice..., python, "-m", "harness.pooled"]``);
        `env`: its environment before any claim (no secrets); `log_path`: where members write
        until claimed (an import that fails is found there)."""
        self.size = size
        self.folder = folder
        self._command = list(command)
        self._env = dict(env)
        self._log_path = log_path
        self._members: list[Member] = []
        self._lock = threading.Lock()
        self._filling = threading.Lock()
        self._closed = False

    def take(self) -> Member | None:
        """A live member, out of the pool (None: none is left; launch cold)."""
        with self._lock:
            while self._members:
                member = self._members.pop(0)
                if member.alive():
                    return member
                _discard(member)
        return None

    def hand_over(
        self,
        member: Member,
        workspace: Path,
        env: Mapping[str, str],
        cwd: Path,
        listener: socket.socket,
        log_fd: int,
    ) -> None:
        """Make `member` the harness of `workspace`: its claim written first (so it is found
        as the session's from the moment it acts), then its environment and descriptors sent.
        Raises OSError when the member is gone (the caller launches cold)."""
        claim = member.folder / procs.CLAIM_FILE
        with open_private_append(claim) as written:
            written.write(str(workspace).encode())
        message = json.dumps({"env": dict(env), "cwd": str(cwd)}).encode()
        try:
            socket.send_fds(member.channel, [message], [listener.fileno(), log_fd])
        except OSError:
            claim.unlink(missing_ok=True)
            raise
        finally:
            member.channel.close()

    def fill(self) -> None:
        """Start members until there are `size` (blocking: a few ms per member)."""
        with self._filling:
            while not self._closed:
                with self._lock:
                    if len(self._members) >= self.size:
                        return
                try:
                    member = self._start()
                except OSError as exc:
                    logger.warning("could not start a warm harness", extra={"error": str(exc)})
                    return
                with self._lock:
                    if self._closed:
                        _discard(member)
                        return
                    self._members.append(member)

    def fill_in_background(self, delay_s: float = 0.0) -> None:
        """`fill` in a thread of its own, `delay_s` from now."""
        refill = threading.Timer(delay_s, self.fill)
        refill.name, refill.daemon = "warm-pool-fill", True
        refill.start()

    def start(self) -> None:
        """Remove what earlier runs left (the folders of members that are gone: a claimed
        member's is removed when its harness stops, unless this process died first), then fill,
        in the background."""

        def start() -> None:
            self._remove_gone(set(procs.pool_members(self.folder)))
            self.fill()

        threading.Thread(target=start, name="warm-pool-start", daemon=True).start()

    def close(self) -> None:
        """Unclaimed members exit (their socket closes); they are waited for, then killed."""
        with self._lock:
            self._closed = True
            members, self._members = self._members, []
        for member in members:
            member.channel.close()
        for member in members:
            deadline = time.monotonic() + 5
            while member.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if member.alive():
                procs.signal_group(member.proc.pid, signal.SIGKILL)
            shutil.rmtree(member.folder, ignore_errors=True)

    def _remove_gone(self, alive: set[str]) -> None:
        """Remove the folders of members no process is left of (`alive`: the member folders of
        live processes, from `procs.pool_members`)."""
        if not self.folder.is_dir():
            return
        for entry in self.folder.iterdir():
            if entry.is_dir() and str(entry) not in alive:
                shutil.rmtree(entry, ignore_errors=True)

    def _start(self) -> Member:
        for folder in (self.folder.parent, self.folder, self._log_path.parent):
            private_dir(folder)
        folder = self.folder / uuid.uuid4().hex
        private_dir(folder)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**self._env, procs.POOL_MEMBER: str(folder), POOL_SOCKET_FD: str(theirs.fileno())}
        try:
            with theirs, open_private_append(self._log_path) as log:
                proc = procs.start_harness_process(
                    self._command, cwd=folder, env=env, log_fd=log.fileno(), keep_fd=theirs.fileno()
                )
        except OSError:
            ours.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Member(proc, procs.start_ticks(proc.pid), ours, folder)


def _discard(member: Member) -> None:
    with contextlib.suppress(OSError):
        member.channel.close()
    shutil.rmtree(member.folder, ignore_errors=True)
