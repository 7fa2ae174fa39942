"""Running npm (and a CLI's ``--version``) for `harness.cli_install`: a child in its own process
group, bounded and killed whole; npm's environment; what npm's error output says.

Pure process plumbing: it knows nothing of workspaces, versions or which CLI is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# npm's environment: what it needs to run and to reach its registry, nothing else of the
# harness's (its session token, the provider key). `VWM_WORKSPACE` marks npm as the session's
# (the local backend finds what to kill at teardown by it).
_NPM_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "VWM_WORKSPACE",
)  # fmt: skip
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
_NPM_ERROR = re.compile(r"^npm (?:error|ERR!) ?(.*)$")
# npm's lines that say nothing to a person: its code (read apart), a stack trace, an error
# object's dump, where its log went.
_NPM_NOISE = re.compile(
    r"^(code|errno|syscall) |^at |^[{}]|^[a-zA-Z]+: .*,$|^A complete log|^Log files were not written"
)
# The category npm prefixes a message's lines with ("notarget No matching version ...").
_NPM_CATEGORY = re.compile(r"^(notarget|404|403|401) +")


@dataclass(frozen=True)
class Finished:
    exit_code: int
    stdout: str
    stderr: str


def npm_environment(env: Mapping[str, str]) -> dict[str, str]:
    """npm's environment from `env`: `_NPM_ENV` and npm's own settings (``npm_config_*``, in any
    case: ``NPM_CONFIG_REGISTRY`` names a private mirror)."""
    chosen = {name: env[name] for name in _NPM_ENV if name in env}
    chosen.update(
        {name: value for name, value in env.items() if name.lower().startswith("npm_config_")}
    )
    chosen.setdefault("LANG", "C.UTF-8")
    chosen["NO_COLOR"] = "1"
    chosen["npm_config_update_notifier"] = "false"
    return chosen


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout_s: float | None = None,
) -> Finished:
    """Run `argv` to its end, stdin empty. Raises OSError if it cannot start, TimeoutError after
    `timeout_s`. It gets its own process group, killed whole when the wait is cut short (a
    timeout, a cancelled bootstrap): npm starts children."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate()
    except BaseException:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await process.communicate()
        raise
    return Finished(
        exit_code=process.returncode if process.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
    )


def npm_error(stderr: str) -> tuple[str | None, str]:
    """npm's error code (``ETARGET``, ``E404``, ``ECONNREFUSED``; None if it printed none) and
    the first line of its message that says what happened ("" if none does)."""
    code, lines = None, []
    for raw in stderr.splitlines():
        if (found := _NPM_ERROR.match(raw.strip())) is None:
            continue
        text = found.group(1).strip()
        if text.startswith("code ") and code is None:
            code = text.removeprefix("code ").strip()
        elif text and not _NPM_NOISE.search(text):
            lines.append(_NPM_CATEGORY.sub("", text))
    return code, mask(lines[0]) if lines else ""


def readable_stderr(stderr: str, limit: int) -> str:
    """npm's stderr for an error's details: the last `limit` characters, credentials in URLs
    masked, without the pointer to its log file (in a folder deleted by then)."""
    kept = "".join(
        line
        for line in stderr.splitlines(keepends=True)
        if "A complete log of this run" not in line
    )
    return mask(kept)[-limit:]


def mask(text: str) -> str:
    """`text` with the credentials of any URL in it (``https://user:token@host``) masked."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)
