"""Skills and a worker's skills in the SDK (`client.admin`), against the real control plane:
upload from bytes, a file or a folder (packed the same way every time), immutability, listing,
download with the checksum checked, deletion, workers that pin or follow a skill."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.support.skill_packages import skill_archive, skill_md
from vwm import Client, ConflictError, NotFoundError, ValidationError
from vwm.errors import ProtocolError
from vwm.sdk.skill_package import pack_folder, read_package

pytestmark = pytest.mark.xdist_group("sdk_live_control_plane")


def skill_folder(root: Path, name: str = "lint", version: str = "1.0.0") -> Path:
    folder = root / name
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(skill_md(name, version, "Lints the code."))
    (folder / "scripts" / "run.sh").write_text("#!/bin/sh\necho lint\n")
    (folder / "scripts" / "run.sh").chmod(0o700)
    (folder / "notes.txt").write_text("how to lint\n")
    return folder


# Packing a folder (no control plane needed).


def test_a_folder_packs_to_the_same_bytes_whenever_it_is_packed(tmp_path: Path) -> None:
    folder = skill_folder(tmp_path)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    first = pack_folder(folder)
    for path in folder.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert pack_folder(folder) == first

    assert gzip.decompress(first)  # a plain gzip stream
    assert first[4:8] == b"\0\0\0\0"  # the gzip header's time
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["SKILL.md", "notes.txt", "scripts/run.sh"]
        assert {(m.mode, m.mtime, m.uid, m.uname, m.gname) for m in members[:2]} == {
            (0o644, 0, 0, "", "")
        }
        assert members[2].mode == 0o755  # executable stays executable
        run = archive.extractfile("scripts/run.sh")
        assert run is not None and run.read() == b"#!/bin/sh\necho lint\n"


def test_a_link_or_a_special_file_in_the_folder_is_refused(tmp_path: Path) -> None:
    folder = skill_folder(tmp_path)
    (folder / "scripts" / "secret").symlink_to("/etc/hostname")
    with pytest.raises(ValidationError) as link:
        read_package(folder)
    assert link.value.code == "skill_package_invalid"
    assert link.value.details == {"reason": "link", "path": "scripts/secret"}
    assert "symbolic link" in link.value.message

    (folder / "scripts" / "secret").unlink()
    os.mkfifo(folder / "pipe")
    with pytest.raises(ValidationError) as fifo:
        read_package(folder)
    assert fifo.value.details == {"reason": "special_file", "path": "pipe"}

    with pytest.raises(ValidationError) as missing:
        read_package(tmp_path / "nowhere.tar.gz")
    assert missing.value.details["reason"] == "not_found"


# Against the control plane.


def test_upload_list_show_download_and_delete(live: Client, tmp_path: Path) -> None:
    data = skill_archive("lint", "1.0.0", "Lints the code.", files={"run.sh": b"echo\n"})
    uploaded = live.admin.upload_skill(data)
    assert (uploaded.ref, uploaded.created) == ("lint@1.0.0", True)
    assert (uploaded.description, uploaded.format, uploaded.size) == (
        "Lints the code.",
        "tar.gz",
        len(data),
    )
    assert uploaded.sha256 == hashlib.sha256(data).hexdigest()
    assert uploaded.manifest["files"] == 2

    again = live.admin.upload_skill(data)  # the same package: nothing new
    assert (again.created, again.sha256) == (False, uploaded.sha256)

    package = tmp_path / "lint-2.tar.gz"
    package.write_bytes(skill_archive("lint", "2.0.0"))
    assert live.admin.upload_skill(package).version == "2.0.0"  # from a file
    live.admin.upload_skill(str(skill_folder(tmp_path, "fmt", "0.1.0")))  # from a folder

    assert [s.ref for s in live.admin.list_skills()] == ["fmt@0.1.0", "lint@2.0.0", "lint@1.0.0"]
    versions = live.admin.get_skill("lint")
    assert (versions.latest, [v.version for v in versions.versions]) == (
        "2.0.0",
        ["2.0.0", "1.0.0"],
    )
    assert live.admin.get_skill_version("lint").version == "2.0.0"  # latest
    assert live.admin.get_skill_version("lint", "1.0.0").sha256 == uploaded.sha256

    assert live.admin.download_skill("lint", "1.0.0") == data
    saved = live.admin.save_skill("lint", "1.0.0", tmp_path)
    assert (saved.name, saved.read_bytes()) == ("lint-1.0.0.tar.gz", data)
    named = live.admin.save_skill("lint", path=tmp_path / "newest.tgz")
    assert named.read_bytes() == package.read_bytes()

    live.admin.delete_skill("lint", "1.0.0")
    with pytest.raises(NotFoundError):
        live.admin.get_skill_version("lint", "1.0.0")
    with pytest.raises(NotFoundError):
        live.admin.download_skill("ghost")


def test_a_folder_uploaded_again_after_a_touch_is_already_uploaded(
    live: Client, tmp_path: Path
) -> None:
    folder = skill_folder(tmp_path)
    assert live.admin.upload_skill(folder).created
    os.utime(folder / "notes.txt", (2_000_000, 2_000_000))
    assert not live.admin.upload_skill(folder).created
    (folder / "notes.txt").write_text("changed\n")  # other content, same version
    with pytest.raises(ConflictError) as conflict:
        live.admin.upload_skill(folder)
    assert conflict.value.code == "skill_exists"
    assert "raise the version" in conflict.value.message


@pytest.mark.parametrize(
    ("package", "reason"),
    [(b"not an archive", "not_an_archive"), (skill_archive("x", "one"), "bad_manifest")],
    ids=["junk", "bad-version"],
)
def test_a_bad_package_is_refused_with_the_api_code(
    live: Client, package: bytes, reason: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        live.admin.upload_skill(package)
    assert (refused.value.status, refused.value.code) == (422, "skill_archive_invalid")
    assert refused.value.details["reason"] == reason
    assert live.admin.list_skills() == []


def test_workers_pin_or_follow_skills(live: Client) -> None:
    for version in ("1.0.0", "1.1.0"):
        live.admin.upload_skill(skill_archive("lint", version))
    live.admin.upload_skill(skill_archive("fmt", "0.1.0"))
    live.admin.create_runtime(name="rt", cli="claude", cli_version="2.1.197")
    worker = live.admin.create_worker(
        name="alpha",
        runtime="rt",
        repo_url="https://example.com/kb.git",
        skills=["lint@1.0.0", "fmt"],
        learning_mode="review",
    )
    assert (sorted(worker["skills"]), worker["learning_mode"]) == (
        ["fmt", "lint@1.0.0"],
        "review",
    )
    assert isinstance(worker["revision"], int)

    used = {s.name: s for s in live.admin.list_worker_skills("alpha")}
    assert (used["lint"].pinned, used["lint"].version) == ("1.0.0", "1.0.0")
    assert (used["fmt"].follows_latest, used["fmt"].version) == (True, "0.1.0")

    follows = live.admin.add_worker_skill("alpha", "lint")  # unpinned: the latest
    assert (follows.pinned, follows.version) == (None, "1.1.0")
    pinned = live.admin.add_worker_skill("alpha", "lint", "1.0.0")
    assert (pinned.pinned, pinned.version, pinned.description) == (
        "1.0.0",
        "1.0.0",
        "Does a thing.",
    )

    with pytest.raises(ConflictError) as in_use:
        live.admin.delete_skill("lint", "1.0.0")
    assert in_use.value.code == "in_use"
    with pytest.raises(ValidationError) as missing:
        live.admin.add_worker_skill("alpha", "lint", "9.9.9")
    assert missing.value.code == "skill_not_found"

    live.admin.remove_worker_skill("alpha", "lint")
    assert [s.name for s in live.admin.list_worker_skills("alpha")] == ["fmt"]
    live.admin.delete_skill("lint", "1.0.0")  # no longer used

    updated = live.admin.update_worker("alpha", skills=["lint@1.1.0"])  # the whole set
    assert updated["skills"] == ["lint@1.1.0"]
    assert updated["revision"] > worker["revision"]
    with pytest.raises(NotFoundError):
        live.admin.list_worker_skills("nobody")


def test_a_download_that_does_not_match_its_checksum_is_refused() -> None:
    """The control plane checks the stored blob; this is the wire after it (a proxy that cut
    the body), which only a stand-in for the server can produce."""

    def damaged(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=b"cut short",
            headers={"x-vwm-skill-sha256": hashlib.sha256(b"the package").hexdigest()},
        )

    transport = httpx.MockTransport(damaged)
    with (
        Client("http://vwm.test", "k", transport=transport) as client,
        pytest.raises(ProtocolError) as caught,
    ):
        client.admin.download_skill("lint", "1.0.0")
    assert caught.value.code == "skill_checksum_mismatch"
