"""Skill packages: good archives of both formats are read and written out with their modes, and
every archive of the hostile corpus (escapes, links, devices, bombs, lying headers, broken
manifests) is refused with its reason before anything is written.

Every archive is built here, with tarfile and zipfile, and with raw byte edits where those
libraries refuse to write the evil thing."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import struct
import subprocess
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from eventing.skill_archive import (
    REASONS,
    ArchiveLimits,
    SkillArchive,
    SkillArchiveError,
    SkillChecksumMismatch,
    SkillFile,
    SkillManifest,
    read_skill_archive,
    write_skill_tree,
)

DESCRIPTION = "Fills PDF forms. Use it when a task needs a form filled from data."


def skill_md(body: str = "# PDF tools\n\nRun scripts/fill.sh.\n", **fields: str | None) -> bytes:
    """A SKILL.md whose front matter has the given raw YAML values (None leaves a field out)."""
    values: dict[str, str | None] = {
        "name": "pdf-tools",
        "version": "1.2.0",
        "description": DESCRIPTION,
        **fields,
    }
    lines = [f"{key}: {value}" for key, value in values.items() if value is not None]
    return ("---\n" + "\n".join(lines) + "\n---\n" + body).encode()


SKILL_MD = skill_md()


# -- builders ---------------------------------------------------------------------------------


def member(name: str, data: bytes = b"", *, mode: int = 0o644, kind: bytes = tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def folder(name: str):
    return member(name, mode=0o755, kind=tarfile.DIRTYPE)


def tar_gz(*members: tuple[tarfile.TarInfo, bytes], form: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w:gz", format=form, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def zip_member(name: str, data: bytes = b"", *, mode: int = stat.S_IFREG | 0o644):
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.create_system = 3  # Unix: the high 16 bits of external_attr are the mode
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def zip_bytes(*members: tuple[zipfile.ZipInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, and writes it
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def pack(form: str, files: dict[str, bytes], *, executables: Collection[str] = ()) -> bytes:
    """An ordinary package of either format, folders listed before their files."""
    folders = sorted({path.rsplit("/", 1)[0] + "/" for path in files if "/" in path})
    if form == "zip":
        return zip_bytes(
            *(zip_member(name, mode=stat.S_IFDIR | 0o755) for name in folders),
            *(
                zip_member(
                    path, data, mode=stat.S_IFREG | (0o755 if path in executables else 0o644)
                )
                for path, data in files.items()
            ),
        )
    return tar_gz(
        *(folder(name) for name in folders),
        *(
            member(path, data, mode=0o755 if path in executables else 0o644)
            for path, data in files.items()
        ),
    )


def refused(
    data: bytes, reason: str, tmp_path: Path, limits: ArchiveLimits | None = None
) -> SkillArchiveError:
    """Reading `data` fails with `reason`, so unpacking it is never reached: nothing is written,
    not even the skills folder that write_skill_tree would create."""
    skills = tmp_path / "skills"
    with pytest.raises(SkillArchiveError) as caught:
        write_skill_tree(
            read_skill_archive(data, limits=limits or ArchiveLimits()), skills / "pdf-tools"
        )
    error = caught.value
    assert (error.reason, error.details["reason"]) == (reason, reason), error.message
    assert reason in REASONS
    assert (error.status, error.code, error.retryable) == (422, "skill_archive_invalid", False)
    assert "\x00" not in json.dumps(error.to_body())  # storable and loggable as it is
    assert not skills.exists()
    return error


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Each path under `root` with what it is and its mode bits (setuid/setgid/sticky included)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = (
            "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "?"
        )
        found[path.relative_to(root).as_posix()] = (kind, stat.S_IMODE(info.st_mode))
    return found


# -- good packages ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["tar.gz", "zip"])
def test_a_package_with_skill_md_at_the_root_is_read_whole(form):
    data = pack(form, {"SKILL.md": SKILL_MD, "references/forms.md": b"# Forms\n"})
    archive = read_skill_archive(data, expected_sha256=hashlib.sha256(data).hexdigest())
    assert archive.manifest == SkillManifest(
        name="pdf-tools",
        version="1.2.0",
        description=DESCRIPTION,
        fields={"name": "pdf-tools", "version": "1.2.0", "description": DESCRIPTION},
    )
    assert archive.files == (
        SkillFile("SKILL.md", SKILL_MD, False),
        SkillFile("references/forms.md", b"# Forms\n", False),
    )
    assert (archive.format, archive.size) == (form, len(data))
    assert archive.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("form", ["tar.gz", "zip"])
def test_one_top_folder_around_everything_is_stripped(form):
    data = pack(
        form,
        {
            "pdf-tools/SKILL.md": SKILL_MD,
            "pdf-tools/scripts/fill.sh": b"#!/bin/sh\necho filled\n",
            "pdf-tools/references/deep/er/still/notes.md": b"deep\n",
        },
        executables={"pdf-tools/scripts/fill.sh"},
    )
    archive = read_skill_archive(data)
    assert [(file.path, file.executable) for file in archive.files] == [
        ("SKILL.md", False),
        ("references/deep/er/still/notes.md", False),
        ("scripts/fill.sh", True),
    ]


def test_a_package_made_by_tar_itself_is_read(tmp_path):
    """What people run: `tar czf x.tgz myskill/` (a top folder) and `tar czf x.tgz -C myskill .`
    (every name starting with './', and a './' entry for the folder itself)."""
    source = tmp_path / "pdf-tools"
    (source / "scripts").mkdir(parents=True)
    (source / "SKILL.md").write_bytes(SKILL_MD)
    (source / "scripts" / "fill.sh").write_bytes(b"#!/bin/sh\n")
    (source / "scripts" / "fill.sh").chmod(0o755)
    for options in (["-C", str(tmp_path), "pdf-tools/"], ["-C", str(source), "."]):
        out = subprocess.run(["tar", "czf", "-", *options], check=True, capture_output=True)
        archive = read_skill_archive(out.stdout)
        assert [(file.path, file.executable) for file in archive.files] == [
            ("SKILL.md", False),
            ("scripts/fill.sh", True),
        ]


def test_front_matter_keeps_its_other_fields_and_dates_stay_text():
    text = skill_md(
        license="Apache-2.0",
        **{"allowed-tools": "[Read, Bash]"},
        metadata="{owner: docs-team, tier: 2, beta: true}",
        released="2024-05-01",
        description=">\n  Fills PDF forms.\n  Use it for forms.",
    )
    manifest = read_skill_archive(pack("zip", {"SKILL.md": text})).manifest
    assert manifest.description == "Fills PDF forms. Use it for forms."
    assert manifest.fields["license"] == "Apache-2.0"
    assert manifest.fields["allowed-tools"] == ["Read", "Bash"]
    assert manifest.fields["metadata"] == {"owner": "docs-team", "tier": 2, "beta": True}
    assert manifest.fields["released"] == "2024-05-01"  # not a datetime.date: JSON holds it
    json.dumps(manifest.fields)


@pytest.mark.parametrize(
    ("name", "version"),
    [("a", "0.0.0"), ("x" * 64, "1.0.0-rc.1+build.5"), ("pdf-tools-2", "10.20.30-alpha-1.0")],
)
def test_the_edges_of_the_name_and_version_rules_are_accepted(name, version):
    manifest = read_skill_archive(
        pack("tar.gz", {"SKILL.md": skill_md(name=name, version=version)})
    )
    assert (manifest.manifest.name, manifest.manifest.version) == (name, version)


def test_the_checksum_may_be_given_in_capitals():
    data = pack("tar.gz", {"SKILL.md": SKILL_MD})
    assert read_skill_archive(data, expected_sha256=hashlib.sha256(data).hexdigest().upper())


# -- write_skill_tree -------------------------------------------------------------------------


def test_the_tree_is_written_with_exact_modes_whatever_the_umask_and_setgid(tmp_path):
    data = pack(
        "zip",
        {"SKILL.md": SKILL_MD, "scripts/fill.sh": b"#!/bin/sh\n", "references/a/b.md": b"b"},
        executables={"scripts/fill.sh"},
    )
    skills = tmp_path / "skills"
    skills.mkdir()
    skills.chmod(0o2775)  # new folders inside would inherit setgid
    previous = os.umask(0o077)
    try:
        write_skill_tree(read_skill_archive(data), skills / "pdf-tools")
    finally:
        os.umask(previous)
    assert tree(skills / "pdf-tools") == {
        "SKILL.md": ("file", 0o644),
        "references": ("dir", 0o755),
        "references/a": ("dir", 0o755),
        "references/a/b.md": ("file", 0o644),
        "scripts": ("dir", 0o755),
        "scripts/fill.sh": ("file", 0o755),
    }
    assert stat.S_IMODE((skills / "pdf-tools").stat().st_mode) == 0o755
    assert (skills / "pdf-tools" / "SKILL.md").read_bytes() == SKILL_MD
    assert os.listdir(skills) == ["pdf-tools"]  # no temporary folder left


def test_an_existing_tree_is_replaced_and_nothing_else_is_left(tmp_path):
    dest = tmp_path / "skills" / "pdf-tools"
    (dest / "old" / "locked").mkdir(parents=True)
    (dest / "old" / "locked" / "gone.txt").write_text("old")
    (dest / "old" / "locked").chmod(0o555)  # the agent may leave a read-only folder
    (dest / "SKILL.md").write_text("old")
    write_skill_tree(read_skill_archive(pack("tar.gz", {"SKILL.md": SKILL_MD})), dest)
    assert tree(dest) == {"SKILL.md": ("file", 0o644)}
    assert (dest / "SKILL.md").read_bytes() == SKILL_MD
    assert os.listdir(dest.parent) == ["pdf-tools"]


def test_a_link_at_dest_is_replaced_and_its_target_left_alone(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    dest = tmp_path / "skills" / "pdf-tools"
    dest.parent.mkdir()
    dest.symlink_to(elsewhere)
    write_skill_tree(read_skill_archive(pack("zip", {"SKILL.md": SKILL_MD})), dest)
    assert not dest.is_symlink() and tree(dest) == {"SKILL.md": ("file", 0o644)}
    assert tree(elsewhere) == {"keep.txt": ("file", 0o644)}
    assert os.listdir(dest.parent) == ["pdf-tools"]


def test_a_failed_write_leaves_the_old_tree_and_no_temporary_folder(tmp_path):
    dest = tmp_path / "skills" / "pdf-tools"
    dest.mkdir(parents=True)
    (dest / "SKILL.md").write_text("old")
    manifest = read_skill_archive(pack("zip", {"SKILL.md": SKILL_MD})).manifest
    # Built by hand: "a" is a file, so the folder "a" for "a/b" cannot be made halfway through.
    clash = SkillArchive(
        manifest,
        (
            SkillFile("SKILL.md", SKILL_MD, False),
            SkillFile("a", b"", False),
            SkillFile("a/b", b"", False),
        ),
        sha256="0" * 64,
        size=0,
        format="zip",
    )
    with pytest.raises(OSError):
        write_skill_tree(clash, dest)
    assert (dest / "SKILL.md").read_text() == "old"
    assert os.listdir(dest.parent) == ["pdf-tools"]


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../b", "./SKILL.md", "a\\b", ""])
def test_write_refuses_a_hand_built_archive_with_a_bad_path(tmp_path, path):
    manifest = read_skill_archive(pack("zip", {"SKILL.md": SKILL_MD})).manifest
    evil = SkillArchive(manifest, (SkillFile(path, b"x", False),), "0" * 64, 0, "zip")
    with pytest.raises(ValueError):
        write_skill_tree(evil, tmp_path / "skills" / "pdf-tools")
    assert os.listdir(tmp_path) == []


def test_write_refuses_a_dest_whose_parent_is_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "skills").symlink_to(real)
    archive = read_skill_archive(pack("zip", {"SKILL.md": SKILL_MD}))
    with pytest.raises(ValueError, match="symbolic link"):
        write_skill_tree(archive, tmp_path / "skills" / "pdf-tools")
    assert os.listdir(real) == []


# -- the hostile corpus: names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: tar_gz(member("SKILL.md", SKILL_MD), member("../x", b"x")), "path_escape"),
        (
            lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("a/../../x", b"x")),
            "path_escape",
        ),
        (lambda: tar_gz(member("SKILL.md", SKILL_MD), member("a/../b", b"x")), "path_escape"),
        (
            lambda: tar_gz(member("SKILL.md", SKILL_MD), member("/etc/cron.d/x", b"x")),
            "absolute_path",
        ),
        (
            lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("/tmp/x", b"x")),
            "absolute_path",
        ),
        (
            lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("C:\\x", b"x")),
            "absolute_path",
        ),
        (
            lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("C:x", b"x")),
            "absolute_path",
        ),
        (
            lambda: tar_gz(member("SKILL.md", SKILL_MD), member("\\\\server\\x", b"x")),
            "absolute_path",
        ),
        (
            lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("a\\b.md", b"x")),
            "bad_name",
        ),
        (
            lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("a\nb.md", b"x")),
            "bad_name",
        ),
        (lambda: zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("", b"x")), "bad_name"),
        (lambda: tar_gz(member("SKILL.md", SKILL_MD), member("x/" * 33 + "f", b"x")), "bad_name"),
        (lambda: tar_gz(member("SKILL.md", SKILL_MD), member("a" * 401, b"x")), "bad_name"),
        (
            lambda: tar_gz(
                member("SKILL.md", SKILL_MD), member("caf\udce9.md", b"x"), form=tarfile.GNU_FORMAT
            ),
            "bad_name",
        ),
    ],
    ids=[
        "dotdot",
        "nested-dotdot-zip",
        "inner-dotdot",
        "absolute-tar",
        "absolute-zip",
        "windows-drive",
        "windows-drive-relative",
        "unc",
        "backslash",
        "newline",
        "empty",
        "too-deep",
        "too-long",
        "not-utf8",
    ],
)
def test_bad_names_are_refused(tmp_path, build: Callable[[], bytes], reason):
    error = refused(build(), reason, tmp_path)
    assert "path" in error.details
    assert "rebuild the archive" in error.message or "rename" in error.message


def test_the_escape_message_says_what_to_do(tmp_path):
    error = refused(
        tar_gz(member("SKILL.md", SKILL_MD), member("../x", b"x")), "path_escape", tmp_path
    )
    assert error.message == (
        "entry '../x' leaves the package folder ('..'); rebuild the archive with paths "
        "relative to the skill folder"
    )
    assert error.details == {"reason": "path_escape", "path": "../x"}


def test_a_nul_in_a_zip_name_is_refused(tmp_path):
    """zipfile cuts a name at NUL when writing, so the name is edited in the bytes (both the
    local header and the central directory), and reading must not cut it either."""
    data = zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("evilXname.md", b"x"))
    data = data.replace(b"evilXname.md", b"evil\x00name.md")
    error = refused(data, "bad_name", tmp_path)
    assert error.details["path"] == "evil\\x00name.md"


def test_a_nul_in_a_tar_pax_name_is_refused(tmp_path):
    info, data = member("placeholder", b"x")
    info.pax_headers = {"path": "evil\x00name.md"}
    refused(tar_gz(member("SKILL.md", SKILL_MD), (info, data)), "bad_name", tmp_path)


@pytest.mark.parametrize(
    "build",
    [
        lambda: tar_gz(member("SKILL.md", SKILL_MD), member("a.md", b"1"), member("a.md", b"2")),
        lambda: zip_bytes(
            zip_member("SKILL.md", SKILL_MD), zip_member("a.md", b"1"), zip_member("a.md", b"2")
        ),
        lambda: tar_gz(
            member("SKILL.md", SKILL_MD), member("a/b.md", b"1"), member("a/./b.md", b"2")
        ),
        lambda: tar_gz(member("SKILL.md", SKILL_MD), member("a", b"file"), member("a/b.md", b"2")),
        lambda: tar_gz(member("SKILL.md", SKILL_MD), member("a/b.md", b"1"), member("a", b"file")),
    ],
    ids=["tar", "zip", "after-normalizing", "file-then-folder", "folder-then-file"],
)
def test_the_same_path_twice_is_refused(tmp_path, build):
    refused(build(), "duplicate", tmp_path)


def test_duplicates_are_case_sensitive():
    archive = read_skill_archive(
        tar_gz(member("SKILL.md", SKILL_MD), member("a.md", b"1"), member("A.md", b"2"))
    )
    assert [file.path for file in archive.files] == ["A.md", "SKILL.md", "a.md"]


# -- the hostile corpus: entry types ----------------------------------------------------------


def _tar_special(kind: bytes, **attributes: object) -> bytes:
    info, data = member("evil", kind=kind)
    for name, value in attributes.items():
        setattr(info, name, value)
    return tar_gz(member("SKILL.md", SKILL_MD), (info, data))


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: _tar_special(tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
        (lambda: _tar_special(tarfile.LNKTYPE, linkname="SKILL.md"), "link"),
        (lambda: _tar_special(tarfile.CHRTYPE, devmajor=1, devminor=3), "special_file"),
        (lambda: _tar_special(tarfile.BLKTYPE, devmajor=8, devminor=0), "special_file"),
        (lambda: _tar_special(tarfile.FIFOTYPE), "special_file"),
        (lambda: _tar_special(b"V"), "special_file"),  # a volume label, no file at all
        (
            lambda: zip_bytes(
                zip_member("SKILL.md", SKILL_MD),
                zip_member("evil", b"/etc/passwd", mode=stat.S_IFLNK | 0o777),
            ),
            "link",
        ),
        (
            lambda: zip_bytes(
                zip_member("SKILL.md", SKILL_MD), zip_member("evil", mode=stat.S_IFIFO | 0o644)
            ),
            "special_file",
        ),
        (
            lambda: zip_bytes(
                zip_member("SKILL.md", SKILL_MD), zip_member("evil", mode=stat.S_IFSOCK | 0o644)
            ),
            "special_file",
        ),
        (
            lambda: zip_bytes(
                zip_member("SKILL.md", SKILL_MD), zip_member("evil", mode=stat.S_IFCHR | 0o644)
            ),
            "special_file",
        ),
    ],
    ids=[
        "tar-symlink",
        "tar-hardlink",
        "tar-char-device",
        "tar-block-device",
        "tar-fifo",
        "tar-unknown-type",
        "zip-symlink",
        "zip-fifo",
        "zip-socket",
        "zip-char-device",
    ],
)
def test_entries_that_are_not_files_or_folders_are_refused(tmp_path, build, reason):
    error = refused(build(), reason, tmp_path)
    assert error.details["path"] == "evil"


def test_a_zip_symlink_is_refused_whatever_system_it_claims(tmp_path):
    info, data = zip_member("evil", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)
    info.create_system = 0  # "MS-DOS": the mode bits are still what unzip would honour
    refused(zip_bytes(zip_member("SKILL.md", SKILL_MD), (info, data)), "link", tmp_path)


def test_an_encrypted_zip_entry_is_refused(tmp_path):
    data = bytearray(zip_bytes(zip_member("SKILL.md", SKILL_MD)))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        [info] = archive.infolist()
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 0x1  # general purpose flag bit 0: encrypted
    data[info.header_offset + 6] |= 0x1
    refused(bytes(data), "unsupported", tmp_path)


# -- the hostile corpus: counts and sizes -----------------------------------------------------


@pytest.mark.parametrize("form", ["tar.gz", "zip"])
def test_too_many_files_are_refused(tmp_path, form):
    files = {"SKILL.md": SKILL_MD} | {f"f{index}.md": b"x" for index in range(5)}
    assert read_skill_archive(pack(form, files), limits=ArchiveLimits(max_files=6))
    refused(pack(form, files), "too_many_files", tmp_path, ArchiveLimits(max_files=5))


def test_the_default_file_count_is_2000(tmp_path):
    files = {"SKILL.md": SKILL_MD} | {f"f{index}": b"" for index in range(2000)}
    error = refused(pack("tar.gz", files), "too_many_files", tmp_path)
    assert error.details["limit"] == 2000


@pytest.mark.parametrize("form", ["tar.gz", "zip"])
def test_one_file_too_large_is_refused(tmp_path, form):
    limits = ArchiveLimits(max_file_bytes=10_000)
    assert read_skill_archive(
        pack(form, {"SKILL.md": SKILL_MD, "ok": os.urandom(10_000)}), limits=limits
    )
    data = pack(form, {"SKILL.md": SKILL_MD, "big.bin": os.urandom(10_001)})
    assert refused(data, "file_too_large", tmp_path, limits).details["path"] == "big.bin"


@pytest.mark.parametrize("form", ["tar.gz", "zip"])
def test_all_files_together_too_large_are_refused(tmp_path, form):
    files = {"SKILL.md": SKILL_MD} | {f"part{index}.bin": os.urandom(4000) for index in range(3)}
    refused(pack(form, files), "too_large", tmp_path, ArchiveLimits(max_total_bytes=10_000))


def test_an_archive_over_its_own_limit_is_refused_before_it_is_opened(tmp_path):
    data = pack("zip", {"SKILL.md": SKILL_MD})
    refused(data, "too_large", tmp_path, ArchiveLimits(max_archive_bytes=len(data) - 1))


def _zeros_zip(size: int, entries: int = 1) -> bytes:
    return zip_bytes(
        zip_member("SKILL.md", SKILL_MD),
        *(zip_member(f"zeros{index}.bin", bytes(size)) for index in range(entries)),
    )


def test_a_zip_bomb_is_stopped_while_it_unpacks(tmp_path):
    """About 150 KB that unpack to 150 MB, over every default limit: the running count stops it
    at 200 times the archive's size, long before the end."""
    data = _zeros_zip(50 << 20, entries=3)
    assert len(data) < 200_000
    error = refused(data, "ratio", tmp_path)
    assert error.details["path"] == "zeros0.bin"


