"""The CLI's sandbox: bubblewrap (``bwrap``) around every CLI run, when the settings ask for it.

In production each session is a pod of its own. In the embedded default (``vwm up``) every harness
is a local process of the invoking user, and the CLI it starts runs with full permissions on
content other people control; this module confines that CLI to its own workspace. Called by
`harness.jobs.JobRunner` (`command`: the argv to spawn); `harness.settings` probes bwrap once at
start-up (`eventing.bwrap`, the same probe the control plane uses). docs/runtime.md describes
the profile and what it does not protect against.

The profile, in mount order (later mounts sit on top of earlier ones):

1. the whole file system read-only; a fresh ``/dev``, a ``/proc`` of a new PID namespace (the
   harness's ``/proc/<pid>/environ`` with the session token is out of reach), all capabilities
   dropped (as root a capability would let the CLI unmount what hides things), no IPC with the
   host, a new session, killed with the harness;
2. hidden behind empty tmpfs: ``/tmp`` and ``/var/tmp`` (its own), ``/run`` (the sockets of
   local daemons: D-Bus, Docker, PostgreSQL), ``/home``, ``/root`` and the user's home;
3. shown again read-only, where 2 hid them: the CLI's installation, the folders on ``PATH`` (one
   inside a dot-folder of the user's home with that whole folder: ``~/.pyenv``, ``~/.nvm``, ...),
   the folder of ``/etc/resolv.conf``'s target, and ``VWM_SANDBOX_SHOW``; within them, known
   credential files hidden again;
4. hidden: ``VWM_SANDBOX_HIDE`` (the data folder: every other session, the database, the logs);
5. the session's workspace, writable; its ``.vwm`` (job records, harness state) read-only.

The network is shared: the CLI must reach its model provider.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from eventing.bwrap import ISOLATION

if TYPE_CHECKING:
    from harness.settings import SandboxSettings

# Mount points the CLI gets empty ones of (not places this module writes to).
_PRIVATE_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run", "/home", "/root")  # noqa: S108
# Credentials the usual tools keep in a home folder; hidden again inside a shown folder of it.
_HOME_SECRETS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".netrc",
    ".git-credentials", ".config/git/credentials", ".config/gh", ".npmrc", ".yarnrc.yml",
    ".pypirc", ".cargo/credentials", ".cargo/credentials.toml", ".terraformrc", ".terraform.d",
    ".pgpass", ".vault-token", ".claude", ".claude.json", ".codex", ".gemini",
    ".config/opencode", ".local/share/opencode", ".local/share/keyrings",
)  # fmt: skip


def command(
    settings: SandboxSettings,
    argv: Sequence[str],
    *,
    workspace: Path,
    cwd: Path,
    path_env: str | None = None,
) -> list[str]:
    """The argv that runs `argv` in the sandboxed `workspace` (unchanged when there is none)."""
    if settings.mode == "none":
        return list(argv)
    search_path = os.environ.get("PATH", "") if path_env is None else path_env
    return [
        settings.bwrap,
        *profile(
            workspace=workspace,
            hide=settings.hide,
            show=[*_cli_install(argv[0], search_path), *settings.show],
            path_dirs=search_path.split(os.pathsep),
        ),
        "--chdir",
        str(cwd),
        "--",
        *argv,
    ]


def profile(
    *,
    workspace: Path,
    hide: Iterable[Path] = (),
    show: Iterable[Path] = (),
    path_dirs: Iterable[str] = (),
    home: Path | None = None,
) -> list[str]:
    """bwrap's mount and isolation options for one run (see the module docstring)."""
    home_as_named = Path(os.path.abspath(home or pwd.getpwuid(os.getuid()).pw_dir))
    home = _real(home_as_named)
    private = _outermost(
        existing for path in (*map(Path, _PRIVATE_DIRS), home) if (existing := _real_dir(path))
    )
    # A shown path keeps the name it is reached by (a symlink in a hidden folder must still lead
    # to it), so hidden-ness is checked against both spellings of each private folder.
    private_names = [*private, *map(Path, _PRIVATE_DIRS), home_as_named]
    wanted = [
        Path(os.path.abspath(path))
        for path in (
            *show,
            *(_toolchain(Path(entry), (home_as_named, home)) for entry in path_dirs),
            Path("/etc/resolv.conf").resolve().parent,
        )
        if os.path.isabs(path)
    ]
    shown = _outermost(
        path
        for path in wanted
        if _real(path).exists()
        and _under_any(path, private_names)
        and not any(_under(root, path) for root in private_names)  # never a whole private folder
    )
    args = ["--ro-bind", "/", "/", *ISOLATION]
    for path in private:
        args += ["--tmpfs", str(path)]
    for path in shown:
        args += ["--ro-bind", str(_real(path)), str(path)]
    secrets = [secret for name in _HOME_SECRETS if (secret := home / name).exists()]
    hidden = [real for path in hide if (real := _real(path)).exists()]
    for real in [*secrets, *hidden]:
        # Hidden where it is visible at this point: in place, and inside any shown folder.
        places = [] if _under_any(real, private) else [real]
        places += [
            path / real.relative_to(_real(path)) for path in shown if _under(real, _real(path))
        ]
        for place in places:
            args += ["--tmpfs", str(place)] if real.is_dir() else _empty_file_over(place)
    workspace = _real(workspace)
    args += ["--bind", str(workspace), str(workspace)]
    if (state := workspace / ".vwm").is_dir():
        args += ["--ro-bind", str(state), str(state)]
    return args


def _cli_install(binary: str, search_path: str) -> list[Path]:
    """Where the CLI lives: the folder it is started from, and its package tree (the folder that
    holds its outermost ``node_modules``), both as named and as resolved, so the CLI's own files
    and its relative symlinks resolve inside the sandbox."""
    found = binary if os.sep in binary else shutil.which(binary, path=search_path)
    if found is None:
        return []
    named = Path(os.path.abspath(found))
    return [named.parent, _package_root(named), _package_root(_real(named))]


def _package_root(binary: Path) -> Path:
    modules = [parent for parent in binary.parents if parent.name == "node_modules"]
    return modules[-1].parent if modules else binary.parent


def _toolchain(entry: Path, homes: Iterable[Path]) -> Path:
    """A ``PATH`` folder inside a dot-folder of the user's home is shown with that whole folder
    (``~/.pyenv/shims`` needs ``~/.pyenv/versions``, ``~/.nvm/.../bin`` its ``lib``); anywhere
    else (``~/bin``, ``~/src/x/.venv/bin``), just the folder itself."""
    for home in homes:
        if home in entry.parents and (top := entry.relative_to(home).parts[0]).startswith("."):
            return home / top
    return entry


def _empty_file_over(path: Path) -> list[str]:
    return ["--ro-bind", "/dev/null", str(path)]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Distinct paths with those inside another one dropped, sorted (parents before children)."""
    ordered = sorted(set(paths), key=lambda path: (len(path.parts), str(path)))
    kept: list[Path] = []
    for path in ordered:
        if not _under_any(path, kept):
            kept.append(path)
    return kept


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _real_dir(path: Path) -> Path | None:
    real = _real(path)
    return real if real.is_dir() else None


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _under_any(path: Path, roots: Iterable[Path]) -> bool:
    return any(_under(path, root) for root in roots)
