"""The CLI's sandbox (bubblewrap), proved from inside: a stand-in CLI run by the real harness probes
what it can reach and reports in Claude's stream-json format.

The same probes run unconfined (``VWM_SANDBOX=none``) first and find every leak there, so a probe
that could not see a leak cannot make the sandboxed run pass. The session's data folder sits where
no other part of the profile hides it (not under /tmp or a home), so only ``VWM_SANDBOX_HIDE``
keeps the other session and the database out of reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventing.bwrap import probe as probe_bwrap
from harness import sandbox
from harness.settings import SandboxSettings, SettingsError
from tests.support.harness_process import REPO_ROOT, TOKEN, HarnessProcess

# What the profile hides wholesale: a data folder under one of these proves nothing about
# VWM_SANDBOX_HIDE.
_HIDDEN_ANYWAY = ("/tmp", "/var/tmp", "/run", "/home", "/root", str(Path.home()))

# Probes what it can reach; paths come in the prompt as `name=path` words (no spaces in them).
PROBE_CLI = r"""#!/bin/sh
prompt=""
while [ $# -gt 0 ]; do
  if [ "$1" = "-p" ]; then prompt="$2"; shift; fi
  shift
done
for word in $prompt; do
  case "$word" in *=*) eval "p_${word%%=*}=\"${word#*=}\"";; esac
done
readable() { if cat "$1" >/dev/null 2>&1; then echo read; else echo denied; fi; }
writable() {
  if (echo probe > "$1") 2>/dev/null; then rm -f "$1"; echo written; else echo denied; fi
}
if [ "$p_confined" = yes ]; then
  # With a capability left (the harness runs as root here) this would bare what the mounts hide.
  umount -l "$p_data" /tmp 2>/dev/null
fi
leak=none
for environ in /proc/[0-9]*/environ; do
  if grep -q -a "VWM_SESSION_TOKEN=$p_token" "$environ" 2>/dev/null; then leak=found; fi
done
if [ -e "$p_tmp_marker" ]; then tmp=visible; else tmp=hidden; fi
out="other=$(readable "$p_other") db=$(readable "$p_db") token=$leak tmp=$tmp"
# Kept, not removed: the test looks for it in the real data folder.
if (echo probe > "$p_data/probe-written") 2>/dev/null; then data=written; else data=denied; fi
out="$out data_write=$data"
if [ "$p_confined" = yes ]; then
  # Kept too: in a checkout under a hidden folder (/tmp, a home) it lands in the tmpfs over it.
  if (echo probe > "$p_repo/probe-written") 2>/dev/null; then repo=written; else repo=denied; fi
  out="$out repo_write=$repo usr_write=$(writable /usr/probe-$$)"
  out="$out state_write=$(writable "$p_workspace/.vwm/probe-$$")"
  if echo kept > "$PWD/written-in-repo.txt" && echo kept > "$HOME/written-in-home.txt"; then
    out="$out own_write=written"
  else
    out="$out own_write=denied"
  fi
