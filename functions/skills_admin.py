"""Skills in the `admin` function: upload a package into blob storage, list, show, download and
delete its versions, and say which skills a worker uses (docs/skills.md).

A skill version is immutable. Its archive is read once at upload (`eventing.skill_archive`: a
`SKILL.md` with name, version and description; nothing unsafe inside), its sha256 computed, and
the blob stored under a key that holds the checksum before the row is written; every download
checks the checksum again. The same archive uploaded again is answered with the stored version;
other content under a version that exists is 409 `skill_exists`.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.lazy_models import LazyModel
from eventing.semver import is_semver
from eventing.skill_archive import ArchiveLimits, SkillArchive, read_skill_archive
from functions.api import Endpoint
from functions.context import blobs, db
from functions.db.errors import ConflictError, NotFoundError
from functions.db.models import Skill, Worker, WorkerSkill
from functions.db.repositories import Skills, Workers
from functions.http import ApiError, parse_body, read_body
from functions.skill_blobs import fetch_skill

logger = logging.getLogger(__name__)

SKILL_NAME = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"
LIMITS = ArchiveLimits()
LATEST = "latest"


class SkillOut(LazyModel):
    name: str
    version: str
    description: str
    sha256: str
    size: int
    format: str
    manifest: dict[str, Any]
    created_at: datetime


class SkillVersions(LazyModel):
    name: str
    latest: str
    versions: list[SkillOut]


class SkillList(LazyModel):
    items: list[SkillOut]


class WorkerSkillIn(LazyModel):
    """`version` pins one version; null (or absent) follows the highest uploaded."""

    model_config = {"extra": "forbid"}

    version: str | None = Field(default=None, min_length=1, max_length=64)


class WorkerSkillOut(LazyModel):
    name: str
    pinned: str | None = Field(description="the pinned version; null: follows the latest")
    version: str | None = Field(description="the version the worker's sessions get now")
    sha256: str | None
    description: str | None


class WorkerSkillList(LazyModel):
    items: list[WorkerSkillOut]


def skill_out(row: Skill) -> dict[str, Any]:
    manifest = row.manifest or {}
    return SkillOut(
        name=row.name,
        version=row.version,
        description=str(manifest.get("description", "")),
        sha256=row.sha256,
        size=row.size,
        format=str(manifest.get("format", "")),
        manifest=manifest,
        created_at=row.created_at,
    ).model_dump(mode="json")


def blob_key(archive: SkillArchive) -> str:
    """Where the archive lives: by name, version and checksum, so a key never holds two
    contents (an upload that loses a race to the same version leaves its own blob, removed)."""
    manifest = archive.manifest
    return f"skills/{manifest.name}/{manifest.version}/{archive.sha256}.{archive.format}"


# -- skills -----------------------------------------------------------------------------------


async def upload_skill(request: Request) -> Response:
    data = await read_body(request, LIMITS.max_archive_bytes)
    if not data:
        raise ApiError(
            400,
            "bad_request",
            "send the skill package (.tar.gz or .zip) as the request body",
        )
    archive = read_skill_archive(data, limits=LIMITS)  # 422 skill_archive_invalid
    manifest = archive.manifest
    existing = await db(lambda s: Skills(s).find(manifest.name, manifest.version))
    if existing is not None:
        return JSONResponse(_same_or_conflict(existing, archive), status_code=200)
    key = blob_key(archive)
    await blobs().put(key, data)

    def insert(session: Session) -> dict[str, Any]:
        row = Skills(session).add(
            name=manifest.name,
            version=manifest.version,
            blob_key=key,
            sha256=archive.sha256,
            size=archive.size,
            manifest={
                **_jsonable(manifest.fields),
                "description": manifest.description,
                "format": archive.format,
                "files": len(archive.files),
            },
        )
        return skill_out(row)

    try:
        created = await db(insert)
    except ConflictError:
        # Another upload of this version won: the same content is that version, other content
        # is a conflict. Either way this upload's blob is not needed (its key holds our sha).
        winner = await db(lambda s: Skills(s).get(manifest.name, manifest.version))
        if winner.blob_key != key:
            await blobs().delete(key)
        return JSONResponse(_same_or_conflict(winner, archive), status_code=200)
    logger.info(
        "skill uploaded",
        extra={"skill": manifest.name, "version": manifest.version, "sha256": archive.sha256},
    )
    return JSONResponse(created, status_code=201)


def _same_or_conflict(existing: Skill, archive: SkillArchive) -> dict[str, Any]:
    if existing.sha256 != archive.sha256:
        raise ConflictError(
            f"skill {existing.name}@{existing.version} is already uploaded with other content "
            f"(sha256 {existing.sha256}); a version never changes: raise the version in "
            "SKILL.md and upload again",
            code="skill_exists",
            sha256=existing.sha256,
        )
    return skill_out(existing)


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    """The front matter as JSON (YAML may hold dates and other types JSON has not)."""
    return dict(json.loads(json.dumps(fields, default=str)))


async def list_skills(_: Request) -> Response:
    rows = await db(lambda s: [skill_out(r) for r in Skills(s).list_all()])
    return JSONResponse({"items": rows})


async def get_skill(request: Request) -> Response:
    name = _name(request)

    def versions(session: Session) -> dict[str, Any]:
        rows = Skills(session).list_all(name)
        if not rows:
            raise NotFoundError("skill", name)
        return SkillVersions(
            name=name,
            latest=rows[0].version,  # highest first
            versions=[SkillOut.model_validate(skill_out(r)) for r in rows],
        ).model_dump(mode="json")

    return JSONResponse(await db(versions))


async def get_skill_version(request: Request) -> Response:
    name, version = _name(request), _version(request)
    return JSONResponse(await db(lambda s: skill_out(_resolve(s, name, version))))


async def download_skill(request: Request) -> Response:
    name, version = _name(request), _version(request)
    row = await db(lambda s: _resolve(s, name, version))
    data = await fetch_skill(blobs(), row)  # the checksum checked
    filename = f"{row.name}-{row.version}.{(row.manifest or {}).get('format', 'tar.gz')}"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "content-disposition": f'attachment; filename="{filename}"',
            "x-vwm-skill-sha256": row.sha256,
        },
    )


async def delete_skill(request: Request) -> Response:
    name, version = _name(request), _version(request, latest=False)
    row = await db(lambda s: Skills(s).delete(name, version))  # 409 while a worker uses it
    await blobs().delete(row.blob_key)
    logger.info("skill deleted", extra={"skill": name, "version": version})
    return Response(status_code=204)


def _resolve(session: Session, name: str, version: str) -> Skill:
    if version == LATEST:
        found = Skills(session).latest(name)
        if found is None:
            raise NotFoundError("skill", name)
        return found
    return Skills(session).get(name, version)


def _name(request: Request, param: str = "name") -> str:
    name = str(request.path_params[param])
    if not re.fullmatch(SKILL_NAME, name):
        raise ApiError(
            422,
            "invalid_skill_name",
            f"{name!r} is not a skill name: 1-64 lowercase letters, digits and '-', not at "
            "either end",
        )
    return name


def _version(request: Request, *, latest: bool = True) -> str:
    version = str(request.path_params["version"])
    if latest and version == LATEST:
        return version
    if not is_semver(version):
        raise ApiError(
            422,
            "invalid_skill_version",
            f"{version!r} is not a skill version: MAJOR.MINOR.PATCH[-prerelease]"
            + (", or latest" if latest else ""),
        )
    return version


# -- a worker's skills ------------------------------------------------------------------------


def _worker_skill_out(session: Session, link: WorkerSkill) -> dict[str, Any]:
    skills = Skills(session)
    row = (
        skills.latest(link.skill_name)
        if link.version is None
        else skills.find(link.skill_name, link.version)
    )
    return WorkerSkillOut(
        name=link.skill_name,
        pinned=link.version,
        version=row.version if row else None,
        sha256=row.sha256 if row else None,
        description=(row.manifest or {}).get("description") if row else None,
    ).model_dump(mode="json")


async def list_worker_skills(request: Request) -> Response:
    worker_name = request.path_params["name"]

    def rows(session: Session) -> list[dict[str, Any]]:
        workers = Workers(session)
        worker = workers.get(worker_name)
        return [_worker_skill_out(session, link) for link in workers.skill_links(worker)]

    return JSONResponse({"items": await db(rows)})


async def put_worker_skill(request: Request) -> Response:
    worker_name, name = request.path_params["name"], _name(request, "skill")
    body = await parse_body(request, WorkerSkillIn, 64 << 10)
    if body.version is not None and not is_semver(body.version):
        raise ApiError(
            422,
            "invalid_skill_version",
            f"{body.version!r} is not a skill version: MAJOR.MINOR.PATCH[-prerelease], or null "
            "to follow the latest",
        )

    def use(session: Session) -> dict[str, Any]:
        worker = Workers(session).get(worker_name)
        return _worker_skill_out(session, _use(session, worker, name, body.version))

    return JSONResponse(await db(use))


def use_skills(session: Session, worker: Worker, pins: list[str], *, replace: bool = False) -> None:
    """Make `worker` use the skills `pins` name (`name@version` pins, `name` follows the
    latest); with `replace`, the skills it used and `pins` do not name are dropped. Raises
    before anything is written when a pin cannot work (the transaction rolls back)."""
    chosen: dict[str, str | None] = {}
    for pin in pins:
        name, _, version = pin.partition("@")
        if name in chosen:
            raise ApiError(422, "duplicate_skill", f"skill {name!r} is named twice; name it once")
        if version and not is_semver(version):
            raise ApiError(
                422,
                "invalid_skill_version",
                f"{pin!r}: the version is not MAJOR.MINOR.PATCH[-prerelease]; or name the skill "
                "alone to follow its latest version",
            )
        chosen[name] = version or None
    workers = Workers(session)
    if replace:
        for link in workers.skill_links(worker):
            if link.skill_name not in chosen:
                workers.drop_skill(worker, link.skill_name)
    for skill, pinned in chosen.items():
        _use(session, worker, skill, pinned)


def _use(session: Session, worker: Worker, name: str, version: str | None) -> WorkerSkill:
    try:
        return Workers(session).use_skill(worker, name, version)
    except NotFoundError:
        wanted = name if version is None else f"{name}@{version}"
        raise ApiError(
            422,
            "skill_not_found",
            f"no skill {wanted} is uploaded; upload it first (POST /v1/admin/skills)",
        ) from None


async def delete_worker_skill(request: Request) -> Response:
    worker_name, name = request.path_params["name"], _name(request, "skill")

    def drop(session: Session) -> None:
        workers = Workers(session)
        workers.drop_skill(workers.get(worker_name), name)

    await db(drop)
    return Response(status_code=204)


TAGS = ("admin",)
_SKILL = "/v1/admin/skills/{name}"
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/admin/skills",
        upload_skill,
        "Upload a skill package (.tar.gz or .zip with a SKILL.md); name and version come from "
        "its front matter",
        binary_body=True,
        response=SkillOut,
        status=201,
        other_statuses=(200, 400, 409, 413, 422, 503),
        tags=TAGS,
    ),
    Endpoint(
        "GET", "/v1/admin/skills", list_skills, "List skill versions", response=SkillList, tags=TAGS
    ),
    Endpoint(
        "GET",
        _SKILL,
        get_skill,
        "A skill's versions, highest first",
        response=SkillVersions,
        other_statuses=(404, 422),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        _SKILL + "/{version}",
        get_skill_version,
        "One version of a skill (or `latest`)",
        response=SkillOut,
        other_statuses=(404, 422),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        _SKILL + "/{version}/archive",
        download_skill,
        "Download a skill version's package (its checksum checked)",
        binary=True,
        other_statuses=(404, 422, 502, 503),
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        _SKILL + "/{version}",
        delete_skill,
        "Delete a skill version no worker uses",
        status=204,
        other_statuses=(404, 409, 422),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/admin/workers/{name}/skills",
        list_worker_skills,
        "The skills a worker uses, and the versions its sessions get",
        response=WorkerSkillList,
        tags=TAGS,
    ),
    Endpoint(
        "PUT",
        "/v1/admin/workers/{name}/skills/{skill}",
        put_worker_skill,
        "Make a worker use a skill: pin a version, or follow the latest (version null); "
        "running sessions get it at their next prompt",
        body=WorkerSkillIn,
        response=WorkerSkillOut,
        other_statuses=(404, 422),
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/v1/admin/workers/{name}/skills/{skill}",
        delete_worker_skill,
        "Stop a worker using a skill",
        status=204,
        other_statuses=(404, 422),
        tags=TAGS,
    ),
]
