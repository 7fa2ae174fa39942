"""The image CLI's `--version` is asked once per executable file, and again when the file
changes (`harness.cli_version_memo`), through `PinnedCli` as the harness uses it."""

from __future__ import annotations

import os
from pathlib import Path

from harness.cli_install import PinnedCli
from harness.cli_version_memo import VersionMemo
from harness.workspace import Workspace

CLI = """#!/bin/sh
echo asked >> "{log}"
echo "{version} (Claude Code)"
"""


def write_cli(path: Path, log: Path, version: str) -> None:
    staging = path.with_suffix(".new")
    staging.write_text(CLI.format(log=log, version=version))
    staging.chmod(0o755)
    os.replace(staging, path)  # as an upgrade does: a new file where the old one was


def asked(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


async def resolve(tmp_path: Path, name: str, binary: Path, memo: VersionMemo | None) -> PinnedCli:
    cli = PinnedCli(
        "claude",
        str(binary),
        "2.1.197",
        Workspace(tmp_path / name),
        install_timeout_s=30,
        env={"PATH": os.environ["PATH"]},
        memo=memo,
    )
    await cli.find()
    return cli


async def test_a_shared_memo_asks_each_executable_once_and_again_after_an_upgrade(tmp_path):
    log, binary = tmp_path / "asked.log", tmp_path / "bin" / "claude"
    binary.parent.mkdir()
    write_cli(binary, log, "2.1.197")
    memo = VersionMemo(tmp_path / "data" / "cli-versions.json")

    first = await resolve(tmp_path, "one", binary, memo)
    second = await resolve(tmp_path, "two", binary, memo)
    assert asked(log) == 1
    assert first.running_version == second.running_version == "2.1.197"
    assert second.binary == str(binary)

    write_cli(binary, log, "2.2.0")  # upgraded: no longer the pinned version
    upgraded = await resolve(tmp_path, "three", binary, memo)
    assert asked(log) == 2
    assert upgraded.resolved is None  # not the pinned version, and no copy on the volume


async def test_by_default_a_restart_on_the_same_workspace_does_not_ask_again(tmp_path):
    log, binary = tmp_path / "asked.log", tmp_path / "claude"
    write_cli(binary, log, "2.1.197")
    await resolve(tmp_path, "ws", binary, None)
    restarted = await resolve(tmp_path, "ws", binary, None)
    assert asked(log) == 1
    assert restarted.running_version == "2.1.197"
    assert (tmp_path / "ws" / ".vwm" / "cli-versions.json").is_file()
    await resolve(tmp_path, "other-ws", binary, None)  # another workspace: its own memo
    assert asked(log) == 2


async def test_a_symlinked_executable_is_remembered_by_its_target(tmp_path):
    log, target = tmp_path / "asked.log", tmp_path / "pkg" / "cli.sh"
    target.parent.mkdir()
    write_cli(target, log, "2.1.197")
    link = tmp_path / "bin" / "claude"
    link.parent.mkdir()
    link.symlink_to(target)
    memo = VersionMemo(tmp_path / "memo.json")
    await resolve(tmp_path, "one", link, memo)
    write_cli(target, log, "2.2.0")  # the package upgraded under the same link
    again = await resolve(tmp_path, "two", link, memo)
    assert asked(log) == 2
    assert again.resolved is None


async def test_a_damaged_or_unwritable_memo_only_means_asking(tmp_path):
    log, binary = tmp_path / "asked.log", tmp_path / "claude"
    write_cli(binary, log, "2.1.197")
    damaged = tmp_path / "memo.json"
    damaged.write_text("{not json")
    assert (await resolve(tmp_path, "one", binary, VersionMemo(damaged))).resolved is not None
    assert asked(log) == 1
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = VersionMemo(blocked / "memo.json")  # its folder is a file
    assert (await resolve(tmp_path, "two", binary, unwritable)).resolved is not None
    assert (await resolve(tmp_path, "three", binary, unwritable)).resolved is not None
    assert asked(log) == 3


async def test_an_answer_without_a_version_is_not_remembered(tmp_path):
    binary = tmp_path / "claude"
    binary.write_text('#!/bin/sh\necho asked >> "$0.log"\necho "no version here"\n')
    binary.chmod(0o755)
    memo = VersionMemo(tmp_path / "memo.json")
    await resolve(tmp_path, "one", binary, memo)
    await resolve(tmp_path, "two", binary, memo)
    assert asked(Path(f"{binary}.log")) == 2
    assert not (tmp_path / "memo.json").exists()
