"""The CLI at the runtime's pinned version (``VWM_CLI_VERSION``): the image's own when it reports
that version, else a copy installed from npm once per volume.

`PinnedCli` decides which executable runs the CLI. The app asks it at start-up (`find`, which
never installs: a restarted harness picks up the copy already on the volume; the start does not
wait for its answer, what asks next waits on the lock), at every bootstrap
and before every job of a bootstrapped workspace (`ensure`, which installs when nothing fits: a
harness restarted after its runtime's version changed is not bootstrapped again); the job runner
reads `binary`. Without a pinned version the image's CLI runs and nothing is asked.

A copy lives in ``<workspace>/.vwm/cli/<cli>@<version>/``, an npm prefix whose
``node_modules/.bin/<cli>`` is the executable. It is built in a ``.<cli>@<version>.partial-*``
folder next to it and renamed into place only once the binary reports the pinned version, so a
crash mid-install leaves a partial folder (removed by the next install), never a half tree that
counts as installed. One install at a time per volume (a lock file), so a harness replacing a
hung one waits for its install instead of racing it.

npm (run through `harness.npm`) installs as the image does (infra/docker/harness.Dockerfile):
install scripts off, then ``npm rebuild`` of the CLI's own package where the CLI needs its
scripts (harness/clis/package.json ``allowScripts``). Its registry, proxy and credentials come from npm's own configuration
(``NPM_CONFIG_REGISTRY``, ``.npmrc``), so a private mirror works; the harness's secrets (session
token, provider key) are not in npm's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from eventing.cli_versions import NPM_PACKAGES, reported_version
from harness.cli_version_memo import VersionMemo
from harness.errors import Conflict, HarnessError
from harness.npm import mask, npm_environment, npm_error, readable_stderr, run
from harness.workspace import Workspace, fsync_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CliPackage:
    name: str  # on npm
    install_scripts: bool  # the CLI needs its own package's install scripts to start


# The packages of harness/clis/package.json (a test keeps the two equal).
_NEEDS_INSTALL_SCRIPTS = {"claude", "opencode"}
PACKAGES = {
    cli: CliPackage(name, install_scripts=cli in _NEEDS_INSTALL_SCRIPTS)
    for cli, name in NPM_PACKAGES.items()
}

VERSION_TIMEOUT_S = 60.0
_STDERR_TAIL_CHARS = 4000
_UNKNOWN_VERSION = {"ETARGET", "E404"}


class CliInstallFailed(HarnessError):
    """npm could not install the pinned CLI (unknown version, registry unreachable, no npm):
    the session cannot run its CLI at the version its runtime names."""

    status = 502
    code = "cli_install_failed"


class CliNotInstalled(Conflict):
    """The CLI was asked for before the pinned version was there. A guard: every job start
    installs it first (`harness.jobs.JobRunner.ready_cli`)."""

    code = "cli_not_installed"


@dataclass(frozen=True)
class ResolvedCli:
    binary: str
    version: str | None  # None: not pinned, whatever the image has
    source: Literal["image", "volume"]


class PinnedCli:
    """Which executable runs `kind` for one workspace; see the module docstring."""

    def __init__(
        self,
        kind: str,
        image_binary: str,
        version: str | None,
        workspace: Workspace,
        *,
        install_timeout_s: float,
        env: Mapping[str, str] | None = None,
        memo: VersionMemo | None = None,
    ) -> None:
        self.kind = kind
        self.version = version
        self._image_binary = image_binary
        self._install_timeout_s = install_timeout_s
        self._root = workspace.state_dir / "cli"
        # Marks npm and the probes as this session's, as the harness itself is marked: the local
        # backend finds what to kill at teardown by it, even after the harness was SIGKILLed.
        self._env = {**(os.environ if env is None else env), "VWM_WORKSPACE": str(workspace.root)}
        self._lock = asyncio.Lock()
        self._image_version: str | None = None
        self._image_asked = False  # the image's CLI is asked once per process: it cannot change
        self._memo = memo or VersionMemo(workspace.state_dir / "cli-versions.json")
        self.resolved = None if version else ResolvedCli(image_binary, None, "image")

    @property
    def entry(self) -> str:
        """The copy's folder, relative to the workspace (as the bootstrap report names it)."""
        return f".vwm/cli/{self.kind}@{self.version}"

    @property
    def binary(self) -> str:
        if self.resolved is None:
            raise CliNotInstalled(
                f"{self.kind} {self.version} is not installed in this workspace yet (the image "
                f"has {self._image_version or 'another version'}); POST /v1/bootstrap installs it",
                cli=self.kind,
                version=self.version,
            )
        return self.resolved.binary

    @property
    def running_version(self) -> str | None:
        """The version of the CLI jobs run, as it reported it (``--version``): the pinned one
        once resolved, the image's or the copy's, both checked. None when unpinned (the image's
        CLI, never asked: a harness without ``VWM_CLI_VERSION`` is a developer's) or not
        installed yet."""
        return self.resolved.version if self.resolved is not None else None

    async def find(self) -> ResolvedCli | None:
        """The CLI at the pinned version without installing anything: the image's if it reports
        that version, else the copy on the volume; None when neither is there."""
        async with self._lock:
            return await self._find()

    async def ensure(self) -> tuple[ResolvedCli, bool]:
        """The CLI at the pinned version, installed first if `find` finds none; and whether it
        was installed now. Raises CliInstallFailed."""
        async with self._lock:
            if (found := await self._find()) is not None:
                return found, False
            assert self.version is not None  # unpinned is always found
            try:
                async with asyncio.timeout(self._install_timeout_s):
                    self.resolved = await self._install(self.version)
                return self.resolved, True
            except TimeoutError:
                error = self._failure(
                    f"the install took longer than {self._install_timeout_s:g} s and was "
                    "stopped; check that the registry is reachable and fast enough from the "
                    "harness, or raise VWM_CLI_INSTALL_TIMEOUT_S",
                    retryable=True,
                )
            except CliInstallFailed as exc:
                error = exc
            logger.warning(
                "cli install failed",
                extra={
                    "cli": self.kind,
                    "version": self.version,
                    "npm_code": error.details.get("npm_code"),
                    "error": error.message,
                },
            )
            raise error

    # -- finding -------------------------------------------------------------------------------

    async def _find(self) -> ResolvedCli | None:
        if self.resolved is not None:
            return self.resolved
        assert self.version is not None
        if not self._image_asked:
            self._image_version = await self._image_reports()
            self._image_asked = True
        if self._image_version == self.version:
            self.resolved = ResolvedCli(self._image_binary, self.version, "image")
        elif (binary := self._copy_binary(self._folder)).exists():
            self.resolved = ResolvedCli(str(binary), self.version, "volume")
        else:
            logger.info(
                "pinned cli not installed yet",
                extra={"cli": self.kind, "version": self.version, "image": self._image_version},
            )
            return None
        logger.info(
            "cli resolved",
            extra={
                "cli": self.kind,
                "version": self.version,
                "source": self.resolved.source,
                "binary": self.resolved.binary,
                "image": self._image_version,
            },
        )
        return self.resolved

    async def _image_reports(self) -> str | None:
        """The image CLI's version: remembered from an earlier answer of the same file, else
        asked (and remembered when it names one)."""
        if (known := self._memo.recall(self._image_binary, self._env)) is not None:
            return known
        version = await _reported_version(self._image_binary, self._env)
        if version is not None:
            await asyncio.to_thread(self._memo.remember, self._image_binary, self._env, version)
        return version

    @property
    def _folder(self) -> Path:
        return self._root / f"{self.kind}@{self.version}"

    def _copy_binary(self, prefix: Path) -> Path:
        return prefix / "node_modules" / ".bin" / self.kind

    # -- installing ----------------------------------------------------------------------------

    async def _install(self, version: str) -> ResolvedCli:
        package = PACKAGES[self.kind]
        npm = shutil.which("npm", path=self._env.get("PATH", os.defpath))
        if npm is None:
            raise self._failure(
                "npm is not on the harness's PATH; use a harness image with npm "
                "(infra/docker/harness.Dockerfile)",
                retryable=False,
            )
        self._root.mkdir(parents=True, exist_ok=True)
        async with _volume_lock(self._root / ".install.lock"):
            if (binary := self._copy_binary(self._folder)).exists():  # another harness's install
                return ResolvedCli(str(binary), version, "volume")
            self._remove_partials()
            staging = self._root / f".{self.kind}@{version}.partial-{secrets.token_hex(4)}"
            tree = staging / "tree"
            tree.mkdir(parents=True)
            # The prefix's own manifest says whose install scripts may run, as the image's does
            # (npm warns about, and may later refuse, scripts it does not cover).
            manifest = {"private": True, "allowScripts": {package.name: package.install_scripts}}
            (tree / "package.json").write_text(json.dumps(manifest), encoding="utf-8")
            started = time.monotonic()
            logger.info(
                "cli install started",
                extra={"cli": self.kind, "version": version, "package": package.name},
            )
            try:
                await self._npm(
                    npm,
                    ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact"],
                    [f"{package.name}@{version}"],
                    tree,
                    staging,
                )
                if package.install_scripts:
                    await self._npm(npm, ["rebuild"], [package.name], tree, staging)
                await self._check_copy(tree)
                # npm fsyncs nothing: the tree reaches the disk before its name says installed,
                # so a power cut cannot leave a renamed copy with empty files.
                await asyncio.to_thread(os.sync)
                os.rename(tree, self._folder)
                fsync_dir(self._root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "cli installed",
            extra={
                "cli": self.kind,
                "version": version,
                "folder": self.entry,
                "duration_ms": int((time.monotonic() - started) * 1000),
            },
        )
        return ResolvedCli(str(self._copy_binary(self._folder)), version, "volume")

    async def _npm(
        self, npm: str, command: list[str], args: list[str], tree: Path, staging: Path
    ) -> None:
        env = npm_environment(self._env)
        options = ["--prefix", str(tree)]
        if not any(name.lower() == "npm_config_cache" for name in env):
            options += ["--cache", str(staging / "npm-cache")]  # gone with the staging folder
        argv = [npm, *command, *options, *args]
        try:
            done = await run(argv, env=env, cwd=tree)
        except OSError as exc:
            raise self._failure(f"npm could not be started: {exc}", retryable=False) from None
        if done.exit_code == 0:
            return
        npm_code, summary = npm_error(done.stderr)
        registry = await self._registry(npm, env, tree)
        wanted = f"{PACKAGES[self.kind].name}@{self.version}"
        if npm_code in _UNKNOWN_VERSION:
            reason = (
                f"{registry} has no {wanted} ({summary or npm_code}): set the runtime's "
                "cli_version to a version published there"
            )
        else:
            reason = (
                f"npm failed to install {wanted} from {registry} "
                f"({summary or npm_code or f'exit code {done.exit_code}'}): check that the registry is "
                "reachable from the harness (npm reads it from NPM_CONFIG_REGISTRY or .npmrc) "
                "and start the session again"
            )
        raise self._failure(
            reason,
            retryable=npm_code not in _UNKNOWN_VERSION,
            npm_code=npm_code,
            npm_exit_code=done.exit_code,
            registry=registry,
            stderr=readable_stderr(done.stderr, _STDERR_TAIL_CHARS),
        )

    async def _check_copy(self, tree: Path) -> None:
        binary = self._copy_binary(tree)
        if not binary.exists():
            raise self._failure(
                f"npm installed {PACKAGES[self.kind].name}@{self.version} but it has no "
                f"{self.kind} executable; is the package right?",
                retryable=False,
            )
        reported = await _reported_version(str(binary), self._env)
        if reported != self.version:
            raise self._failure(
                f"the installed {self.kind} reports {reported or 'no version'} to --version, "
                f"not {self.version}; is the package right?",
                retryable=False,
                reported=reported,
            )

    async def _registry(self, npm: str, env: dict[str, str], cwd: Path) -> str:
        """The registry npm used, as npm's configuration says (for the error message)."""
        with contextlib.suppress(OSError, TimeoutError):
            done = await run([npm, "config", "get", "registry"], env=env, cwd=cwd, timeout_s=15)
            if done.exit_code == 0 and done.stdout.strip():
                return mask(done.stdout.strip())
        return "the npm registry"

    def _remove_partials(self) -> None:
        """What a crashed install left (called under the volume lock: no install is running)."""
        for leftover in self._root.glob(f".{self.kind}@{self.version}.partial-*"):
            logger.info("removed a partial cli install", extra={"folder": leftover.name})
            shutil.rmtree(leftover, ignore_errors=True)

    def _failure(self, reason: str, *, retryable: bool, **details: object) -> CliInstallFailed:
        image = (
            f"; or set the runtime's cli_version to {self._image_version}, the harness image's "
            f"own version, which needs no install"
            if self._image_version
            else ""
        )
        error = CliInstallFailed(
            f"could not install {self.kind} {self.version}, the version the runtime pins: "
            f"{reason}{image}",
            cli=self.kind,
            version=self.version,
            package=PACKAGES[self.kind].name,
            image_version=self._image_version,
            **details,
        )
        error.retryable = retryable
        return error


async def _reported_version(binary: str, env: Mapping[str, str]) -> str | None:
    """What ``<binary> --version`` names; None if it cannot run or names no version."""
    kept = ("PATH", "HOME", "LANG", "TMPDIR", "VWM_WORKSPACE")
    probe_env = {name: env[name] for name in kept if name in env}
    probe_env["NO_COLOR"] = "1"
    try:
        done = await run([binary, "--version"], env=probe_env, timeout_s=VERSION_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        logger.warning("cli --version failed", extra={"binary": binary, "error": repr(exc)})
        return None
    version = reported_version(done.stdout) if done.exit_code == 0 else None
    if version is None:
        logger.warning(
            "cli --version named no version",
            extra={
                "binary": binary,
                "exit_code": done.exit_code,
                "stdout": done.stdout[-200:],
                "stderr": done.stderr[-200:],
            },
        )
    return version


@contextlib.asynccontextmanager
async def _volume_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive lock on `path`, polled so the wait stays cancellable (the install's timeout
    bounds it); released when its holder exits, even by a crash."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.2)
        yield
    finally:
        os.close(fd)
