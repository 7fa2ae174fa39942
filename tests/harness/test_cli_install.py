"""The CLI at the runtime's pinned version (``VWM_CLI_VERSION``, `harness.cli_install`): the
image's own when it reports that version, else installed once per volume with the real npm, from
a registry this test serves (tests/support/npm_registry.py) with a fake CLI at 1.0.0 and 2.0.0.
The image's CLI is that fake CLI at 1.0.0; each copy answers a job with "fake cli <version>", so
a job says which one ran."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventing.cli_versions import is_exact_version, reported_version
from functions.runtime.procs import processes_in
from harness.cli_install import PACKAGES
from harness.settings import HarnessSettings, SettingsError
from tests.support.harness_process import REPO_ROOT, HarnessProcess
from tests.support.npm_registry import POSTINSTALL_MARK, NpmRegistry, fake_cli, npm_registry

IMAGE_VERSION = "1.0.0"
COPY = ".vwm/cli/claude@2.0.0"


@pytest.fixture
def registry() -> Iterator[NpmRegistry]:
    with npm_registry() as served:
        served.publish(PACKAGES["claude"].name, ["1.0.0", "2.0.0"], "claude")
        served.publish(PACKAGES["codex"].name, ["1.0.0", "2.0.0"], "codex")
        yield served


def image_cli(tmp_path: Path, cli: str = "claude") -> Path:
    """The image's CLI: the fake one at `IMAGE_VERSION`."""
    path = tmp_path / "image" / cli
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fake_cli(IMAGE_VERSION))
    path.chmod(0o755)
    return path


def harness(
    tmp_path: Path,
    version: str,
    registry_url: str,
    *,
    name: str = "harness",
    cli: str = "claude",
    **env: str,
) -> HarnessProcess:
    return HarnessProcess(
        tmp_path / "workspace",
        cli,
        {
            "VWM_CLI_BIN": str(image_cli(tmp_path, cli)),
            "VWM_CLI_VERSION": version,
            "npm_config_registry": registry_url,
            "npm_config_fetch_retries": "0",  # a registry that is down fails at once
            **env,
        },
        tmp_path / f"{name}.log",
    )


def bootstrap(process: HarnessProcess) -> httpx.Response:
    with process.client() as client:
        return client.post("/v1/bootstrap", json={})  # an empty session repo: no remote needed


def job_text(process: HarnessProcess) -> str:
    with process.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "hello"})
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "succeeded", job.text
    return job.json()["summary"]["final_text"]


def cli_folder(tmp_path: Path) -> list[str]:
    """What `.vwm/cli/` holds, the install lock left out."""
    root = tmp_path / "workspace" / ".vwm" / "cli"
    return (
        sorted(p.name for p in root.iterdir() if p.name != ".install.lock") if root.exists() else []
    )


