"""Finding an agent CLI, or installing it from npm on first use into a cache folder.

The pinned versions are the harness's (`harness/clis/package.json`), so the demo runs exactly the
CLI versions the adapters were written against.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from eventing.cli_versions import NPM_PACKAGES

REPO_ROOT = Path(__file__).resolve().parents[2]
PINS = REPO_ROOT / "harness" / "clis" / "package.json"
PACKAGES = NPM_PACKAGES


class CliInstallError(RuntimeError):
    pass


def pinned_version(cli: str) -> str:
    """The version of `cli` the project pins (what `find_or_install` gives): a runtime on it
    runs the CLI found here, with nothing to install."""
    return json.loads(PINS.read_text())["dependencies"][PACKAGES[cli]]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vwm" / "clis"


def find_or_install(cli: str, *, progress=None) -> Path:
    """The CLI's executable: the project's install, the cache, or a fresh npm install."""
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    project = REPO_ROOT / ".tools" / "clis" / "node_modules" / ".bin" / cli
    if project.exists():
        return project
    package = PACKAGES[cli]
    version = pinned_version(cli)
    target = cache_dir() / f"{cli}-{version}"
    binary = target / "node_modules" / ".bin" / cli
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise CliInstallError("npm is not installed; install Node.js 20+ to run agent CLIs")
    say(f"installing {package}@{version} from npm into {target} (first use only)…")
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(
        json.dumps(
            {
                "private": True,
                "dependencies": {package: version},
                "allowScripts": {package: True},
            }
        )
    )
    process = subprocess.Popen(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=http"],
        cwd=target,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    fetched = 0
    for line in process.stdout:
        if "fetch" in line or "GET" in line:
            fetched += 1
            say(f"  npm: {fetched} downloads…")
    if process.wait() != 0 or not binary.exists():
        raise CliInstallError(f"npm could not install {package}@{version}; see the output above")
    say(f"installed {cli} {version}")
    return binary
