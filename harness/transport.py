"""The transport layer: start a CLI process and turn its stdout into JSON objects.

It only moves lines. It knows nothing of any CLI's event types (that is the adapters' job) nor of
jobs (that is `harness.jobs`). Called by `harness.jobs.JobRunner`.

Rules, learned the hard way by other CLI wrappers:
- stdin is /dev/null: some CLIs block until stdin ends.
- the process gets its own process group, so a kill reaches the node wrapper *and* its children.
- stdout is framed into lines by hand, with a size cap that also guards a line still arriving.
- non-JSON lines are skipped; a line that looks like JSON but does not parse is an error.
- stderr is noise: only a bounded tail is kept, for error messages.
- the exit code is read only after stdout has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class TransportError(HarnessError):
    """The CLI's output could not be read as a stream of JSON objects: the CLI failed, not the
    caller, hence 502 (recorded on the job; never retried, the same run fails the same way)."""

    status = 502
    code = "cli_output_invalid"


class LineTooLong(TransportError):
    code = "line_too_long"


class CorruptJson(TransportError):
    code = "cli_output_malformed"


class CliNotFound(TransportError):
    code = "cli_not_found"


class LineFramer:
    """Splits byte chunks into lines without stripping content, refusing lines over a cap."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending += chunk
        lines: list[bytes] = []
        while (newline := self._pending.find(b"\n")) != -1:
            line = bytes(self._pending[:newline])
            del self._pending[: newline + 1]
            self._check(len(line))
            lines.append(line)
        # A line still arriving counts too: never buffer more than the cap.
        self._check(len(self._pending))
        return lines

    def flush(self) -> list[bytes]:
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest] if rest.strip() else []

    def _check(self, size: int) -> None:
        if size > self._max:
            raise LineTooLong(
                f"the CLI wrote an output line of more than {self._max} bytes; "
                "raise VWM_MAX_LINE_BYTES if such lines are expected",
                limit=self._max,
            )


def decode_line(line: bytes) -> dict[str, Any] | None:
    """One output line as a JSON object, or None for a line that is not JSON at all."""
    text = line.decode("utf-8", errors="replace").strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptJson(f"the CLI wrote a corrupt JSON line: {exc}", line=text[:2000]) from None
    return value if isinstance(value, dict) else None


class StderrTail:
    """Keeps the last `limit` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) > self._limit:
            del self._buffer[: len(self._buffer) - self._limit]

    def text(self) -> str:
        return self._buffer.decode("utf-8", errors="replace")


class CliProcess:
    """One run of a CLI: start, iterate JSON objects from stdout, read the exit code, close."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        max_line_bytes: int,
        stderr_tail_bytes: int,
        kill_grace_s: float = 5.0,
        on_line: Callable[[bytes], None] | None = None,
    ) -> None:
        self._argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._framer = LineFramer(max_line_bytes)
        self.stderr = StderrTail(stderr_tail_bytes)
        self._kill_grace_s = kill_grace_s
        self._on_line = on_line  # sees every stdout line as it came, JSON or not
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise CliNotFound(
                f"the CLI binary {self._argv[0]!r} was not found; install the CLIs "
                "(./task install) or set VWM_CLI_BIN",
                binary=self._argv[0],
            ) from None
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        logger.info("cli started", extra={"pid": self._proc.pid, "binary": self._argv[0]})

    async def objects(self) -> AsyncIterator[dict[str, Any]]:
        assert self._proc is not None and self._proc.stdout is not None
        while chunk := await self._proc.stdout.read(_CHUNK):
            for line in self._framer.feed(chunk):
                if (obj := self._decode(line)) is not None:
                    yield obj
        for line in self._framer.flush():
            if (obj := self._decode(line)) is not None:
                yield obj

    def _decode(self, line: bytes) -> dict[str, Any] | None:
        if self._on_line is not None:
            self._on_line(line)
        return decode_line(line)

    async def wait(self) -> int:
        """The exit code, after stdout has drained and stderr has been read."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        return code

    async def close(self) -> int | None:
        """Stop the whole process group: SIGTERM, a grace period, then SIGKILL. Never leaves a zombie."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._kill_grace_s)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
                await proc.wait()
        # Children that ignored SIGTERM outlive the leader: the group gets a final SIGKILL.
        self._signal_group(signal.SIGKILL)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
        return proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(_CHUNK):
            self.stderr.add(chunk)
