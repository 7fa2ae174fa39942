"""One `opencode serve` per session: started when the first prompt needs it, kept between prompts.

`opencode run` starts OpenCode's whole runtime for every prompt (about 2 s before the model is
asked, even against a model that answers at once). The server pays that once per harness: each
prompt is then two HTTP requests to it. The job runner (`harness.jobs`) calls `run` with what
the adapter built (`OpencodeAdapter.server_invocation`, `.message`), and gets back what a CLI
process would have given it: the `run --format json` lines (`harness.adapters.opencode_events`),
an exit code and an error text, so the parser, resume and failure handling stay the same.

The server:
- listens on 127.0.0.1 only, on a port it picks, behind a password made here for this process
  (HTTP basic auth); neither is logged or leaves the harness;
- runs confined like any CLI run (`harness.sandbox`), in its own process group;
- is started again when it has died, and when what it read at its start changed (its config,
  the system prompt, the skills, the binary or its environment), since it reads those once;
- is stopped with the harness (`close`, from the lifespan); if the harness is killed outright,
  the kernel stops it (bubblewrap's ``--die-with-parent``, or the parent-death signal set here).

A cancelled or timed-out prompt aborts the session's running message (``POST
/session/{id}/abort``): the server lives on for the next prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.adapters.opencode_events import RunLines
from harness.errors import HarnessError
from harness.meter.sse import SseFramer
from harness.transport import CliNotFound, StderrTail

logger = logging.getLogger(__name__)

# How long a server may take to say where it listens (a first start installs nothing: offline).
START_TIMEOUT_S = 60.0
# After the prompt's answer, how long its last events (up to idle) may take to arrive.
SETTLE_TIMEOUT_S = 10.0
# How long an abort may take; the run ends either way.
ABORT_TIMEOUT_S = 5.0
USERNAME = "opencode"  # the server's fixed basic-auth user
_LISTENING = re.compile(rb"listening on (http://127\.0\.0\.1:\d+)")
# Unknown resume id: the same words `opencode run --session` fails with, so that
# `OpencodeAdapter.is_unknown_session` recognizes both.
SESSION_NOT_FOUND = "Session not found"
_PR_SET_PDEATHSIG = 1
# Looked up now, not in the forked child: `_die_with_parent` then only calls it.
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the lifespan's close is all there is
    _prctl = None


class _HideServerRequests(logging.Filter):
    """httpx logs each request's URL at INFO; the server's address is the harness's business
    only (and a request line per prompt step would drown the job's own log lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage() if self.urls else ""
        return not any(url in message for url in self.urls)


_HIDDEN = _HideServerRequests()
logging.getLogger("httpx").addFilter(_HIDDEN)


class CliServerFailed(HarnessError):
    """The CLI's server could not be started; its output says why."""

    status = 502
    code = "cli_server_failed"


class _Unreachable(CliServerFailed):
    """The server took no subscription: it is gone, whatever its process handle says. Caught
    once, to start a new server; the second time it is a `CliServerFailed`."""

    code = "cli_server_unreachable"


@dataclass(frozen=True)
class ServerInvocation:
    """How to start the server: argv, the full environment, and the files it reads once at its
    start (a change to any of them means a new server)."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    watched: tuple[Path, ...] = ()


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    error_text: str  # what a CLI process would have written to stderr


class OpencodeServer:
    def __init__(
        self,
        *,
        sandboxed: Callable[[Sequence[str], Path], list[str]],
        kill_grace_s: float,
        stderr_tail_bytes: int,
    ) -> None:
        self._sandboxed = sandboxed
        self._kill_grace_s = kill_grace_s
        self._stderr_tail_bytes = stderr_tail_bytes
        self._proc: asyncio.subprocess.Process | None = None
        self._output: asyncio.Task[None] | None = None
        self._stderr = StderrTail(stderr_tail_bytes)
        self._client: httpx.AsyncClient | None = None
        self._fingerprint: str | None = None
        self._lock = asyncio.Lock()
        self.starts = 0  # servers started by this harness (a restart counts)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    # -- the prompt ---------------------------------------------------------------------------

    async def run(
        self,
        server: ServerInvocation,
        *,
        resume_id: str | None,
        new_session: dict[str, Any],
        message: dict[str, Any],
        on_line: Callable[[dict[str, Any]], None],
    ) -> RunOutcome:
        """One prompt on the server, from subscribing to its events to the session going idle.
        `on_line` gets each `run --format json` line as it is made. A server that cannot be
        reached (it died since the last prompt, unseen yet) is started again once."""
        args = (resume_id, new_session, message, on_line)
        try:
            return await self._prompt(await self.ensure(server), *args)
        except _Unreachable as exc:
            logger.info("opencode server restarting", extra={"reason": f"unreachable: {exc}"})
        try:
            return await self._prompt(await self.ensure(server, restart=True), *args)
        except _Unreachable as exc:
            raise CliServerFailed(
                f"the opencode server does not answer ({exc}); its output: "
                + (self._stderr.text().strip() or "(none)")
            ) from None

    async def _prompt(
        self,
        client: httpx.AsyncClient,
        resume_id: str | None,
        new_session: dict[str, Any],
        message: dict[str, Any],
        on_line: Callable[[dict[str, Any]], None],
    ) -> RunOutcome:
        async with contextlib.AsyncExitStack() as stack:
            try:
                sub = await stack.enter_async_context(
                    client.stream("GET", "/event", timeout=httpx.Timeout(None, connect=5.0))
                )
                events = _events(sub)
                await anext(events)  # server.connected: subscribed before the prompt is sent
            except (httpx.TransportError, StopAsyncIteration) as exc:
                raise _Unreachable(type(exc).__name__) from exc
            if resume_id is not None:
                found = await client.get(f"/session/{resume_id}")
                if found.status_code == 404:
                    return RunOutcome(1, f"Error: {SESSION_NOT_FOUND}: {resume_id}")
                _check(found, "read the session")
                session_id = resume_id
            else:
                created = await client.post("/session", json=new_session)
                _check(created, "create a session")
                session_id = created.json()["id"]
            lines = RunLines(session_id)
            reader = asyncio.create_task(self._follow(client, events, lines, on_line))
            try:
                answer = await client.post(
                    f"/session/{session_id}/message", json=message, timeout=None
                )
                if answer.is_error:
                    on_line(lines.error_line(_error_of(answer), _now_ms()))
                    return RunOutcome(1, f"the server answered HTTP {answer.status_code}")
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    await asyncio.shield(reader)
            except (asyncio.CancelledError, TimeoutError):
                await self._abort(client, session_id)
                raise
            except httpx.TransportError as exc:
                return await self._lost(exc)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
        return RunOutcome(0, "")

    async def _follow(
        self,
        client: httpx.AsyncClient,
        events: AsyncIterator[dict[str, Any]],
        lines: RunLines,
        on_line: Callable[[dict[str, Any]], None],
    ) -> None:
        async for event in events:
            if (request_id := lines.permission_to_approve(event)) is not None:
                # Unattended, as `run --auto`: every permission not denied outright is granted.
                await client.post(f"/permission/{request_id}/reply", json={"reply": "once"})
            for line in lines.feed(event, _now_ms()):
                on_line(line)
            if lines.idle:
                return
        raise httpx.RemoteProtocolError("the server's event stream ended before the prompt did")

    async def _abort(self, client: httpx.AsyncClient, session_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError, TimeoutError):
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                await asyncio.shield(client.post(f"/session/{session_id}/abort"))

    async def _lost(self, exc: httpx.TransportError) -> RunOutcome:
        """The server went away mid-prompt: report it as a CLI that exited; the next prompt
        starts a new server."""
        code = None
        if self._proc is not None:
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(self._proc.wait(), 2.0)
        logger.warning(
            "opencode server lost during a prompt", extra={"exit_code": code, "error": str(exc)}
        )
        tail = self._stderr.text()
        text = f"the opencode server stopped answering ({type(exc).__name__})"
        return RunOutcome(code if code is not None else 1, f"{text}\n{tail}".strip())

    # -- the process --------------------------------------------------------------------------

    async def ensure(self, server: ServerInvocation, *, restart: bool = False) -> httpx.AsyncClient:
        """A running server started from `server`: the one there is, or a new one."""
        async with self._lock:
            fingerprint = _fingerprint(server)
            alive = self._proc is not None and self._proc.returncode is None
            client = self._client
            if alive and client is not None and fingerprint == self._fingerprint and not restart:
                return client
            if self._proc is not None:
                reason = "unreachable" if restart else "changed" if alive else "exited"
                logger.info(
                    "opencode server restarting",
                    extra={"reason": reason, "exit_code": self._proc.returncode},
                )
                await self._stop()
            return await self._start(server, fingerprint)

    async def _start(self, server: ServerInvocation, fingerprint: str) -> httpx.AsyncClient:
        password = secrets.token_urlsafe(24)
        started = time.monotonic()
        self._stderr = StderrTail(self._stderr_tail_bytes)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._sandboxed(server.argv, server.cwd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=server.cwd,
                env={**server.env, "OPENCODE_SERVER_PASSWORD": password},
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only calls a function looked up before the fork
            )
        except FileNotFoundError:
            raise CliNotFound(
                f"the CLI binary {server.argv[0]!r} was not found; install the CLIs "
                "(./task install) or set VWM_CLI_BIN",
                binary=server.argv[0],
            ) from None
        self._proc = proc
        url = await self._listening(proc)
        _HIDDEN.urls.add(url)
        self._output = asyncio.create_task(self._drain(proc), name="opencode-server-output")
        self._client = httpx.AsyncClient(
            base_url=url,
            auth=(USERNAME, password),
            timeout=httpx.Timeout(30.0, connect=5.0),
            trust_env=False,  # loopback: never through a proxy the environment names
        )
        self._fingerprint = fingerprint
        self.starts += 1
        logger.info(
            "opencode server started",
            extra={"pid": proc.pid, "ms": round((time.monotonic() - started) * 1000)},
        )
        return self._client

    async def _listening(self, proc: asyncio.subprocess.Process) -> str:
        assert proc.stdout is not None and proc.stderr is not None
        stderr = asyncio.create_task(_copy(proc.stderr, self._stderr.add))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while line := await proc.stdout.readline():
                    if match := _LISTENING.search(line):
                        return match.group(1).decode()
        except TimeoutError:
            pass
        finally:
            stderr.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stderr
        await self._stop()
        raise CliServerFailed(
            "the opencode server did not start; its output: "
            + (self._stderr.text().strip() or "(none)"),
            exit_code=proc.returncode,
        )

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        """Read the server's output for its life: a full pipe would stop it."""
        assert proc.stdout is not None and proc.stderr is not None
        await asyncio.gather(
            _copy(proc.stdout, lambda _chunk: None), _copy(proc.stderr, self._stderr.add)
        )

    async def close(self) -> None:
        async with self._lock:
            await self._stop()

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        client, self._client = self._client, None
        self._fingerprint = None
        if client is not None:
            await client.aclose()
        if proc is not None:
            if proc.returncode is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self._kill_grace_s)
                except TimeoutError:
                    _signal_group(proc.pid, signal.SIGKILL)
                    await proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # what outlived the leader
            logger.info("opencode server stopped", extra={"exit_code": proc.returncode})
        if self._output is not None:
            self._output.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._output
            self._output = None


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    framer = SseFramer()
    async for chunk in response.aiter_bytes():
        for data in framer.feed(chunk):
            with contextlib.suppress(ValueError):
                if isinstance(event := json.loads(data), dict):
                    yield event


async def _copy(stream: asyncio.StreamReader, sink: Callable[[bytes], None]) -> None:
    while chunk := await stream.read(64 * 1024):
        sink(chunk)


def _check(response: httpx.Response, doing: str) -> None:
    if response.is_error:
        raise CliServerFailed(
            f"the opencode server could not {doing} (HTTP {response.status_code}): "
            f"{response.text[:500]}",
            status=response.status_code,
        )


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The answer's error in OpenCode's own shape ({name, data: {message}}), as `run` prints it."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("name"):
            return body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return body["error"]
    return {
        "name": "ServerError",
        "data": {"message": response.text[:500] or "no answer", "statusCode": response.status_code},
    }


def _fingerprint(server: ServerInvocation) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([server.argv, sorted(server.env.items()), str(server.cwd)]).encode())
    for path in server.watched:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            with contextlib.suppress(OSError):
                stat = file.stat()
                digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the harness dies, however it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
