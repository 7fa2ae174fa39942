"""Small, valid skill packages built in memory, for tests that install skills: a SKILL.md with
the front matter `eventing.skill_archive` requires (name, version, description), packed as
tar.gz, and its SHA-256 as the harness's ``X-VWM-Skill-SHA256`` header wants it."""

from __future__ import annotations

import hashlib
import io
import tarfile

SHA256_HEADER = "X-VWM-Skill-SHA256"
ARCHIVE_HEADERS = {"content-type": "application/octet-stream"}


def skill_md(name: str, version: str = "1.0.0", description: str = "Does a thing.") -> str:
    return f"---\nname: {name}\nversion: {version}\ndescription: {description}\n---\n\n# {name}\n"


def tar_gz(files: dict[str, bytes], *, executable: frozenset[str] = frozenset()) -> bytes:
    """A tar.gz of regular files, mode 0755 for those named in `executable`, 0644 otherwise."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if path in executable else 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def skill_archive(
    name: str,
    version: str = "1.0.0",
    description: str = "Does a thing.",
    *,
    files: dict[str, bytes] | None = None,
    executable: frozenset[str] = frozenset(),
) -> bytes:
    """A skill package: SKILL.md at the root plus `files`."""
    manifest = skill_md(name, version, description).encode()
    return tar_gz({"SKILL.md": manifest, **(files or {})}, executable=executable)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def install_headers(data: bytes) -> dict[str, str]:
    """The headers of ``PUT /v1/skills/{name}`` for the archive `data`."""
    return {**ARCHIVE_HEADERS, SHA256_HEADER: sha256(data)}
