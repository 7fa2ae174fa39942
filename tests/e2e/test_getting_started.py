"""docs/getting-started.md, run as a reader would: every `sh` block in order, in one shell, against
the embedded control plane and the fake model provider, with each CLI the page offers: its
blocks name Claude Code, and its prose names the flags for the other three, which replace them. The
blocks marked
`<!-- getting-started: server -->` start a server (the control plane, the provider) or name its
address and key: this test starts both itself and gives the shell their address and key instead.
A command that stops working, or a page that stops saying what it runs, fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane, kill_harnesses
from vwm.local.clis import pinned_version

pytestmark = pytest.mark.cli

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"
SERVER_MARK = "<!-- getting-started: server -->"
BLOCK = re.compile(
    r"^(?P<mark><!-- getting-started: server -->\n)?```sh\n(?P<body>.*?)^```$", re.M | re.S
)
# Where the page says the fake provider listens (`./task fake-provider`).
PAGE_PROVIDER_URL = "http://127.0.0.1:18000"


def blocks(page: str) -> tuple[list[str], list[str]]:
    """The page's `sh` blocks: those the reader runs here, and those that start a server."""
    run, servers = [], []
    for found in BLOCK.finditer(page):
        (servers if found.group("mark") else run).append(found.group("body"))
    return run, servers


def test_the_page_says_which_blocks_start_a_server() -> None:
    run, servers = blocks(PAGE.read_text())
    assert len(servers) == 3, servers  # ./task up, ./task fake-provider, the vwm environment
    assert "./task up" in servers[0] and "fake-provider" in servers[1]
    assert len(run) >= 4
    assert PAGE_PROVIDER_URL in "".join(run)
    assert PAGE.read_text().count(SERVER_MARK) == 3  # each mark is on a block


def test_the_versions_the_page_names_are_the_pinned_ones() -> None:
    """The page names each CLI's version (some only in prose); they must be what `./task up`
    installs (`harness/clis/package.json`), or a reader's runtime would ask for another."""
    named = dict(re.findall(r"--cli\s+(\w+)\s+--cli-version\s+([\w.-]+)", PAGE.read_text()))
    assert set(named) == {"claude", "codex", "gemini", "opencode"}, named
    assert named == {cli: pinned_version(cli) for cli in named}


# The runtime's CLI flags: in the block (Claude Code), and in the prose for the others.
CLI_FLAGS = re.compile(
    r"--cli\s+(?P<cli>\w+)\s+--cli-version\s+[\w.-]+\s+(?:\\\n\s*)?--default-model\s+[\w.-]+"
)


def runtime_flags(page: str) -> dict[str, str]:
    """Each CLI's runtime flags as the page gives them, first mention first."""
    found: dict[str, str] = {}
    for match in CLI_FLAGS.finditer(page):
        found.setdefault(match.group("cli"), match.group(0))
    return found


def test_the_page_gives_runtime_flags_for_every_cli() -> None:
    assert set(runtime_flags(PAGE.read_text())) == {"claude", "codex", "gemini", "opencode"}


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini", "opencode"])
def test_every_command_of_the_page_runs(cli: str, tmp_path: Path, fake_provider) -> None:
    page = PAGE.read_text()
    run, _ = blocks(page)
    script = "\n".join(run).replace(PAGE_PROVIDER_URL, fake_provider.base_url)
    flags = runtime_flags(page)
    assert flags["claude"] in script  # the block's own runtime, which the reader may swap
    words = [word for word in flags[cli].split() if word != "\\"]  # the block's line break
    script = script.replace(flags["claude"], " ".join(words))
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": "any-key"})
    plane.start()
    try:
        bin_dir = str(Path(sys.executable).parent)  # where `vwm` is, as the page's PATH says
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "VWM_URL": plane.url,
            "VWM_API_KEY": str(plane.admin_key),
            "TMPDIR": str(tmp_path),
        }
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (done.stdout, done.stderr, plane.log()[-4000:])
        # `git show` found what the agent wrote and what it learned, both pushed.
        assert done.stdout.count("hello from fake model") >= 2, done.stdout
        assert "knowledge/lessons.md" in done.stdout + done.stderr
    finally:
        plane.stop()
        kill_harnesses(plane.data_dir)