def log_events(process: HarnessProcess) -> list[dict[str, object]]:
    entries = []
    for line in process.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def test_the_image_cli_at_the_pinned_version_runs_and_nothing_is_installed(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    process = harness(tmp_path, IMAGE_VERSION, registry.url)
    process.start()
    try:
        answer = bootstrap(process)
        assert answer.status_code == 200, answer.text
        assert not [entry for entry in answer.json()["changed"] if entry.startswith(".vwm")]
        assert job_text(process) == f"fake cli {IMAGE_VERSION}"
    finally:
        process.stop()
    assert registry.requests == []
    assert cli_folder(tmp_path) == []
    resolved = [e for e in log_events(process) if e["msg"] == "cli resolved"]
    assert [(e["source"], e["version"]) for e in resolved] == [("image", IMAGE_VERSION)]


def test_another_version_is_installed_once_per_volume_and_a_restart_uses_it(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    first = harness(tmp_path, "2.0.0", registry.url)
    first.start()
    try:
        answer = bootstrap(first)
        assert answer.status_code == 200, answer.text
        assert COPY in answer.json()["changed"]
        assert any("claude 2.0.0 installed" in note for note in answer.json()["notes"])
        assert job_text(first) == "fake cli 2.0.0"
        again = bootstrap(first)  # the same harness: nothing to do
        assert COPY in again.json()["unchanged"], again.text
    finally:
        first.stop()
    assert len(registry.tarball_requests()) == 1
    assert cli_folder(tmp_path) == ["claude@2.0.0"]  # no partial folder left
    package = tmp_path / "workspace" / COPY / "node_modules" / "@anthropic-ai" / "claude-code"
    assert (package / POSTINSTALL_MARK).exists()  # claude's own install script ran, as in the image
    messages = [e["msg"] for e in log_events(first)]
    assert messages.count("cli install started") == 1
    assert messages.count("cli installed") == 1

    requests_before = list(registry.requests)
    second = harness(tmp_path, "2.0.0", registry.url, name="restarted")
    second.start()
    try:
        assert job_text(second) == "fake cli 2.0.0"  # before any bootstrap: found at start-up
        answer = bootstrap(second)
        assert answer.status_code == 200, answer.text
        assert COPY in answer.json()["unchanged"]
        assert COPY not in answer.json()["changed"]
    finally:
        second.stop()
    assert registry.requests == requests_before
    assert "cli install started" not in [e["msg"] for e in log_events(second)]


def test_a_codex_copy_is_installed_without_install_scripts(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    process = harness(tmp_path, "2.0.0", registry.url, cli="codex")
    process.start()
    try:
        answer = bootstrap(process)
        assert answer.status_code == 200, answer.text
        assert ".vwm/cli/codex@2.0.0" in answer.json()["changed"]
    finally:
        process.stop()
    package = tmp_path / "workspace" / ".vwm" / "cli" / "codex@2.0.0" / "node_modules" / "@openai"
    assert (package / "codex" / "cli.py").exists()
    assert not (package / "codex" / POSTINSTALL_MARK).exists()


def test_an_unknown_version_fails_bootstrap_clearly_and_installs_nothing(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    process = harness(tmp_path, "3.0.0", registry.url)
    process.start()
    try:
        answer = bootstrap(process)
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "cli_install_failed"
        message = error["message"]
        assert "could not install claude 3.0.0" in message
        assert f"{registry.url} has no @anthropic-ai/claude-code@3.0.0" in message
        assert "set the runtime's cli_version" in message and IMAGE_VERSION in message
        assert error["details"]["npm_code"] == "ETARGET"
        assert error["details"]["image_version"] == IMAGE_VERSION
        with process.client() as client:  # a job tries again, and fails the same way
            refused = client.post("/v1/jobs", json={"prompt": "hello"})
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "cli_install_failed"
    finally:
        process.stop()
    assert cli_folder(tmp_path) == []
    failed = [e for e in log_events(process) if e["msg"] == "cli install failed"]
    assert [e["npm_code"] for e in failed] == ["ETARGET", "ETARGET"]


def test_a_registry_that_is_down_fails_bootstrap_clearly_and_installs_nothing(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    with npm_registry() as gone:
        down = gone.url  # a port nothing listens on once this block has ended
    process = harness(tmp_path, "2.0.0", down)
    process.start()
    try:
        answer = bootstrap(process)
    finally:
        process.stop()
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "cli_install_failed"
    assert error["details"]["npm_code"] == "ECONNREFUSED"
    assert f"from {down}" in error["message"]
    assert "check that the registry is reachable" in error["message"]
    assert "NPM_CONFIG_REGISTRY" in error["message"]
    assert cli_folder(tmp_path) == []


def test_a_harness_killed_mid_install_leaves_nothing_that_counts_as_installed(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    registry.tarballs_flow.clear()  # npm waits for the tarball: the install is caught midway
    first = harness(tmp_path, "2.0.0", registry.url)
    first.start()
    answers: list[httpx.Response | Exception] = []

    def call() -> None:
        try:
            answers.append(bootstrap(first))
        except httpx.HTTPError as exc:
            answers.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert registry.tarball_asked.wait(30), first.log()
        assert first.proc is not None
        os.killpg(first.proc.pid, signal.SIGKILL)  # the harness, as a node dies under it
        first.proc.wait()
        for pid in processes_in(tmp_path / "workspace"):  # npm, in its own process group
            os.kill(pid, signal.SIGKILL)
    finally:
        registry.tarballs_flow.set()
        caller.join(30)
    assert isinstance(answers[0], httpx.HTTPError)
    assert not (tmp_path / "workspace" / COPY).exists()
    (partial,) = cli_folder(tmp_path)
    assert partial.startswith(".claude@2.0.0.partial-")

    second = harness(tmp_path, "2.0.0", registry.url, name="restarted")
    second.start()
    try:
        # Not installed: the session was bootstrapped (its repositories are there), so a job
        # installs the copy before it runs.
        assert job_text(second) == "fake cli 2.0.0"
        answer = bootstrap(second)
        assert answer.status_code == 200, answer.text
        assert COPY in answer.json()["unchanged"]
    finally:
        second.stop()
    assert cli_folder(tmp_path) == ["claude@2.0.0"]  # the partial folder was removed
    assert "removed a partial cli install" in [e["msg"] for e in log_events(second)]


def test_a_harness_restarted_with_another_pinned_version_installs_it_before_a_job(
    tmp_path: Path, registry: NpmRegistry
) -> None:
    """The runtime's version changed while the session ran: the control plane relaunches its
    harness with the new one and does not bootstrap it again."""
    first = harness(tmp_path, IMAGE_VERSION, registry.url)
    first.start()
    try:
        assert bootstrap(first).status_code == 200
        assert job_text(first) == f"fake cli {IMAGE_VERSION}"
    finally:
        first.stop()
    second = harness(tmp_path, "2.0.0", registry.url, name="repinned")
    second.start()
    try:
        assert job_text(second) == "fake cli 2.0.0"
        assert job_text(second) == "fake cli 2.0.0"
    finally:
        second.stop()
    assert len(registry.tarball_requests()) == 1
    assert cli_folder(tmp_path) == ["claude@2.0.0"]


def test_the_installed_copy_runs_in_the_sandbox(tmp_path: Path, registry: NpmRegistry) -> None:
    process = harness(tmp_path, "2.0.0", registry.url, VWM_SANDBOX="bwrap")
    process.start()
    try:
        assert bootstrap(process).status_code == 200
        assert job_text(process) == "fake cli 2.0.0"
    finally:
        process.stop()


@pytest.mark.parametrize(
    "version",
    ["2", "2.1", "latest", "^2.1.0", "2.1.0+build", "../2.1.0", "2.1.0/..", "2.1.0/x",
     "2.1.0 ", " 2.1.0", "2.1 .0", "2.1.0;id", "$(id)", "2.1.0`id`", "2.1.0-a..b", "01.2.3"],
)  # fmt: skip
def test_the_harness_refuses_a_version_that_is_not_exact(version: str) -> None:
    with pytest.raises(SettingsError, match=r"VWM_CLI_VERSION=.* must be an exact version"):
        HarnessSettings.from_env({"VWM_CLI_VERSION": version, "VWM_CLI_BIN": "claude"})


def test_the_harness_process_does_not_start_with_a_version_that_is_not_exact(
    tmp_path: Path,
) -> None:
    process = harness(tmp_path, "../2.0.0", "http://127.0.0.1:9/")
    with pytest.raises(RuntimeError, match="harness exited early"):
        process.start(timeout=20)
    assert process.proc is not None and process.proc.returncode == 2
    assert "VWM_CLI_VERSION='../2.0.0' must be an exact version" in process.log()


def test_exact_versions_and_what_the_four_clis_print() -> None:
    assert all(is_exact_version(v) for v in ("2.1.197", "0.169.0", "0.62.0-preview.1"))
    assert not is_exact_version("1" * 61 + ".0.0")  # longer than the column (64)
    # `--version` as each pinned CLI answers it.
    for output, version in [
        ("2.1.197 (Claude Code)\n", "2.1.197"),
        ("codex-cli 0.169.0\n", "0.169.0"),
        ("0.61.0\n", "0.61.0"),
        ("1.18.33\n", "1.18.33"),
        ("no version here\n", None),
    ]:
        assert reported_version(output) == version


def test_the_packages_are_the_ones_the_project_pins() -> None:
    pins = json.loads((REPO_ROOT / "harness" / "clis" / "package.json").read_text())
    assert {package.name for package in PACKAGES.values()} == set(pins["dependencies"])
    for package in PACKAGES.values():
        assert package.install_scripts == pins["allowScripts"].get(package.name, False)


def test_the_harness_image_carries_npm() -> None:
    dockerfile = (REPO_ROOT / "infra" / "docker" / "harness.Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    copy = "COPY --from=clis /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm"
    link = "ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm"
    assert copy in final_stage and link in final_stage
    assert final_stage.index(link) < final_stage.index("\nUSER ")  # linked as root
