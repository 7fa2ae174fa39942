"""The skills admin API over real HTTP to the embedded app in this process, with its blobs in a
folder and in an S3 bucket (moto in server mode): upload, immutability, listing, download with
the checksum checked, deletion refused while a worker uses a version, and a worker's pins."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from functions.blobs import BlobStore, open_blob_store
from functions.embedded import create_app, prepare
from functions.services import Services
from functions.settings import ControlPlaneSettings
from tests.support.lifespan import serving
from tests.support.moto_s3 import S3Server, s3_server
from tests.support.skill_packages import skill_archive, tar_gz

__all__ = ["s3_server"]

pytestmark = pytest.mark.xdist_group("skills_api")


@dataclass
class Admin:
    client: httpx.AsyncClient
    store: BlobStore  # the app's blob store, opened again from its settings
    count_blobs: Callable[[], int]  # what is stored, counted from outside the store

    @staticmethod
    def key(name: str, version: str, data: bytes) -> str:
        return f"skills/{name}/{version}/{hashlib.sha256(data).hexdigest()}.tar.gz"


def _files_in(folder: Path) -> Callable[[], int]:
    return lambda: sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _objects_in(server: S3Server, bucket: str) -> Callable[[], int]:
    return lambda: int(server.client().list_objects_v2(Bucket=bucket)["KeyCount"])


@pytest.fixture(params=["local", "s3"])
async def admin(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> AsyncIterator[Admin]:
    env = {"VWM_DATA_DIR": str(tmp_path / "data"), "VWM_SANDBOX": "off"}
    if request.param == "s3":
        bucket = s3_server.create_bucket("skills")
        env |= s3_server.env(bucket)
    settings = ControlPlaneSettings.from_env(env)
    count = (
        _objects_in(s3_server, bucket)
        if request.param == "s3"
        else _files_in(settings.blobs.local_dir)
    )
    key = prepare(settings.database_url)
    async with serving(create_app(Services.build(settings), close_services=True)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield Admin(client, open_blob_store(settings.blobs), count)


ARCHIVE = {"content-type": "application/octet-stream"}


async def upload(admin: Admin, data: bytes) -> httpx.Response:
    return await admin.client.post("/v1/admin/skills", content=data, headers=ARCHIVE)


async def test_an_upload_is_stored_with_its_checksum_and_served_back(admin: Admin) -> None:
    data = skill_archive("lint", "1.2.0", "Lints the code.", files={"run.sh": b"echo hi\n"})
    created = await upload(admin, data)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["version"], body["description"]) == (
        "lint",
        "1.2.0",
        "Lints the code.",
    )
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size"] == len(data)
    assert body["format"] == "tar.gz"
    assert admin.count_blobs() == 1
    assert await admin.store.exists(admin.key("lint", "1.2.0", data))
    download = await admin.client.get("/v1/admin/skills/lint/1.2.0/archive")
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["x-vwm-skill-sha256"] == body["sha256"]
    shown = await admin.client.get("/v1/admin/skills/lint/latest")
    assert shown.json()["version"] == "1.2.0"


async def test_a_version_is_immutable(admin: Admin) -> None:
    first = skill_archive("lint", "1.0.0", "Lints.")
    assert (await upload(admin, first)).status_code == 201
    again = await upload(admin, first)  # the same package: the stored version, nothing new
    assert again.status_code == 200
    assert again.json()["sha256"] == hashlib.sha256(first).hexdigest()
    other = await upload(admin, skill_archive("lint", "1.0.0", "Lints differently."))
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "skill_exists"
    assert admin.count_blobs() == 1  # the refused package left nothing behind
    download = await admin.client.get("/v1/admin/skills/lint/1.0.0/archive")
    assert download.content == first


async def test_a_zip_package_and_versions_listed_highest_first(admin: Admin) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as packed:
        packed.writestr("fmt/SKILL.md", "---\nname: fmt\nversion: 0.1.0\ndescription: x\n---\n")
    assert (await upload(admin, buffer.getvalue())).json()["format"] == "zip"
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        assert (await upload(admin, skill_archive("lint", version))).status_code == 201
    versions = (await admin.client.get("/v1/admin/skills/lint")).json()
    assert versions["latest"] == "1.10.0"
    assert [v["version"] for v in versions["versions"]] == ["1.10.0", "1.9.0", "1.2.0"]
    listed = (await admin.client.get("/v1/admin/skills")).json()["items"]
    assert [(s["name"], s["version"]) for s in listed] == [
        ("fmt", "0.1.0"),
        ("lint", "1.10.0"),
        ("lint", "1.9.0"),
        ("lint", "1.2.0"),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", None),
        (b"just text", "not_an_archive"),
        (tar_gz({"README.md": b"no manifest"}), "no_manifest"),
        (tar_gz({"SKILL.md": b"# no front matter\n"}), "bad_manifest"),
        (tar_gz({"SKILL.md": b"---\nname: x\n---\n", "../escape": b"x"}), "path_escape"),
    ],
)
async def test_a_bad_package_is_refused_and_nothing_is_stored(
    admin: Admin, data: bytes, reason: str | None
) -> None:
    refused = await upload(admin, data)
    assert refused.status_code in (400, 422), refused.text
    if reason is not None:
        assert refused.json()["error"]["code"] == "skill_archive_invalid"
        assert refused.json()["error"]["details"]["reason"] == reason
    assert admin.count_blobs() == 0
    assert (await admin.client.get("/v1/admin/skills")).json()["items"] == []


async def test_a_package_over_the_limit_is_refused_before_it_is_read(admin: Admin) -> None:
    too_big = await admin.client.post(
        "/v1/admin/skills", content=b"\0" * ((20 << 20) + 1), headers=ARCHIVE
    )
    assert too_big.status_code == 413
    assert admin.count_blobs() == 0


async def test_a_blob_changed_in_storage_is_never_served(admin: Admin) -> None:
    data = skill_archive("lint", "1.0.0")
    await upload(admin, data)
    await admin.store.put(admin.key("lint", "1.0.0", data), b"not the package")
    download = await admin.client.get("/v1/admin/skills/lint/1.0.0/archive")
    assert download.status_code == 502
    assert download.json()["error"]["code"] == "skill_checksum_mismatch"


async def _worker(admin: Admin, name: str = "alpha") -> None:
    runtime = {"name": "rt", "cli": "claude", "cli_version": "2.1.197"}
    assert (await admin.client.post("/v1/admin/runtimes", json=runtime)).status_code in (201, 409)
    worker = {"name": name, "runtime": "rt", "repo_url": "https://example.com/kb.git"}
    assert (await admin.client.post("/v1/admin/workers", json=worker)).status_code == 201


async def test_a_worker_pins_or_follows_and_a_used_version_cannot_be_deleted(
    admin: Admin,
) -> None:
    await _worker(admin)
    kept = skill_archive("lint", "1.0.0")
    await upload(admin, kept)
    await upload(admin, skill_archive("lint", "2.0.0"))
    await upload(admin, skill_archive("fmt", "0.3.0"))
    pin = await admin.client.put("/v1/admin/workers/alpha/skills/lint", json={"version": "1.0.0"})
    assert pin.status_code == 200, pin.text
    assert (pin.json()["pinned"], pin.json()["version"]) == ("1.0.0", "1.0.0")
    follow = await admin.client.put("/v1/admin/workers/alpha/skills/fmt", json={})
    assert (follow.json()["pinned"], follow.json()["version"]) == (None, "0.3.0")
    await upload(admin, skill_archive("fmt", "0.4.0"))
    listed = (await admin.client.get("/v1/admin/workers/alpha/skills")).json()["items"]
    assert [(s["name"], s["pinned"], s["version"]) for s in listed] == [
        ("fmt", None, "0.4.0"),
        ("lint", "1.0.0", "1.0.0"),
    ]

    in_use = await admin.client.delete("/v1/admin/skills/lint/1.0.0")
    assert in_use.status_code == 409
    assert "alpha" in in_use.json()["error"]["message"]
    assert (await admin.client.delete("/v1/admin/skills/lint/2.0.0")).status_code == 204
    assert (await admin.client.delete("/v1/admin/skills/fmt/0.3.0")).status_code == 204
    last = await admin.client.delete("/v1/admin/skills/fmt/0.4.0")  # followed, and the last
    assert last.status_code == 409
    assert (await admin.client.delete("/v1/admin/workers/alpha/skills/fmt")).status_code == 204
    assert (await admin.client.delete("/v1/admin/skills/fmt/0.4.0")).status_code == 204
    assert admin.count_blobs() == 1
    assert await admin.store.exists(admin.key("lint", "1.0.0", kept))


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/admin/workers/alpha/skills/nothing", {}, 422, "skill_not_found"),
        ("/v1/admin/workers/alpha/skills/lint", {"version": "9.9.9"}, 422, "skill_not_found"),
        (
            "/v1/admin/workers/alpha/skills/lint",
            {"version": "latest"},
            422,
            "invalid_skill_version",
        ),
        ("/v1/admin/workers/alpha/skills/Bad_Name", {}, 422, "invalid_skill_name"),
        ("/v1/admin/workers/nobody/skills/lint", {}, 404, "not_found"),
        ("/v1/admin/workers/alpha/skills/lint", {"version": 1}, 422, "invalid_request"),
    ],
)
async def test_a_pin_that_cannot_work_is_refused(
    admin: Admin, path: str, body: dict[str, object], status: int, code: str
) -> None:
    await _worker(admin)
    await upload(admin, skill_archive("lint", "1.0.0"))
    refused = await admin.client.put(path, json=body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (status, code)
    assert (await admin.client.get("/v1/admin/workers/alpha/skills")).json()["items"] == []


async def test_a_client_key_cannot_upload(admin: Admin) -> None:
    made = await admin.client.post("/v1/admin/keys", json={"name": "bot", "scope": "client"})
    refused = await admin.client.post(
        "/v1/admin/skills",
        content=skill_archive("lint"),
        headers={**ARCHIVE, "Authorization": f"Bearer {made.json()['key']}"},
    )
    assert refused.status_code == 403
    assert admin.count_blobs() == 0


async def test_a_worker_names_its_skills_at_creation_or_not_at_all(admin: Admin) -> None:
    runtime = {"name": "rt", "cli": "claude", "cli_version": "2.1.197"}
    assert (await admin.client.post("/v1/admin/runtimes", json=runtime)).status_code == 201
    await upload(admin, skill_archive("lint", "1.0.0"))
    await upload(admin, skill_archive("fmt", "0.2.0"))
    worker = {"name": "alpha", "runtime": "rt", "repo_url": "https://example.com/kb.git"}
    refused = await admin.client.post(
        "/v1/admin/workers", json={**worker, "skills": ["lint@1.0.0", "nothing"]}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "skill_not_found")
    assert (await admin.client.get("/v1/admin/workers/alpha")).status_code == 404
    twice = await admin.client.post("/v1/admin/workers", json={**worker, "skills": ["fmt", "fmt"]})
    assert (twice.status_code, twice.json()["error"]["code"]) == (422, "duplicate_skill")

    created = await admin.client.post(
        "/v1/admin/workers", json={**worker, "skills": ["lint@1.0.0", "fmt"]}
    )
    assert created.status_code == 201, created.text
    assert (created.json()["skills"], created.json()["revision"]) == (["fmt", "lint@1.0.0"], 1)
    replaced = await admin.client.patch("/v1/admin/workers/alpha", json={"skills": ["lint"]})
    assert replaced.json()["skills"] == ["lint"]
    assert replaced.json()["revision"] > 1
