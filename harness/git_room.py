"""The clean room the harness's git runs in: nothing from the workspace or the harness's own
environment decides what git executes.

The repositories in a workspace are written by the agent (and through it, by whoever wrote the
prompt or the repository it cloned). Git would run commands named there: ``core.fsmonitor``,
hooks, ``core.sshCommand``, filter, merge and diff drivers, ``remote.*.uploadpack``,
``include.path`` pulling any of these from elsewhere. And git inherits its environment, which in
the harness holds the session token and the provider key. So every git command of the harness:

1. gets a minimal environment (`clean_environment`): a few non-secret variables, no global or
   system config, no prompts, transports limited to https, ssh and git (plus local paths and
   ``file://`` only when the control plane allows local repositories), and configuration on the
   command line's level that turns off everything known to run a program;
2. works on a repository whose ``.git/config`` was first cut down to an allowlist of keys
   (`sanitize_repository`), which also covers drivers whose names git lets the repository choose;
3. refuses a ``.git`` that is not a plain folder of this repository (a symlink, a ``gitdir:``
   file, a ``commondir``) and drops ``objects/info/alternates``, which would let a push carry
   objects of another repository on the machine.

Used by `harness.gitops` (every command) and `harness.transcript` (before commit and push).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from harness.errors import UnsafeRepository

logger = logging.getLogger(__name__)

# Passed through from the harness's environment: none of them is a secret.
PASSED_ENV = (
    "PATH", "HOME", "LANG", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSH_AUTH_SOCK",
)  # fmt: skip

# Configuration that outranks every config file (git reads it like ``-c``). Each entry turns off
# a way configuration runs a program, or makes git act without asking anyone.
OVERRIDES: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.sshCommand", "ssh -o BatchMode=yes"),
    ("core.askPass", ""),
    ("core.alternateRefsCommand", ""),
    ("core.pager", "cat"),
    ("core.editor", "true"),
    ("sequence.editor", "true"),
    ("credential.helper", ""),  # an empty value clears every helper named before it
    ("diff.external", ""),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("rebase.autoStash", "false"),
    ("maintenance.auto", "false"),
    ("gc.auto", "0"),
)

_NETWORK_PROTOCOLS = "https:ssh:git:http"

# What a workspace repository's .git/config may keep; everything else is dropped before git
# runs. Patterns are on git's canonical key form (section and name lowercased).
_KEPT_KEYS = re.compile(
    r"core\.(repositoryformatversion|filemode|bare|logallrefupdates|symlinks|ignorecase"
    r"|precomposeunicode|autocrlf|eol|safecrlf)"
    r"|extensions\.(objectformat|refstorage)"
    r"|remote\.origin\.(url|fetch)"
    r"|branch\.[^\n]+\.(remote|merge)"
)


def clean_environment(
    *, allow_local: bool, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of one git command."""
    base = os.environ if base is None else base
    env = {name: base[name] for name in PASSED_ENV if name in base}
    env.update(
        {
            "LC_ALL": "C",  # messages in English, so failures can be read
            "GIT_TERMINAL_PROMPT": "0",  # fail instead of waiting for a password
            "GIT_ASKPASS": "false",
            "SSH_ASKPASS": "false",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_NO_REPLACE_OBJECTS": "1",
            # ext:: and fd:: run programs; a local path reads any repository on the machine.
            "GIT_ALLOW_PROTOCOL": _NETWORK_PROTOCOLS + (":file" if allow_local else ""),
            "GIT_CONFIG_COUNT": str(len(OVERRIDES)),
        }
    )
    for index, (key, value) in enumerate(OVERRIDES):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def sanitize_repository(repo: Path, *, allow_local: bool) -> list[str]:
    """Make `repo` safe for the harness's git; returns the config keys it dropped (names only:
    values may hold credentials). Raises UnsafeRepository if `.git` is not this repository's own
    folder. Blocking (it runs ``git config`` once): call it from a worker thread."""
    git_dir = repo / ".git"
    info = os.lstat(git_dir)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeRepository(
            f"{repo.name}/.git is not a folder (a symbolic link or a 'gitdir:' file points "
            "elsewhere); the harness does not run git on it: restore the repository's own .git",
            repo=repo.name,
        )
    if (git_dir / "commondir").exists():
        raise UnsafeRepository(
            f"{repo.name}/.git/commondir makes it a worktree of another repository; the harness "
            "does not run git on it",
            repo=repo.name,
        )
    alternates = git_dir / "objects" / "info" / "alternates"
    if alternates.exists() or alternates.is_symlink():
        alternates.unlink()
        logger.warning("dropped objects/info/alternates", extra={"repo": repo.name})
    entries = _read_config(git_dir / "config", allow_local=allow_local)
    kept = [(key, value) for key, value in entries if _kept(key, value)]
    dropped = sorted({key for key, value in entries if not _kept(key, value)})
    if dropped:
        _write_config(git_dir / "config", kept)
        logger.warning(
            "dropped repository configuration", extra={"repo": repo.name, "keys": dropped}
        )
    return dropped


def _kept(key: str, value: str) -> bool:
    # core.bare=true would make git refuse to commit the work tree: saving must not be blocked.
    return bool(_KEPT_KEYS.fullmatch(key)) and not (key == "core.bare" and value != "false")


def _read_config(path: Path, *, allow_local: bool) -> list[tuple[str, str]]:
    """Every (key, value) in one config file, parsed by git itself; ``--file`` never follows
    ``include`` and runs nothing."""
    done = subprocess.run(
        ["git", "config", "--file", str(path), "--null", "--list"],
        env=clean_environment(allow_local=allow_local),
        capture_output=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise UnsafeRepository(
            f"{path.parent.parent.name}/.git/config cannot be read by git "
            f"({done.stderr.decode(errors='replace').strip()}); repair or remove it",
            repo=path.parent.parent.name,
        )
    entries = []
    for record in done.stdout.decode(errors="surrogateescape").split("\0"):
        if record:
            key, _, value = record.partition("\n")
            entries.append((key, value))
    return entries


def _write_config(path: Path, entries: list[tuple[str, str]]) -> None:
    """A config file holding exactly `entries`, replacing `path` atomically."""
    sections: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, value in entries:
        section, _, rest = key.partition(".")
        subsection, _, name = rest.rpartition(".")  # "" when the key has none
        sections.setdefault((section, subsection), []).append((name, value))
    lines = []
    for (section, subsection), items in sections.items():
        lines.append(f'[{section} "{_quote(subsection)}"]' if subsection else f"[{section}]")
        lines += [f'\t{name} = "{_quote(value)}"' for name, value in items]
    tmp = path.with_name("config.vwm-tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    os.replace(tmp, path)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