fi
echo '{"type":"system","subtype":"init","session_id":"probe-session","model":"probe"}'
printf '{"type":"result","subtype":"success","is_error":false,"session_id":"probe-session",'
printf '"result":"%s","usage":{"input_tokens":1,"output_tokens":1}}\n' "$out"
"""

# Leaves children behind (one in a session of its own) and sleeps: a cancel or a timeout must
# end all of them. $1 after -p is the marker the test finds them by.
SLEEPER_CLI = r"""#!/bin/sh
marker="$2"
echo '{"type":"system","subtype":"init","session_id":"sleeper","model":"probe"}'
trap '' TERM
(setsid sleep "$marker" &)
sleep "$marker" &
exec sleep "$marker"
"""


def require_bwrap() -> str:
    bwrap = shutil.which("bwrap") or "bwrap"
    if (problem := probe_bwrap(bwrap)) is not None:
        pytest.fail(f"bubblewrap does not work here ({problem}); install it (.ci/run does)")
    return bwrap


def _is_hidden(path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == Path(p) or Path(p) in real.parents for p in _HIDDEN_ANYWAY)


def exposed_base() -> Path:
    """A writable folder the profile does not hide by itself (the data folder goes there)."""
    for candidate in (REPO_ROOT / ".data", Path("/srv"), Path("/opt"), Path("/mnt")):
        real = Path(os.path.realpath(candidate))
        if not _is_hidden(real) and os.access(real.parent if not real.exists() else real, os.W_OK):
            real.mkdir(exist_ok=True)
            return real
    pytest.fail("no writable folder outside /tmp and the homes for the sandbox's data folder")


def stand_in(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(script)
    path.chmod(0o755)
    return path


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder laid out like the local backend's, with another session and a database."""
    data = Path(tempfile.mkdtemp(prefix="vwm-sandbox-test-", dir=exposed_base()))
    other = data / "sessions" / "other" / "workspace" / "session_repo"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("another session's work\n")
    (data / "vwm.sqlite3").write_text("the database\n")
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def tmp_marker() -> Iterator[Path]:
    """A file in the machine's own /tmp, which the sandboxed CLI must not see."""
    fd, name = tempfile.mkstemp(prefix="vwm-sandbox-marker-", dir="/tmp")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def run_probe(
    tmp_path: Path, data_dir: Path, tmp_marker: Path, mode: str, bwrap: str = "bwrap"
) -> tuple[dict[str, str], Path]:
    """Start a harness on a workspace in `data_dir`, run the probe CLI once, return its report."""
    workspace = data_dir / "sessions" / "me" / "workspace"
    (workspace / "session_repo").mkdir(parents=True, exist_ok=True)
    cli = stand_in(tmp_path / "cli", "probe-cli", PROBE_CLI)
    env = {
        "VWM_CLI_BIN": str(cli),
        "VWM_SANDBOX": mode,
        "VWM_SANDBOX_BWRAP": bwrap,
        "VWM_SANDBOX_HIDE": str(data_dir),
    }
    harness = HarnessProcess(workspace, "claude", env, tmp_path / f"harness-{mode}.log")
    harness.start()
    try:
        with harness.client(timeout=60) as client:
            assert client.get("/healthz").json()["sandbox"] == mode
            words = {
                "other": data_dir / "sessions/other/workspace/session_repo/secret.txt",
                "db": data_dir / "vwm.sqlite3",
                "data": data_dir,
                "repo": REPO_ROOT,
                "workspace": workspace,
                "tmp_marker": tmp_marker,
                "token": TOKEN,
                "confined": "yes" if mode == "bwrap" else "no",
            }
            prompt = " ".join(f"{name}={value}" for name, value in words.items())
            job = client.post("/v1/jobs", json={"prompt": prompt}).json()
    finally:
        harness.stop()
    assert job["status"] == "succeeded", (job, harness.log())
    report = dict(word.split("=", 1) for word in job["summary"]["final_text"].split())
    return report, workspace


def test_unconfined_the_probes_find_every_leak(
    tmp_path: Path, data_dir: Path, tmp_marker: Path
) -> None:
    report, _ = run_probe(tmp_path, data_dir, tmp_marker, "none")
    assert report == {
        "other": "read",
        "db": "read",
        "token": "found",
        "tmp": "visible",
        "data_write": "written",
    }
    assert (data_dir / "probe-written").exists()


def test_in_the_sandbox_the_cli_reaches_only_its_own_workspace(
    tmp_path: Path, data_dir: Path, tmp_marker: Path
) -> None:
    bwrap = require_bwrap()
    report, workspace = run_probe(tmp_path, data_dir, tmp_marker, "bwrap", bwrap)
    # The checkout is read-only; under /tmp or a home it is hidden behind an empty tmpfs, where
    # a write may land (and vanish): either way the real checkout is unchanged (below).
    repo_write = report.pop("repo_write")
    assert repo_write == "denied" or _is_hidden(REPO_ROOT)
    assert report == {
        "other": "denied",
        "db": "denied",
        "token": "none",
        "tmp": "hidden",
        "data_write": "written",  # into the empty tmpfs over it, which vanishes with the run
        "usr_write": "denied",
        "state_write": "denied",
        "own_write": "written",
    }
    assert not (data_dir / "probe-written").exists()
    assert not (REPO_ROOT / "probe-written").exists()
    # What it wrote in its repo and its home is really there, outside the sandbox.
    assert (workspace / "session_repo" / "written-in-repo.txt").read_text() == "kept\n"
    assert (workspace / ".cli-home" / "written-in-home.txt").read_text() == "kept\n"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and cmdline[:2] == [b"sleep", marker.encode()]:
            found.append(int(entry.name))
    return found


