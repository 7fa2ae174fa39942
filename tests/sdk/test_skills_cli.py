"""`vwm skill …`, `vwm worker skills|skill …` and the worker options for skills and learning,
through Typer's CliRunner against the real control plane."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from tests.support.skill_packages import skill_archive, skill_md
from vwm import Client

pytestmark = pytest.mark.xdist_group("sdk_live_control_plane")

Vwm = Callable[..., Result]


def package(tmp_path: Path, name: str = "lint", version: str = "1.0.0", text: str = "") -> Path:
    path = tmp_path / f"{name}-{version}{text}.tar.gz"
    path.write_bytes(skill_archive(name, version, files={"notes.md": text.encode()}))
    return path


@pytest.fixture
def runtime(live: Client) -> str:
    if "rt" not in {r["name"] for r in live.admin.list_runtimes()}:
        live.admin.create_runtime(name="rt", cli="claude", cli_version="2.1.197")
    return "rt"


def test_upload_prints_the_ref_and_sha256_and_says_when_it_was_uploaded_before(
    live_vwm: Vwm, tmp_path: Path
) -> None:
    path = package(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    first = live_vwm("skill", "upload", str(path))
    assert first.exit_code == 0, first.output
    assert first.stdout == f"lint@1.0.0 {sha}\n"
    assert "uploaded lint@1.0.0" in first.stderr

    again = live_vwm("skill", "upload", str(path), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) | {"created_at": None} == json.loads(again.stdout) | {
        "name": "lint",
        "version": "1.0.0",
        "sha256": sha,
        "created": False,
        "created_at": None,
    }
    assert "already uploaded" in again.stderr

    folder = tmp_path / "fmt"
    folder.mkdir()
    (folder / "SKILL.md").write_text(skill_md("fmt", "0.2.0"))
    from_folder = live_vwm("skill", "upload", str(folder))
    assert from_folder.exit_code == 0, from_folder.output
    assert from_folder.stdout.startswith("fmt@0.2.0 ")


@pytest.mark.parametrize(
    ("content", "code", "reason"),
    [
        (b"plain text", "skill_archive_invalid", "not_an_archive"),
        (skill_archive("lint", "latest"), "skill_archive_invalid", "bad_manifest"),
    ],
)
def test_upload_of_a_bad_package_prints_the_code_and_exits_1(
    live_vwm: Vwm, tmp_path: Path, content: bytes, code: str, reason: str
) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(content)
    refused = live_vwm("skill", "upload", str(path))
    assert (refused.exit_code, refused.stdout) == (1, "")
    first, details = refused.stderr.splitlines()
    assert first.startswith(f"error [{code}]: ")
    assert json.loads(details.removeprefix("  details: "))["reason"] == reason


def test_upload_refusals_other_content_a_link_and_a_missing_file(
    live_vwm: Vwm, tmp_path: Path
) -> None:
    assert live_vwm("skill", "upload", str(package(tmp_path))).exit_code == 0
    other = live_vwm("skill", "upload", str(package(tmp_path, text="other")))
    assert other.exit_code == 1
    assert other.stderr.startswith("error [skill_exists]: skill lint@1.0.0 is already uploaded")

    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "SKILL.md").symlink_to(tmp_path / "elsewhere.md")
    linked = live_vwm("skill", "upload", str(folder))
    assert linked.exit_code == 1
    assert linked.stderr.startswith("error [skill_package_invalid]: SKILL.md in ")
    assert "symbolic link" in linked.stderr

    missing = live_vwm("skill", "upload", str(tmp_path / "nowhere.zip"))
    assert missing.exit_code == 1
    assert (
        "error [skill_package_invalid]: " in missing.stderr and "does not exist" in missing.stderr
    )


def test_list_and_show(live_vwm: Vwm, tmp_path: Path) -> None:
    assert live_vwm("skill", "list").stderr.strip() == "(no skills)"
    for version in ("1.0.0", "1.2.0"):
        live_vwm("skill", "upload", str(package(tmp_path, version=version)))
    table = live_vwm("skill", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "version", "description"]
    assert [line.split()[:2] for line in lines[2:]] == [["lint", "1.2.0"], ["lint", "1.0.0"]]
    listed = json.loads(live_vwm("skill", "list", "--json").stdout)
    assert [s["version"] for s in listed] == ["1.2.0", "1.0.0"]

    versions = json.loads(live_vwm("skill", "show", "lint").stdout)
    assert (versions["latest"], len(versions["versions"])) == ("1.2.0", 2)
    one = json.loads(live_vwm("skill", "show", "lint@1.0.0").stdout)
    assert one["version"] == "1.0.0"
    assert json.loads(live_vwm("skill", "show", "lint@latest").stdout)["version"] == "1.2.0"

    missing = live_vwm("skill", "show", "ghost")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error [not_found]: no skill 'ghost'")
    assert live_vwm("skill", "show", "lint@").exit_code == 2


def test_download_to_the_default_name_a_file_and_stdout(
    live_vwm: Vwm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = package(tmp_path)
    live_vwm("skill", "upload", str(path))
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    saved = live_vwm("skill", "download", "lint")
    assert saved.exit_code == 0, saved.output
    assert (here / "lint-1.0.0.tar.gz").read_bytes() == path.read_bytes()
    assert saved.stderr.startswith("saved ")

    target = tmp_path / "copy.tgz"
    assert live_vwm("skill", "download", "lint@1.0.0", "-o", str(target)).exit_code == 0
    assert target.read_bytes() == path.read_bytes()

    piped = live_vwm("skill", "download", "lint@1.0.0", "-o", "-")
    assert piped.stdout_bytes == path.read_bytes()

    nowhere = live_vwm("skill", "download", "lint", "-o", str(tmp_path / "no" / "such.tgz"))
    assert nowhere.exit_code == 1
    assert nowhere.stderr.startswith("error [unwritable]: cannot write ")

    missing = live_vwm("skill", "download", "lint@9.0.0")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error [not_found]: ")


def test_delete_needs_a_version_and_an_unused_skill(
    live_vwm: Vwm, tmp_path: Path, runtime: str
) -> None:
    live_vwm("skill", "upload", str(package(tmp_path)))
    assert live_vwm("skill", "delete", "lint").exit_code == 2
    assert live_vwm("skill", "delete", "lint@latest").exit_code == 2
    created = live_vwm(
        "worker", "create", "alpha", "--runtime", runtime, "--repo-url", "https://example.com/kb.git",
        "--skill", "lint@1.0.0",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    in_use = live_vwm("skill", "delete", "lint@1.0.0")
    assert in_use.exit_code == 1
    assert in_use.stderr.startswith("error [in_use]: ")
    assert live_vwm("worker", "skill", "remove", "alpha", "lint").exit_code == 0
    deleted = live_vwm("skill", "delete", "lint@1.0.0")
    assert (deleted.exit_code, deleted.stderr) == (0, "deleted skill lint@1.0.0\n")
    assert live_vwm("skill", "list", "--json").stdout.strip() == "[]"


def test_worker_create_and_update_with_skills_and_learning(
    live_vwm: Vwm, tmp_path: Path, runtime: str
) -> None:
    for name in ("lint", "fmt"):
        live_vwm("skill", "upload", str(package(tmp_path, name)))
    created = live_vwm(
        "worker", "create", "alpha", "--runtime", runtime, "--repo-url", "https://example.com/kb.git",
        "--skill", "lint@1.0.0", "--skill", "fmt", "--auto-learning", "--learning-mode", "review",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    worker = json.loads(created.stdout)
    assert sorted(worker["skills"]) == ["fmt", "lint@1.0.0"]
    assert (worker["auto_learning"], worker["learning_mode"]) == (True, "review")

    updated = live_vwm("worker", "update", "alpha", "--skill", "fmt", "--learning-mode", "direct")
    assert updated.exit_code == 0, updated.output
    changed = json.loads(updated.stdout)
    assert (changed["skills"], changed["learning_mode"]) == (["fmt"], "direct")
    assert changed["revision"] > worker["revision"]
    kept = json.loads(live_vwm("worker", "update", "alpha", "--model", "opus").stdout)
    assert (kept["skills"], kept["model"]) == (["fmt"], "opus")  # no --skill: skills stay

    assert live_vwm("worker", "update", "alpha").exit_code == 2  # nothing to change
    assert live_vwm("worker", "update", "alpha", "--learning-mode", "sometimes").exit_code == 2
    unknown = live_vwm("worker", "update", "alpha", "--skill", "ghost")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error [skill_not_found]: no skill ghost is uploaded")


def test_a_workers_skills(live_vwm: Vwm, tmp_path: Path, runtime: str) -> None:
    for version in ("1.0.0", "1.1.0"):
        live_vwm("skill", "upload", str(package(tmp_path, version=version)))
    live_vwm(
        "worker", "create", "alpha", "--runtime", runtime, "--repo-url", "https://example.com/kb.git"
    )  # fmt: skip
    assert live_vwm("worker", "skills", "alpha").stderr.strip() == "(alpha uses no skills)"

    pinned = live_vwm("worker", "skill", "add", "alpha", "lint@1.0.0")
    assert pinned.exit_code == 0, pinned.output
    assert json.loads(pinned.stdout)["pinned"] == "1.0.0"
    assert "alpha uses lint, pinned to 1.0.0" in pinned.stderr
    follows = live_vwm("worker", "skill", "add", "alpha", "lint")
    assert json.loads(follows.stdout) | {"sha256": None, "description": None} == {
        "name": "lint",
        "pinned": None,
        "version": "1.1.0",
        "sha256": None,
        "description": None,
    }
    assert "following its latest, now 1.1.0" in follows.stderr

    table = live_vwm("worker", "skills", "alpha")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[2].split()[:3] == ["lint", "1.1.0", "(latest)"]
    assert json.loads(live_vwm("worker", "skills", "alpha", "--json").stdout)[0]["version"] == (
        "1.1.0"
    )

    missing = live_vwm("worker", "skill", "add", "alpha", "lint@7.0.0")
    assert (missing.exit_code, missing.stderr.split(":")[0]) == (1, "error [skill_not_found]")
    removed = live_vwm("worker", "skill", "remove", "alpha", "lint")
    assert (removed.exit_code, removed.stderr) == (0, "alpha no longer uses lint\n")
    nobody = live_vwm("worker", "skills", "nobody")
    assert (nobody.exit_code, nobody.stderr.split(":")[0]) == (1, "error [not_found]")
