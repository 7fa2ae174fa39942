"""The workspace layout and state store, and file operations that never leave the workspace."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import pytest

from harness.errors import (
    BadRequest,
    HarnessError,
    NotFound,
    PathOutsideWorkspace,
    PayloadTooLarge,
)
from harness.files import delete_path, list_dir, read_file, resolve_in_workspace, write_file
from harness.workspace import Workspace

LIMIT = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the workspace with a secret the workspace must never reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    os.utime(outside / "secret.txt", (1_000_000_000, 1_000_000_000))
    return outside


def assert_untouched(outside: Path) -> None:
    secret = outside / "secret.txt"
    assert secret.read_text() == "SECRET"
    assert secret.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


# -- workspace and state ----------------------------------------------------------------------


def test_layout_lives_under_the_root(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.worker_repo == tmp_path / "worker_repo"
    assert ws.session_repo == tmp_path / "session_repo"
    assert ws.cli_home == tmp_path / ".cli-home"
    assert ws.jobs_dir == tmp_path / ".vwm" / "jobs"
    assert ws.state_file == tmp_path / ".vwm" / "state.json"
    ws.ensure_dirs()
    ws.ensure_dirs()  # idempotent
    assert ws.cli_home.is_dir() and ws.jobs_dir.is_dir()


def test_state_is_empty_before_the_first_save_and_round_trips(tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert ws.load_state() == {}
    ws.save_state({"cli_session_id": "abc", "nested": {"n": 1}})
    ws.save_state({"cli_session_id": "def", "nested": {"n": 2}})
    assert ws.load_state() == {"cli_session_id": "def", "nested": {"n": 2}}
    assert [p.name for p in ws.state_dir.iterdir()] == ["state.json"]  # no temp files left


def test_a_failed_save_leaves_the_previous_state_whole(tmp_path):
    ws = Workspace(tmp_path)
    ws.save_state({"kept": True})
    with pytest.raises(TypeError):
        ws.save_state({"bad": object()})
    assert json.loads(ws.state_file.read_text()) == {"kept": True}


# -- refusing paths ---------------------------------------------------------------------------

ESCAPES = [
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "./../x",
    "/etc/passwd",
    "//etc/passwd",
    "x\x00y",
    "secret\x00/../../etc/passwd",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_escaping_paths_are_refused_by_every_operation(root, path):
    (root / "a").mkdir()
    for operation in (
        lambda: read_file(root, path, LIMIT),
        lambda: write_file(root, path, b"x", LIMIT),
        lambda: delete_path(root, path, recursive=True),
        lambda: list_dir(root, path),
    ):
        with pytest.raises(PathOutsideWorkspace) as caught:
            operation()
        assert caught.value.details["path"] == path
    assert not (root.parent / "x").exists()


@pytest.mark.parametrize("path", ["", ".", "./", "./."])
def test_the_root_itself_is_not_a_file_and_cannot_be_deleted(root, path):
    for operation in (
        lambda: read_file(root, path, LIMIT),
        lambda: write_file(root, path, b"x", LIMIT),
        lambda: delete_path(root, path, recursive=True),
    ):
        with pytest.raises(PathOutsideWorkspace):
            operation()
    assert root.is_dir()


def test_dot_components_collapse_to_the_folder_they_name(root):
    (root / "a").mkdir()
    assert resolve_in_workspace(root, "a/.") == root.resolve() / "a"
    assert resolve_in_workspace(root, "./a//b") == root.resolve() / "a" / "b"
    assert resolve_in_workspace(root, ".", allow_root=True) == root.resolve()


@pytest.mark.parametrize(
    "path",
    [
        "%2e%2e/%2e%2e/escape.txt",
        "..%2f..%2fescape.txt",
        "..\\..\\escape.txt",
        "\uff0e\uff0e/escape.txt",
        "...",
        "~/escape.txt",
        "a/..b",
        ".. /escape.txt",
    ],
)
def test_encoded_and_lookalike_dots_are_plain_names_inside(root, path):
    """Paths are never decoded again here: these are odd names, not ways out."""
    info = write_file(root, path, b"inside", LIMIT)
    assert info["path"] == path.strip("/")
    assert read_file(root, path, LIMIT) == b"inside"
    assert (root.resolve() / path).is_file()
    assert not any((root.parent / name).exists() for name in ("escape.txt", "~"))


# -- symlinks that lead out -------------------------------------------------------------------


def test_a_symlinked_folder_outside_cannot_be_read_written_listed_or_deleted_through(root, outside):
    (root / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathOutsideWorkspace):
        read_file(root, "out/secret.txt", LIMIT)
    with pytest.raises(PathOutsideWorkspace):
        write_file(root, "out/secret.txt", b"pwned", LIMIT)
    with pytest.raises(PathOutsideWorkspace):
        write_file(root, "out/new/file.txt", b"pwned", LIMIT)
    with pytest.raises(PathOutsideWorkspace):
        list_dir(root, "out")
    with pytest.raises(PathOutsideWorkspace):
        delete_path(root, "out/secret.txt")
    assert_untouched(outside)


def test_deleting_a_symlink_removes_the_link_only(root, outside):
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "out-file").symlink_to(outside / "secret.txt")
    assert delete_path(root, "out") == {"path": "out", "type": "symlink"}
    assert delete_path(root, "out-file", recursive=True) == {"path": "out-file", "type": "symlink"}
    assert not (root / "out").is_symlink() and not (root / "out-file").is_symlink()
    assert_untouched(outside)


def test_a_symlink_to_a_file_outside_is_neither_read_nor_written(root, outside):
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathOutsideWorkspace):
        read_file(root, "leak.txt", LIMIT)
    with pytest.raises(PathOutsideWorkspace):
        write_file(root, "leak.txt", b"pwned", LIMIT)
    assert (root / "leak.txt").is_symlink()
    assert_untouched(outside)


def test_chains_and_parent_links_are_followed_to_the_end(root, outside):
    (root / "hop2").symlink_to(outside, target_is_directory=True)
    (root / "hop1").symlink_to("hop2")  # relative, inside, but leads to one that goes out
    (root / "up").symlink_to("..")
    (root / "loop").symlink_to("loop")
    for path in ("hop1/secret.txt", "up/outside/secret.txt", "up"):
        with pytest.raises(PathOutsideWorkspace):
            read_file(root, path, LIMIT)
    with pytest.raises(PathOutsideWorkspace):
        list_dir(root, "up")
    with pytest.raises(HarnessError):
        read_file(root, "loop", LIMIT)
    assert_untouched(outside)


def test_listing_shows_links_out_as_symlinks_without_their_contents(root, outside):
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "f.txt").write_text("hi")
    entries = list_dir(root)
    assert [(e["name"], e["type"]) for e in entries] == [("f.txt", "file"), ("out", "symlink")]
    assert all("secret" not in e["path"] for e in entries)


def test_recursive_delete_removes_links_inside_the_tree_but_not_their_targets(root, outside):
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "f.txt").write_text("x")
    (root / "tree" / "sub" / "out").symlink_to(outside, target_is_directory=True)
    delete_path(root, "tree", recursive=True)
    assert not (root / "tree").exists()
    assert_untouched(outside)


def test_symlinks_inside_the_workspace_work_for_reading_and_listing(root):
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_text("inside")
    (root / "alias").symlink_to("real", target_is_directory=True)
    (root / "f-alias").symlink_to("real/f.txt")
    assert read_file(root, "alias/f.txt", LIMIT) == b"inside"
    assert read_file(root, "f-alias", LIMIT) == b"inside"
    assert [e["path"] for e in list_dir(root, "alias")] == ["real/f.txt"]
    write_file(root, "alias/g.txt", b"via alias", LIMIT)
    assert (root / "real" / "g.txt").read_bytes() == b"via alias"


def test_writing_to_a_symlink_is_refused_even_when_it_points_inside(root):
    (root / "f.txt").write_text("original")
    (root / "link").symlink_to("f.txt")
    with pytest.raises(BadRequest):
        write_file(root, "link", b"changed", LIMIT)
    assert (root / "f.txt").read_text() == "original"
    assert (root / "link").is_symlink()


@pytest.mark.timeout(60)
def test_a_folder_swapped_for_a_link_out_mid_operation_never_leaks(root, outside):
    """The agent may swap folders for symlinks while a request runs: the check-then-use race.
    A real thread flips `d` between a real folder and a link out as fast as it can."""
    (root / "real").mkdir()
    (root / "real" / "secret.txt").write_text("inside")
    (root / "lnk").symlink_to(outside, target_is_directory=True)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for src, dst in (("real", "d"), ("d", "real"), ("lnk", "d"), ("d", "lnk")):
                # A write below may create its own "d" and block a rename; the race goes on.
                with contextlib.suppress(OSError):
                    os.rename(root / src, root / dst)

    def race(operation, rounds: int) -> set[str]:
        outcomes: set[str] = set()
        flipper = threading.Thread(target=flip)
        flipper.start()
        try:
            for _ in range(rounds):
                try:
                    outcomes.add(repr(operation()))
                except HarnessError as exc:
                    outcomes.add(type(exc).__name__)
        finally:
            stop.set()
            flipper.join()
            stop.clear()
        return outcomes

    reads = race(lambda: read_file(root, "d/secret.txt", LIMIT), 1000)
    assert "b'SECRET'" not in reads
    assert "PathOutsideWorkspace" in reads  # the link out was met, and refused
    race(lambda: write_file(root, "d/secret.txt", b"pwned", LIMIT), 300)
    race(lambda: delete_path(root, "d/secret.txt"), 300)
    assert_untouched(outside)


# -- the happy paths --------------------------------------------------------------------------


def test_write_creates_parents_and_read_returns_the_bytes(root):
    info = write_file(root, "src/pkg/mod.py", b"print('hi')\n", LIMIT)
    assert info == {"path": "src/pkg/mod.py", "size": 12, "created": True}
    assert read_file(root, "src/pkg/mod.py", LIMIT) == b"print('hi')\n"
    assert write_file(root, "src/pkg/mod.py", b"", LIMIT)["created"] is False
    assert read_file(root, "src/pkg/mod.py", LIMIT) == b""
    assert sorted(p.name for p in (root / "src" / "pkg").iterdir()) == ["mod.py"]


def test_overwrite_keeps_the_file_mode(root):
    script = root / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    write_file(root, "run.sh", b"#!/bin/sh\necho hi\n", LIMIT)
    assert script.stat().st_mode & 0o777 == 0o755


def test_list_dir_entries_are_sorted_with_type_size_and_mtime(root):
    (root / "b.txt").write_text("12345")
    (root / "a-dir").mkdir()
    (root / "a-dir" / "nested.txt").write_text("n")
    (root / "c-link").symlink_to("b.txt")
    entries = list_dir(root, ".")
    assert [(e["name"], e["path"], e["type"]) for e in entries] == [
        ("a-dir", "a-dir", "dir"),
        ("b.txt", "b.txt", "file"),
        ("c-link", "c-link", "symlink"),
    ]
    assert entries[1]["size"] == 5 and entries[1]["mtime"] > 0
    assert list_dir(root, "a-dir")[0]["path"] == "a-dir/nested.txt"


def test_delete_needs_recursive_for_a_folder(root):
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f.txt").write_text("x")
    (root / "g.txt").write_text("x")
    assert delete_path(root, "g.txt") == {"path": "g.txt", "type": "file"}
    with pytest.raises(BadRequest):
        delete_path(root, "d")
    assert (root / "d" / "e" / "f.txt").exists()
    assert delete_path(root, "d", recursive=True) == {"path": "d", "type": "dir"}
    assert list_dir(root) == []


def test_missing_and_wrong_kinds_are_reported_clearly(root):
    (root / "dir").mkdir()
    (root / "file.txt").write_text("x")
    with pytest.raises(NotFound):
        read_file(root, "nope.txt", LIMIT)
    with pytest.raises(NotFound):
        list_dir(root, "nope")
    with pytest.raises(NotFound):
        delete_path(root, "nope/deeper.txt")
    with pytest.raises(BadRequest):
        read_file(root, "dir", LIMIT)
    with pytest.raises(BadRequest):
        list_dir(root, "file.txt")
    with pytest.raises(BadRequest):
        write_file(root, "dir", b"x", LIMIT)
    with pytest.raises(BadRequest):
        write_file(root, "file.txt/child.txt", b"x", LIMIT)


def test_size_limits_apply_to_reads_and_writes(root):
    (root / "big.bin").write_bytes(b"x" * 11)
    with pytest.raises(PayloadTooLarge) as caught:
        read_file(root, "big.bin", max_bytes=10)
    assert caught.value.details["size"] == 11
    assert read_file(root, "big.bin", max_bytes=11) == b"x" * 11
    with pytest.raises(PayloadTooLarge):
        write_file(root, "new.bin", b"y" * 11, max_bytes=10)
    assert not (root / "new.bin").exists()


@pytest.mark.timeout(10)
def test_reading_a_fifo_fails_at_once_instead_of_hanging(root):
    os.mkfifo(root / "pipe")
    with pytest.raises(BadRequest):
        read_file(root, "pipe", LIMIT)
    assert [e["type"] for e in list_dir(root)] == ["other"]


def test_a_workspace_root_reached_through_a_symlink_works(tmp_path, root):
    alias = tmp_path / "ws-alias"
    alias.symlink_to(root, target_is_directory=True)
    write_file(alias, "f.txt", b"x", LIMIT)
    assert read_file(alias, "f.txt", LIMIT) == b"x"
    assert (root / "f.txt").exists()