def _gone(marker: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_stopping_a_job_ends_the_cli_and_everything_it_started(tmp_path: Path, stop: str) -> None:
    bwrap = require_bwrap()
    workspace = tmp_path / "workspace"
    (workspace / "session_repo").mkdir(parents=True)
    cli = stand_in(tmp_path / "cli", "sleeper-cli", SLEEPER_CLI)
    env = {"VWM_CLI_BIN": str(cli), "VWM_SANDBOX": "bwrap", "VWM_SANDBOX_BWRAP": bwrap}
    marker = str(90000 + uuid.uuid4().int % 9999)
    harness = HarnessProcess(workspace, "claude", env, tmp_path / "harness.log")
    harness.start()
    try:
        with harness.client(timeout=60) as client:
            body: dict[str, object] = {"prompt": marker, "mode": "async"}
            if stop == "timeout":
                body["timeout_s"] = 2
            job = client.post("/v1/jobs", json=body).json()
            deadline = time.monotonic() + 10
            while len(_processes_with(marker)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(_processes_with(marker)) == 3, harness.log()
            if stop == "cancel":
                client.post(f"/v1/jobs/{job['job_id']}/cancel")
            deadline = time.monotonic() + 20
            while job["status"] == "running" and time.monotonic() < deadline:
                time.sleep(0.2)
                job = client.get(f"/v1/jobs/{job['job_id']}").json()
    finally:
        harness.stop()
    assert job["status"] == ("cancelled" if stop == "cancel" else "timeout"), job
    assert _gone(marker) == []


def test_a_killed_harness_leaves_no_cli_running(tmp_path: Path) -> None:
    bwrap = require_bwrap()
    workspace = tmp_path / "workspace"
    (workspace / "session_repo").mkdir(parents=True)
    cli = stand_in(tmp_path / "cli", "sleeper-cli", SLEEPER_CLI)
    env = {"VWM_CLI_BIN": str(cli), "VWM_SANDBOX": "bwrap", "VWM_SANDBOX_BWRAP": bwrap}
    marker = str(90000 + uuid.uuid4().int % 9999)
    harness = HarnessProcess(workspace, "claude", env, tmp_path / "harness.log")
    harness.start()
    try:
        with harness.client(timeout=60) as client:
            client.post("/v1/jobs", json={"prompt": marker, "mode": "async"})
        deadline = time.monotonic() + 10
        while len(_processes_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_processes_with(marker)) == 3, harness.log()
        assert harness.proc is not None
        harness.proc.kill()  # the harness alone: the CLI's process group is another one
        harness.proc.wait()
        assert _gone(marker) == []
    finally:
        harness.stop()


def test_a_cli_reached_through_a_symlink_in_a_hidden_folder_still_runs(
    tmp_path: Path, data_dir: Path
) -> None:
    """The CLI's path as named is shown (e.g. a checkout linked from the home), and its
    node_modules/.bin link, relative to that name, resolves."""
    bwrap = require_bwrap()
    package = data_dir / "tools" / "node_modules"
    stand_in(package / "pkg" / "bin", "cli", "#!/bin/sh\necho ran\n")
    (package / ".bin").mkdir()
    (package / ".bin" / "cli").symlink_to("../pkg/bin/cli")
    (tmp_path / "tools").symlink_to(data_dir / "tools")  # /tmp is hidden in the sandbox
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    settings = SandboxSettings(mode="bwrap", bwrap=bwrap)
    named = str(tmp_path / "tools" / "node_modules" / ".bin" / "cli")
    argv = sandbox.command(settings, [named], workspace=workspace, cwd=workspace)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr


def test_the_home_is_hidden_but_its_toolchains_on_path_are_shown_without_credentials(
    tmp_path: Path,
) -> None:
    bwrap = require_bwrap()
    home = tmp_path / "home"
    for folder in (".cargo/bin", ".pyenv/shims", ".pyenv/versions", "bin", "notes"):
        (home / folder).mkdir(parents=True)
    (home / ".cargo" / "credentials.toml").write_text("token = 'crates.io'\n")
    (home / ".pyenv" / "versions" / "python").write_text("an interpreter\n")
    (home / "bin" / "tool").write_text("a tool\n")
    (home / "notes" / "diary.txt").write_text("private\n")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("a key\n")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    path_dirs = [str(home / ".cargo" / "bin"), str(home / ".pyenv" / "shims"), str(home / "bin")]
    options = sandbox.profile(workspace=workspace, path_dirs=path_dirs, home=home)
    script = 'for f in "$@"; do if cat "$f" >/dev/null 2>&1; then echo read; else echo no; fi; done'
    probes = {
        "interpreter": home / ".pyenv" / "versions" / "python",  # the shim's folder needs it
        "tool": home / "bin" / "tool",
        "credentials": home / ".cargo" / "credentials.toml",
        "diary": home / "notes" / "diary.txt",
        "key": home / ".ssh" / "id_ed25519",
    }
    done = subprocess.run(
        [bwrap, *options, "sh", "-c", script, "sh", *map(str, probes.values())],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert dict(zip(probes, done.stdout.split(), strict=True)) == {
        "interpreter": "read",
        "tool": "read",
        "credentials": "no",
        "diary": "no",
        "key": "no",
    }


def test_a_harness_told_to_use_bwrap_refuses_to_start_without_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-bwrap")
    with pytest.raises(SettingsError, match="install bubblewrap"):
        SandboxSettings.from_env({"VWM_SANDBOX": "bwrap", "VWM_SANDBOX_BWRAP": missing})


def test_unknown_mode_and_relative_paths_are_refused() -> None:
    with pytest.raises(SettingsError, match="bwrap or none"):
        SandboxSettings.from_env({"VWM_SANDBOX": "auto"})
    with pytest.raises(SettingsError, match="absolute"):
        SandboxSettings.from_env({"VWM_SANDBOX_HIDE": "relative/data"})


def test_without_a_sandbox_the_command_is_the_clis_own() -> None:
    argv = ["claude", "-p", "hi"]
    assert sandbox.command(SandboxSettings(), argv, workspace=Path("/w"), cwd=Path("/w")) == argv