def test_a_zip_whose_headers_claim_small_sizes_gets_no_more_than_it_claims(tmp_path):
    """The bomb again, with both the local header and the central directory claiming 1 KB: the
    reader takes 1 KB, not 50 MB, and the checksum then shows the lie."""
    data = bytearray(_zeros_zip(50 << 20))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        bomb = archive.getinfo("zeros0.bin")
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1024)  # uncompressed size
    struct.pack_into("<I", data, bomb.header_offset + 22, 1024)
    error = refused(bytes(data), "corrupt", tmp_path)
    assert "CRC" in error.message


def test_a_header_that_admits_to_a_file_over_the_limit_is_refused_unread(tmp_path):
    """Sizes in headers are never trusted to be small, but one that claims too much is taken
    at its word: the entry is refused without decompressing it."""
    data = bytearray(zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("notes.md", b"small")))
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 60 << 20)
    error = refused(bytes(data), "file_too_large", tmp_path)
    assert error.details == {"reason": "file_too_large", "path": "notes.md", "limit": 50 << 20}


def test_a_high_ratio_tar_gz_is_refused(tmp_path):
    data = tar_gz(member("SKILL.md", SKILL_MD), member("zeros.bin", bytes(5 << 20)))
    assert len(data) < 20_000
    refused(data, "ratio", tmp_path)


