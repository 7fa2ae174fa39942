"""Skill endpoints: install one (the archive as the body), list them, remove one.

What a skill is and where it goes is `harness.skills`'s job; this module only maps HTTP onto it:
the name from the URL (checked before anything else), the archive's media type, its SHA-256 from
a header, and a body bounded by the archive limit rather than the JSON one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventing.errors import UNSUPPORTED_MEDIA_TYPE
from eventing.harness_api import SkillInstallOutcome, SkillListing
from eventing.inputs import InputError, bad_parameter
from harness.errors import PayloadTooLarge
from harness.http import read_body
from harness.skills import Skills, check_name

SHA256_HEADER = "X-VWM-Skill-SHA256"
ARCHIVE_MEDIA_TYPE = "application/octet-stream"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

SkillsOf = Callable[[Request], Skills]


def routes(skills_of: SkillsOf) -> list[Route]:
    async def install(request: Request) -> Response:
        name = check_name(request.path_params["name"])
        _check_media_type(request.headers.get("content-type"))
        sha256 = _sha256(request.headers.get(SHA256_HEADER, ""))
        skills = skills_of(request)
        data = await _archive_body(request, skills.limits.max_archive_bytes)
        skill, changed = await skills.install(name, data, sha256)
        answer = SkillInstallOutcome(**skill.model_dump(), installed=changed)
        return JSONResponse(answer.model_dump(mode="json"))

    async def list_skills(request: Request) -> Response:
        answer = SkillListing(items=skills_of(request).installed())
        return JSONResponse(answer.model_dump(mode="json"))

    async def remove(request: Request) -> Response:
        name = check_name(request.path_params["name"])
        await skills_of(request).remove(name)
        return Response(status_code=204)

    return [
        Route("/v1/skills", list_skills, methods=["GET"]),
        Route("/v1/skills/{name}", install, methods=["PUT"]),
        Route("/v1/skills/{name}", remove, methods=["DELETE"]),
    ]


def _check_media_type(content_type: str | None) -> None:
    """The archive's bytes as they are: `application/octet-stream`, or no type at all (as for
    JSON bodies, a client that names none is not refused)."""
    if not content_type:
        return
    if content_type.partition(";")[0].strip().lower() != ARCHIVE_MEDIA_TYPE:
        raise InputError(
            UNSUPPORTED_MEDIA_TYPE,
            f"send the skill archive's bytes with 'Content-Type: {ARCHIVE_MEDIA_TYPE}'",
            content_type=content_type[:200],
        )


def _sha256(raw: str) -> str:
    if not _SHA256.fullmatch(raw):
        raise bad_parameter(
            SHA256_HEADER,
            "character",
            f"send the archive's SHA-256 as 64 hex digits in the {SHA256_HEADER} header",
        )
    return raw.lower()


async def _archive_body(request: Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except PayloadTooLarge:
        raise PayloadTooLarge(
            f"a skill archive is at most {limit} bytes ({limit / (1 << 20):g} MiB); "
            "make the skill smaller",
            limit=limit,
        ) from None
