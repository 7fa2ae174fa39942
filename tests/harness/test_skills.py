"""Skills over real HTTP to a real harness process: install, replace, install again, remove and
list; every refusal (checksum, archive, name, size, media type) answers its code and writes
nothing; a restarted harness still knows what is installed.

The harness drives Claude Code here, whose skills folder is ``.cli-home/.claude/skills`` (which
CLI reads which folder, and that it offers the skill to the model, is tests/e2e/test_skills_clis.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventing.harness_api import SkillInstallOutcome, SkillListing
from harness.adapters import get_adapter
from harness.errors import HarnessError
from harness.skills import Skills, SkillsUnsupported
from harness.workspace import Workspace
from tests.support.harness_process import HarnessProcess
from tests.support.skill_packages import (
    ARCHIVE_HEADERS,
    SHA256_HEADER,
    skill_archive,
    skill_md,
    tar_gz,
)
from tests.support.skill_packages import sha256 as sha

SHA_HEADER = SHA256_HEADER
OCTETS = ARCHIVE_HEADERS
RUN_SH = b"#!/bin/sh\necho one\n"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessProcess]:
    root = tmp_path_factory.mktemp("skills-harness")
    workspace = root / "workspace"
    process = HarnessProcess(workspace, "claude", {}, root / "harness.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(harness: HarnessProcess) -> Iterator[httpx.Client]:
    with harness.client(timeout=30) as http:
        yield http


def skills_dir(harness: HarnessProcess) -> Path:
    found = get_adapter("claude").skills_dir(harness.workspace / ".cli-home")
    assert found is not None
    return found


def put(client: httpx.Client, name: str, data: bytes, digest: str | None = None) -> httpx.Response:
    headers = {**OCTETS, SHA_HEADER: sha(data) if digest is None else digest}
    return client.put(f"/v1/skills/{name}", content=data, headers=headers)


def recorded(harness: HarnessProcess) -> dict[str, object]:
    state = json.loads((harness.workspace / ".vwm" / "state.json").read_text())
    skills: dict[str, object] = state.get("skills", {})
    return skills


def snapshot(workspace: Path) -> list[tuple[str, int, int]]:
    found = []
    for directory, folders, names in os.walk(workspace):
        for name in [*folders, *names]:
            stat = (Path(directory) / name).lstat()
            found.append(
                (
                    str((Path(directory) / name).relative_to(workspace)),
                    stat.st_size,
                    stat.st_mtime_ns,
                )
            )
    return sorted(found)


def test_install_list_replace_and_remove(client: httpx.Client, harness: HarnessProcess) -> None:
    first = skill_archive(
        "pdf-tools", "1.0.0", files={"run.sh": RUN_SH}, executable=frozenset({"run.sh"})
    )
    answer = put(client, "pdf-tools", first)
    assert answer.status_code == 200, answer.text
    assert SkillInstallOutcome.model_validate(answer.json()) == SkillInstallOutcome(
        name="pdf-tools", version="1.0.0", sha256=sha(first), installed=True
    )
    tree = skills_dir(harness) / "pdf-tools"
    assert (tree / "SKILL.md").read_text() == skill_md("pdf-tools", "1.0.0")
    assert (tree / "run.sh").read_bytes() == RUN_SH
    assert os.access(tree / "run.sh", os.X_OK)
    assert recorded(harness)["pdf-tools"] == {"version": "1.0.0", "sha256": sha(first)}
    assert not (harness.workspace / "session_repo").exists()  # never where the task's repo is

    second = skill_archive("pdf-tools", "1.1.0", files={"other.txt": b"two\n"})
    answer = put(client, "pdf-tools", second)
    assert answer.json() == {
        "name": "pdf-tools",
        "version": "1.1.0",
        "sha256": sha(second),
        "installed": True,
    }
    assert sorted(p.name for p in tree.iterdir()) == ["SKILL.md", "other.txt"]  # replaced whole
    assert [p.name for p in skills_dir(harness).iterdir()] == ["pdf-tools"]  # nothing left over

    listing = client.get("/v1/skills")
    assert SkillListing.model_validate(listing.json()).items[0].version == "1.1.0"

    assert client.delete("/v1/skills/pdf-tools").status_code == 204
    assert not tree.exists() and "pdf-tools" not in recorded(harness)
    assert client.get("/v1/skills").json() == {"items": []}
    assert client.delete("/v1/skills/pdf-tools").status_code == 204  # idempotent
    assert list(skills_dir(harness).iterdir()) == []


def test_the_same_archive_again_changes_nothing(
    client: httpx.Client, harness: HarnessProcess
) -> None:
    data = skill_archive("same-again")
    assert put(client, "same-again", data).json()["installed"] is True
    before = snapshot(harness.workspace)
    again = put(client, "same-again", data)
    assert again.status_code == 200
    assert again.json() == {
        "name": "same-again",
        "version": "1.0.0",
        "sha256": sha(data),
        "installed": False,
    }
    assert snapshot(harness.workspace) == before
    client.delete("/v1/skills/same-again")


def test_a_zip_archive_in_a_top_folder_installs(
    client: httpx.Client, harness: HarnessProcess
) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("zipped/SKILL.md", skill_md("zipped"))
        archive.writestr("zipped/notes/a.md", "a\n")
    answer = put(client, "zipped", out.getvalue())
    assert answer.status_code == 200, answer.text
    assert (skills_dir(harness) / "zipped" / "notes" / "a.md").read_text() == "a\n"
    client.delete("/v1/skills/zipped")


def test_listing_is_sorted_by_name(client: httpx.Client) -> None:
    for name in ("zeta", "alpha", "mid-1"):
        assert put(client, name, skill_archive(name)).status_code == 200
    items = client.get("/v1/skills").json()["items"]
    assert [item["name"] for item in items] == ["alpha", "mid-1", "zeta"]
    assert set(items[0]) == {"name", "version", "sha256"}
    for name in ("zeta", "alpha", "mid-1"):
        client.delete(f"/v1/skills/{name}")


def _refused(
    client: httpx.Client, harness: HarnessProcess, request: httpx.Request, status: int, code: str
) -> dict[str, object]:
    before = snapshot(harness.workspace)
    answer = client.send(request)
    assert answer.status_code == status, answer.text
    error: dict[str, object] = answer.json()["error"]
    assert error["code"] == code, error
    assert snapshot(harness.workspace) == before  # nothing written
    assert "Traceback" not in harness.log()
    return error


def test_a_checksum_mismatch_is_refused(client: httpx.Client, harness: HarnessProcess) -> None:
    data = skill_archive("checked")
    wrong = sha(data + b"x")
    request = client.build_request(
        "PUT", "/v1/skills/checked", content=data, headers={**OCTETS, SHA_HEADER: wrong}
    )
    error = _refused(client, harness, request, 422, "skill_checksum_mismatch")
    details = error["details"]
    assert isinstance(details, dict)
    assert (details["reason"], details["expected"], details["actual"]) == (
        "checksum_mismatch",
        wrong,
        sha(data),
    )


@pytest.mark.parametrize(
    ("label", "data", "reason"),
    [
        ("not an archive", b"just some text, not an archive", "not_an_archive"),
        (
            "a path that climbs out",
            tar_gz({"SKILL.md": skill_md("bad-archive").encode(), "../escape.txt": b"x"}),
            "path_escape",
        ),
        ("no manifest", tar_gz({"README.md": b"no manifest here\n"}), "no_manifest"),
    ],
)
def test_a_bad_archive_is_refused(
    client: httpx.Client, harness: HarnessProcess, label: str, data: bytes, reason: str
) -> None:
    request = client.build_request(
        "PUT", "/v1/skills/bad-archive", content=data, headers={**OCTETS, SHA_HEADER: sha(data)}
    )
    error = _refused(client, harness, request, 422, "skill_archive_invalid")
    assert error["details"]["reason"] == reason, label  # type: ignore[index]


def test_the_manifest_must_name_the_skill_in_the_url(
    client: httpx.Client, harness: HarnessProcess
) -> None:
    data = skill_archive("other-name")
    request = client.build_request(
        "PUT", "/v1/skills/url-name", content=data, headers={**OCTETS, SHA_HEADER: sha(data)}
    )
    error = _refused(client, harness, request, 422, "skill_name_mismatch")
    assert error["details"] == {"name": "url-name", "manifest_name": "other-name"}


@pytest.mark.parametrize(
    "name", ["Upper", "-lead", "trail-", "under_score", "a" * 65, "dot.ted", ".hidden"]
)
def test_a_bad_name_in_the_url_is_refused_first(
    client: httpx.Client, harness: HarnessProcess, name: str
) -> None:
    # No media type, no checksum, no archive: the name is judged before any of them.
    for method in ("PUT", "DELETE"):
        request = client.build_request(
            method,
            f"/v1/skills/{name}",
            content=b"x" if method == "PUT" else None,
            headers={"content-type": "text/plain"},
        )
        _refused(client, harness, request, 422, "skill_name_invalid")


def test_a_body_over_the_archive_limit_is_413(
    client: httpx.Client, harness: HarnessProcess
) -> None:
    limit = 20 << 20
    big = b"\0" * (limit + 1)
    request = client.build_request(
        "PUT", "/v1/skills/too-big", content=big, headers={**OCTETS, SHA_HEADER: sha(big)}
    )
    error = _refused(client, harness, request, 413, "payload_too_large")
    assert "skill archive is at most" in str(error["message"])
    assert error["details"] == {"limit": limit}


def test_an_archive_over_the_json_limit_is_taken(
    client: httpx.Client, harness: HarnessProcess
) -> None:
    # Over the harness's 1 MiB limit for JSON bodies, well under the archive limit: incompressible
    # bytes, so the archive itself is that big.
    payload = hashlib.shake_256(b"seed").digest(2 << 20)
    data = skill_archive("roomy", files={"blob.bin": payload})
    assert len(data) > 1 << 20
    answer = put(client, "roomy", data)
    assert answer.status_code == 200, answer.text
    assert (skills_dir(harness) / "roomy" / "blob.bin").read_bytes() == payload
    client.delete("/v1/skills/roomy")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"content-type": "application/json"}, 415, "unsupported_media_type"),
        ({**OCTETS}, 400, "invalid_parameter"),  # no checksum header
        ({**OCTETS, SHA_HEADER: "abc"}, 400, "invalid_parameter"),
        ({**OCTETS, SHA_HEADER: "g" * 64}, 400, "invalid_parameter"),
    ],
)
def test_the_media_type_and_the_checksum_header_are_checked(
    client: httpx.Client, harness: HarnessProcess, headers: dict[str, str], status: int, code: str
) -> None:
    data = skill_archive("headers")
    request = client.build_request("PUT", "/v1/skills/headers", content=data, headers=headers)
    _refused(client, harness, request, status, code)


def test_the_skill_routes_need_the_token(harness: HarnessProcess) -> None:
    with httpx.Client(base_url=harness.url, timeout=30) as anonymous:
        assert anonymous.get("/v1/skills").status_code == 401
        data = skill_archive("anon")
        answer = anonymous.put("/v1/skills/anon", content=data, headers={SHA_HEADER: sha(data)})
        assert answer.status_code == 401
        assert anonymous.delete("/v1/skills/anon").status_code == 401


def test_a_restarted_harness_knows_what_is_installed(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    data = skill_archive("kept", "2.0.0")
    process = HarnessProcess(workspace, "claude", {}, tmp_path / "harness.log")
    process.start()
    try:
        with process.client(timeout=30) as client:
            assert put(client, "kept", data).status_code == 200
    finally:
        process.stop()
    process = HarnessProcess(workspace, "claude", {}, tmp_path / "harness.log")
    process.start()
    try:
        with process.client(timeout=30) as client:
            assert client.get("/v1/skills").json() == {
                "items": [{"name": "kept", "version": "2.0.0", "sha256": sha(data)}]
            }
            assert put(client, "kept", data).json()["installed"] is False
    finally:
        process.stop()


def test_a_recorded_skill_whose_folder_is_gone_is_not_listed_and_installs_again(
    client: httpx.Client, harness: HarnessProcess
) -> None:
    data = skill_archive("vanishing")
    put(client, "vanishing", data)
    tree = skills_dir(harness) / "vanishing"
    for path in sorted(tree.rglob("*"), reverse=True):
        path.unlink()
    tree.rmdir()
    assert client.get("/v1/skills").json() == {"items": []}
    assert put(client, "vanishing", data).json()["installed"] is True
    assert (tree / "SKILL.md").is_file()
    client.delete("/v1/skills/vanishing")


async def test_a_cli_without_skills_refuses_installs_and_lists_none(tmp_path: Path) -> None:
    # No pinned CLI lacks skills today; the contract allows it (`skills_dir` returns None).
    skills = Skills(Workspace(tmp_path / "workspace"), None)
    data = skill_archive("any-skill")
    with pytest.raises(SkillsUnsupported) as refused:
        await skills.install("any-skill", data, sha(data))
    assert (refused.value.status, refused.value.code) == (409, "skills_unsupported")
    with pytest.raises(SkillsUnsupported):
        await skills.remove("any-skill")
    assert skills.installed() == []
    assert not (tmp_path / "workspace").exists()


async def test_a_link_in_the_cli_home_never_sends_an_install_elsewhere(tmp_path: Path) -> None:
    # The CLI can write its own home: a planted link must not lead an install out of it.
    workspace = Workspace(tmp_path / "workspace")
    workspace.ensure_dirs()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workspace.cli_home / ".claude").symlink_to(elsewhere)
    skills = Skills(workspace, get_adapter("claude").skills_dir(workspace.cli_home))
    data = skill_archive("linked")
    with pytest.raises(HarnessError) as refused:
        await skills.install("linked", data, sha(data))
    assert (refused.value.status, refused.value.code) == (409, "skills_dir_unsafe")
    assert list(elsewhere.iterdir()) == []
    assert "skills" not in workspace.load_state()