def test_a_gzip_trailer_that_claims_a_small_size_is_not_believed(tmp_path):
    data = bytearray(tar_gz(member("SKILL.md", SKILL_MD), member("zeros.bin", bytes(5 << 20))))
    struct.pack_into("<I", data, len(data) - 4, 100)  # ISIZE: the unpacked length mod 2**32
    refused(bytes(data), "ratio", tmp_path)


def test_a_bomb_in_a_tar_header_is_stopped(tmp_path):
    """A pax header claiming megabytes: tarfile would read it all into memory; the decompressed
    stream is bounded whatever the headers say."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 5 << 20
    raw = header.tobuf(tarfile.USTAR_FORMAT) + bytes(5 << 20) + bytes(1024)
    data = gzip.compress(raw)
    limits = ArchiveLimits(max_total_bytes=1 << 20, max_files=10)
    refused(data, "too_large", tmp_path, limits)


def test_a_small_file_that_compresses_well_is_no_bomb():
    """Below the grace size, a very repetitive file is fine: the ratio judges bombs, not text."""
    repetitive = b"| cell | cell | cell |\n" * 20_000
    data = pack("tar.gz", {"SKILL.md": SKILL_MD, "table.md": repetitive})
    assert len(repetitive) > 200 * len(data)
    assert read_skill_archive(data).files[1].data == repetitive


# -- the hostile corpus: not an archive, damaged ----------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        SKILL_MD,
        b"PK\x05\x06" + bytes(18),  # an empty zip
    ],
    ids=["empty", "text", "bare-skill-md", "empty-zip"],
)
def test_what_is_not_an_archive_is_refused(tmp_path, data):
    error = refused(data, "not_an_archive", tmp_path)
    assert ".tar.gz" in error.message and ".zip" in error.message


def test_an_uncompressed_tar_is_not_an_archive_here(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info, data = member("SKILL.md", SKILL_MD)
        tar.addfile(info, io.BytesIO(data))
    refused(buffer.getvalue(), "not_an_archive", tmp_path)


@pytest.mark.parametrize(
    "cut",
    [lambda data: data[: len(data) // 2], lambda data: data[:-4], lambda data: data[:12]],
    ids=["half", "trailer", "header"],
)
def test_a_truncated_tar_gz_is_corrupt(tmp_path, cut):
    data = tar_gz(member("SKILL.md", SKILL_MD), member("notes.md", os.urandom(20_000)))
    refused(cut(data), "corrupt", tmp_path)


def test_gzip_that_is_not_a_tar_is_corrupt(tmp_path):
    refused(gzip.compress(b"just some text, no tar headers" * 100), "corrupt", tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"PK\x03\x04" + os.urandom(200),
        lambda data: data[: len(data) - 10],
        lambda data: data[: len(data) // 2],
        lambda data: data.replace(b"PK\x01\x02", b"PK\x01\x09", 1),
    ],
    ids=["garbage", "end-cut", "half", "central-directory"],
)
def test_a_corrupt_zip_is_refused(tmp_path, damage):
    data = zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("notes.md", os.urandom(2000)))
    refused(damage(data), "corrupt", tmp_path)


def test_damaged_zip_data_is_caught_by_its_checksum(tmp_path):
    data = bytearray(
        zip_bytes(zip_member("SKILL.md", SKILL_MD), zip_member("notes.bin", os.urandom(2000)))
    )
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("notes.bin")
    inside = info.header_offset + 30 + len(b"notes.bin") + 100  # stored random data barely shrinks
    data[inside] ^= 0xFF
    refused(bytes(data), "corrupt", tmp_path)


# -- the hostile corpus: the manifest ---------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        {"README.md": b"# no skill here\n"},
        {"skill.md": SKILL_MD},
        {"pdf-tools/docs/SKILL.md": SKILL_MD},
        {"one/SKILL.md": SKILL_MD, "two/SKILL.md": SKILL_MD},
        {"pdf-tools/SKILL.md": SKILL_MD, "stray.txt": b"x"},
    ],
    ids=["none", "lowercase", "too-deep", "two-top-folders", "top-folder-and-a-file"],
)
def test_a_package_without_one_skill_md_at_its_top_is_refused(tmp_path, files):
    error = refused(pack("tar.gz", files), "no_manifest", tmp_path)
    assert "SKILL.md" in error.message


def test_two_top_folders_are_named_in_the_message(tmp_path):
    data = pack("zip", {"one/SKILL.md": SKILL_MD, "two/SKILL.md": SKILL_MD})
    assert "'one', 'two'" in refused(data, "no_manifest", tmp_path).message


def test_a_folder_named_skill_md_is_no_manifest(tmp_path):
    refused(tar_gz(folder("SKILL.md"), member("SKILL.md/x", b"x")), "no_manifest", tmp_path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"# PDF tools\n\nNo front matter at all.\n", "front matter"),
        (b"\n---\nname: pdf-tools\n---\n", "front matter"),  # not at the very start
        (b"---\nname: pdf-tools\nversion: 1.2.0\n", "front matter"),  # never closed
        (b"---\n---\n", "mapping"),
        (b"---\n- a\n- b\n---\n", "mapping"),
        (b"---\nname: [unclosed\n---\n", "not valid YAML"),
        (b"---\nname: &n pdf-tools\nversion: *n\n---\n", "aliases"),
        (b"---\nname: pdf-tools\n\xff: x\n---\n", "UTF-8"),
        (b"---\nx: !!binary aGVsbG8=\n---\n", "bytes"),
        (b"---\nx: !!set {a, b}\n---\n", "set"),
        (b"---\nx: .nan\n---\n", "finite"),
        (b"---\n? [a, b]\n: x\n---\n", "YAML"),
        (b"---\nx: " + b"[" * 100 + b"]" * 100 + b"\n---\n", "deeper"),
    ],
    ids=[
        "no-front-matter",
        "not-at-start",
        "unclosed",
        "empty",
        "a-list",
        "bad-yaml",
        "alias",
        "not-utf8",
        "binary",
        "set",
        "nan",
        "list-key",
        "deep",
    ],
)
def test_missing_or_invalid_front_matter_is_refused(tmp_path, text, says):
    error = refused(pack("zip", {"SKILL.md": text}), "bad_manifest", tmp_path)
    assert says in error.message
    assert error.details["path"] == "SKILL.md"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "PDF-Tools"}, "name"),
        ({"name": "'my skill'"}, "name"),
        ({"name": "-pdf"}, "name"),
        ({"name": "pdf-"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "'../../etc'"}, "name"),
        ({"name": "123"}, "name"),  # YAML reads a number
        ({"name": None}, "name"),
        ({"version": "1.0"}, "version"),  # a float
        ({"version": "'1.0'"}, "version"),
        ({"version": "v1.2.3"}, "version"),
        ({"version": "01.2.3"}, "version"),
        ({"version": "1.2.3-01"}, "version"),
        ({"version": "1.2.3-"}, "version"),
        ({"version": "1.2.3+"}, "version"),
        ({"version": None}, "version"),
        ({"description": None}, "description"),
        ({"description": "''"}, "description"),
        ({"description": "'   '"}, "description"),
        ({"description": "x" * 1025}, "description"),
        ({"description": "|\n  one paragraph.\n\n  another one."}, "description"),
        ({"description": "[a, b]"}, "description"),
    ],
    ids=lambda value: str(value)[:30] if isinstance(value, dict) else value,
)
def test_a_bad_name_version_or_description_is_refused_and_named(tmp_path, fields, field):
    error = refused(pack("tar.gz", {"SKILL.md": skill_md(**fields)}), "bad_manifest", tmp_path)
    assert error.details["field"] == field
    assert f"'{field}'" in error.message


def test_the_messages_state_the_rule():
    with pytest.raises(SkillArchiveError) as caught:
        read_skill_archive(pack("zip", {"SKILL.md": skill_md(version="'v1'")}))
    assert "MAJOR.MINOR.PATCH" in caught.value.message
    with pytest.raises(SkillArchiveError) as caught:
        read_skill_archive(pack("zip", {"SKILL.md": skill_md(name="'My Skill'")}))
    assert "lowercase letters, digits and hyphens" in caught.value.message


# -- the checksum -----------------------------------------------------------------------------


def test_a_checksum_mismatch_is_refused_before_the_archive_is_read(tmp_path):
    data = b"not an archive at all"  # parsing it would say not_an_archive
    with pytest.raises(SkillChecksumMismatch) as caught:
        read_skill_archive(data, expected_sha256="ab" * 32)
    error = caught.value
    assert (error.status, error.code) == (422, "skill_checksum_mismatch")
    assert isinstance(error, SkillArchiveError) and error.reason == "checksum_mismatch"
    assert error.details["expected"] == "ab" * 32
    assert error.details["actual"] == hashlib.sha256(data).hexdigest()
    good = pack("zip", {"SKILL.md": SKILL_MD})
    with pytest.raises(SkillChecksumMismatch):
        read_skill_archive(good, expected_sha256=hashlib.sha256(good + b"x").hexdigest())
