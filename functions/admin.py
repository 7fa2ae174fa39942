"""The `admin` function: runtimes, workers, system settings and API keys (scope `admin`).

A runtime says which CLI runs, at which version, with which model endpoint and prices; a worker
names a runtime, a knowledge repo and instructions. `credential_ref` is the *name* of the place the
model key lives (an environment variable locally, a Secret in production), never the key.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.cli_versions import (
    EXACT_VERSION_PATTERN,
    EXACT_VERSION_RULE,
    MAX_VERSION_CHARS,
    is_exact_version,
)
from eventing.inputs import bad_parameter
from eventing.lazy_models import LazyModel
from eventing.provider_urls import MAX_URL_CHARS, ProviderUrlError, provider_root
from functions.api import Endpoint
from functions.budgets import worker_view
from functions.budgets_api import WORKER_ENDPOINTS as BUDGET_ENDPOINTS
from functions.budgets_api import WorkerBudgetOut
from functions.context import db, settings
from functions.credential_warnings import unset_credentials
from functions.db.api_keys import ApiKeys
from functions.db.models import Runtime, SystemSetting, Worker
from functions.db.repositories import Runtimes, Settings, Workers
from functions.http import ApiError, parse_body, parse_query
from functions.repo_policy import RepoPolicy, check_setting
from functions.runtime import rules as runtime_rules
from functions.settings import is_image_reference, is_quantity
from functions.skills_admin import ENDPOINTS as SKILL_ENDPOINTS
from functions.skills_admin import use_skills

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SETTING_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fits the 100-character column
MAX_PRICE = 1_000_000.0
CredentialRef = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_./-]{0,199}$")


def _exact_version(value: str) -> str:
    if not is_exact_version(value):
        raise ValueError(f"must be {EXACT_VERSION_RULE}")
    return value


# The version the runtime's sessions run: the image's CLI if it has it, else installed once per
# session volume (harness.cli_install). Checked here with the harness's own rule, and the pattern
# is in the OpenAPI document; the validator's message is the one a person reads.
CliVersion = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_VERSION_CHARS,
        json_schema_extra={"pattern": EXACT_VERSION_PATTERN},
        description=f"The CLI's version: {EXACT_VERSION_RULE}.",
    ),
    AfterValidator(_exact_version),
]


class Strict(LazyModel):
    model_config = ConfigDict(extra="forbid")


class Prices(Strict):
    """USD per million tokens (bounded, so a cost can never overflow to infinity)."""

    input: float = Field(ge=0, le=MAX_PRICE)
    cache_read: float = Field(ge=0, le=MAX_PRICE)
    cache_write: float = Field(ge=0, le=MAX_PRICE)
    output: float = Field(ge=0, le=MAX_PRICE)


def _quantity(value: str | None) -> str | None:
    if value is not None and not is_quantity(value):
        raise ValueError(
            "must be a positive Kubernetes quantity, e.g. 500m or 2 (CPU), 4Gi (memory)"
        )
    return value


def _image(value: str | None) -> str | None:
    if value is not None and not is_image_reference(value):
        raise ValueError("must be an image reference: registry/repository:tag or @sha256:digest")
    return value


def _provider_url(value: str | None) -> str | None:
    try:
        return None if value is None else provider_root(value)
    except ProviderUrlError as exc:
        raise ValueError(str(exc)) from None


# A session pod's CPU or memory (its requests and limits on Knative; the local backend runs
# harnesses as plain processes and applies neither).
Quantity = Annotated[str | None, Field(default=None, max_length=32), AfterValidator(_quantity)]
ImageReference = Annotated[str | None, Field(default=None, max_length=500), AfterValidator(_image)]
# Stored as the provider's root: a trailing /v1 (/v1beta) is stripped (eventing.provider_urls).
ProviderUrl = Annotated[
    str | None,
    Field(default=None, max_length=MAX_URL_CHARS, pattern=r"^https?://"),
    AfterValidator(_provider_url),
]


class RuntimeLimits(Strict):
    job_timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    cpu: Quantity = None
    memory: Quantity = None


class RuntimeFields(Strict):
    cli_version: CliVersion
    image: ImageReference = None
    default_model: str | None = Field(default=None, max_length=200)
    prices: Prices | None = None
    credential_ref: str | None = CredentialRef
    provider_base_url: ProviderUrl = None
    limits: RuntimeLimits = Field(default_factory=RuntimeLimits)


class RuntimeIn(RuntimeFields):
    name: str = Field(pattern=NAME)
    cli: Literal["claude", "codex", "gemini", "opencode"]


class RuntimePatch(Strict):
    # Fields whose column cannot be empty are typed without None: an explicit null is refused.
    cli_version: CliVersion = None  # type: ignore[assignment]
    image: ImageReference = None
    default_model: str | None = Field(default=None, max_length=200)
    prices: Prices | None = None
    credential_ref: str | None = CredentialRef
    provider_base_url: ProviderUrl = None
    limits: RuntimeLimits = None  # type: ignore[assignment]


class RuntimeNote(LazyModel):
    field: str
    note: str


class RuntimeOut(RuntimeIn):
    id: str
    created_at: datetime
    updated_at: datetime
    notes: list[RuntimeNote] = Field(
        default_factory=list,
        description="fields this runtime sets that the configured runtime backend ignores",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what keeps this runtime's sessions from starting that is not the runtime's "
        "own fault and what to do (its credential_ref variable unset where the local backend "
        "reads it); empty when none",
    )


class WorkerTimeouts(Strict):
    job_s: float | None = Field(default=None, gt=0, le=86_400)
    idle_s: float | None = Field(default=None, gt=0, le=30 * 86_400)
    max_age_s: float | None = Field(default=None, gt=0, le=365 * 86_400)


# A skill a worker uses: `name@version` pins that version, `name` follows the highest uploaded.
SkillPin = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(@[0-9A-Za-z.+-]{1,64})?$",
        description="name@version to pin a version, or name to follow the latest",
    ),
]
SkillPins = Annotated[list[SkillPin], Field(max_length=100)]
LearningModeField = Literal["direct", "review"]


class WorkerFields(Strict):
    repo_url: str = Field(min_length=1, max_length=2000)
    repo_branch: str = Field(default="main", min_length=1, max_length=200)
    instructions: str = Field(default="", max_length=512_000)
    auto_learning: bool = False
    learning_mode: LearningModeField = Field(
        default="direct",
        description="where auto-learning pushes: direct to repo_branch, or review to "
        "learning/<session id> for a person to merge",
    )
    skills: SkillPins = Field(default_factory=list)
    model: str | None = Field(default=None, max_length=200)
    timeouts: WorkerTimeouts = Field(default_factory=WorkerTimeouts)


class WorkerIn(WorkerFields):
    name: str = Field(pattern=NAME)
    runtime: str = Field(pattern=NAME)


class WorkerPatch(Strict):
    # Fields whose column cannot be empty are typed without None: an explicit null is refused.
    runtime: str = Field(default=None, pattern=NAME)  # type: ignore[assignment]
    repo_url: str = Field(default=None, min_length=1, max_length=2000)  # type: ignore[assignment]
    repo_branch: str = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]
    instructions: str = Field(default=None, max_length=512_000)  # type: ignore[assignment]
    auto_learning: bool = None  # type: ignore[assignment]
    learning_mode: LearningModeField = None  # type: ignore[assignment]
    skills: SkillPins = None  # type: ignore[assignment]
    model: str | None = Field(default=None, max_length=200)
    timeouts: WorkerTimeouts = None  # type: ignore[assignment]


class WorkerOut(WorkerIn):
    id: str
    revision: int = Field(
        description="counts changes of what running sessions are given (instructions, model, "
        "skills, learning); telemetry records the revision each job ran with"
    )
    created_at: datetime
    updated_at: datetime
    budget: WorkerBudgetOut | None = Field(
        default=None, description="limits, used and left (PUT /v1/admin/workers/{name}/budget)"
    )


class SettingIn(Strict):
    value: str | int | float | bool | list[Any] | dict[str, Any]


class SettingOut(LazyModel):
    key: str
    value: Any
    version: int
    updated_at: datetime


MAX_SETTING_VERSIONS = 500


class SettingVersionsQuery(Strict):
    limit: int = Field(default=50, ge=1, le=MAX_SETTING_VERSIONS)


class SettingVersionOut(LazyModel):
    version: int
    value: Any
    updated_at: datetime = Field(description="when this version was written")


class SettingVersions(LazyModel):
    key: str
    items: list[SettingVersionOut] = Field(description="newest first")


class KeyIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    scope: Literal["admin", "client"]


class KeyOut(LazyModel):
    id: str
    name: str
    scope: str
    created_at: datetime
    key: str | None = Field(default=None, description="the key itself; shown only at creation")


class ListOf(LazyModel):
    items: list[dict[str, Any]]


# -- rows to answers --------------------------------------------------------------------------


def runtime_out(row: Runtime) -> dict[str, Any]:
    limits = row.limits or {}
    unapplied = runtime_rules.unapplied_fields(
        settings().runtime_backend,
        image=row.image,
        cpu=limits.get("cpu"),
        memory=limits.get("memory"),
    )
    return RuntimeOut.model_validate(
        dict(
            id=row.id,
            name=row.name,
            cli=row.cli,
            cli_version=row.cli_version,
            image=row.image,
            default_model=row.default_model,
            prices=row.prices,
            credential_ref=row.credential_ref,
            provider_base_url=row.provider_base_url,
            limits=limits,
            created_at=row.created_at,
            updated_at=row.updated_at,
            notes=[{"field": name, "note": why} for name, why in unapplied.items()],
            warnings=_runtime_warnings(row),
        )
    ).model_dump(mode="json")


def _runtime_warnings(row: Runtime) -> list[str]:
    """The local backend hands a harness the variable `credential_ref` names from this process's
    environment: say so when it is unset (the runtime is still stored; it may be exported
    before the next start). On Knative nothing is said: this function runs in a pod of its own,
    and the key is read in the pods that start sessions, whose environment this one cannot see."""
    if settings().runtime_backend != "local":
        return []
    return unset_credentials([(row.credential_ref, row.name)], os.environ)


def _check_runtime(cli: str, fields: dict[str, Any]) -> None:
    """Refuse (422 runtime_invalid) a runtime, as it would be stored, that cannot work."""
    runtime_rules.check(
        cli,
        default_model=fields.get("default_model"),
        provider_base_url=fields.get("provider_base_url"),
        credential_ref=fields.get("credential_ref"),
    )


def worker_out(session: Session, row: Worker, runtime_name: str) -> dict[str, Any]:
    return WorkerOut.model_validate(
        dict(
            id=row.id,
            name=row.name,
            runtime=runtime_name,
            repo_url=row.repo_url,
            repo_branch=row.repo_branch,
            instructions=row.instructions,
            auto_learning=row.auto_learning,
            learning_mode=row.learning_mode,
            skills=[
                link.skill_name if link.version is None else f"{link.skill_name}@{link.version}"
                for link in Workers(session).skill_links(row)
            ],
            revision=row.revision or 1,
            model=row.model,
            timeouts=row.timeouts or {},
            created_at=row.created_at,
            updated_at=row.updated_at,
            budget=worker_view(session, row),
        )
    ).model_dump(mode="json")


def setting_out(row: SystemSetting) -> dict[str, Any]:
    return SettingOut(
        key=row.key, value=row.value, version=row.version, updated_at=row.updated_at
    ).model_dump(mode="json")


def _runtime_name(session: Session, worker: Worker) -> str:
    return Runtimes(session).get_by_id(worker.runtime_id).name


def _limit() -> int:
    return settings().max_request_bytes


def _repo_policy(session: Session) -> RepoPolicy:
    return RepoPolicy.read(session, settings().allow_local_repos)


# -- runtimes ---------------------------------------------------------------------------------


async def create_runtime(request: Request) -> Response:
    body = await parse_body(request, RuntimeIn, _limit())
    fields = body.model_dump(mode="json")
    _check_runtime(body.cli, fields)
    created = await db(lambda s: runtime_out(Runtimes(s).add(**fields)))
    return JSONResponse(created, status_code=201)


async def list_runtimes(_: Request) -> Response:
    rows = await db(lambda s: [runtime_out(r) for r in Runtimes(s).list_all()])
    return JSONResponse({"items": rows})


async def get_runtime(request: Request) -> Response:
    name = request.path_params["name"]
    return JSONResponse(await db(lambda s: runtime_out(Runtimes(s).get(name))))


async def patch_runtime(request: Request) -> Response:
    name = request.path_params["name"]
    body = await parse_body(request, RuntimePatch, _limit())

    def patch(session: Session) -> dict[str, Any]:
        runtimes = Runtimes(session)
        changes = body.model_dump(mode="json", exclude_unset=True)
        row = runtimes.get(name)
        stored = {
            "default_model": row.default_model,
            "provider_base_url": row.provider_base_url,
            "credential_ref": row.credential_ref,
        }
        _check_runtime(row.cli, {**stored, **changes})  # judged on the runtime as it will be
        return runtime_out(runtimes.update(row, **changes))

    return JSONResponse(await db(patch))


async def delete_runtime(request: Request) -> Response:
    name = request.path_params["name"]
    await db(lambda s: Runtimes(s).delete(name))
    return Response(status_code=204)


# -- workers ----------------------------------------------------------------------------------


async def create_worker(request: Request) -> Response:
    body = await parse_body(request, WorkerIn, _limit())

    def create(session: Session) -> dict[str, Any]:
        _repo_policy(session).check_worker_repo(body.repo_url, body.name)
        runtime = Runtimes(session).get(body.runtime)
        fields = body.model_dump(mode="json", exclude={"runtime", "skills"})
        worker = Workers(session).add(runtime_id=runtime.id, **fields)
        use_skills(session, worker, body.skills)
        worker.revision = 1  # a new worker: its first skills are not a change
        return worker_out(session, worker, runtime.name)

    return JSONResponse(await db(create), status_code=201)


async def list_workers(_: Request) -> Response:
    def rows(session: Session) -> list[dict[str, Any]]:
        names = {r.id: r.name for r in Runtimes(session).list_all()}
        return [worker_out(session, w, names[w.runtime_id]) for w in Workers(session).list_all()]

    return JSONResponse({"items": await db(rows)})


async def get_worker(request: Request) -> Response:
    name = request.path_params["name"]

    def get(session: Session) -> dict[str, Any]:
        worker = Workers(session).get(name)
        return worker_out(session, worker, _runtime_name(session, worker))

    return JSONResponse(await db(get))


async def patch_worker(request: Request) -> Response:
    name = request.path_params["name"]
    body = await parse_body(request, WorkerPatch, _limit())

    def patch(session: Session) -> dict[str, Any]:
        workers = Workers(session)
        changes = body.model_dump(mode="json", exclude_unset=True)
        if "repo_url" in changes:
            _repo_policy(session).check_worker_repo(changes["repo_url"], name)
        worker = workers.get(name)  # a missing worker is the 404
        if (runtime_name := changes.pop("runtime", None)) is not None:
            changes["runtime_id"] = _named_runtime(session, runtime_name).id
        skills = changes.pop("skills", None)
        worker = workers.update(worker, **changes)
        if skills is not None:
            use_skills(session, worker, skills, replace=True)
        return worker_out(session, worker, _runtime_name(session, worker))

    return JSONResponse(await db(patch))


def _named_runtime(session: Session, name: str) -> Runtime:
    """The runtime a change names: a missing one is 422 (the worker exists; a 404 would say it
    does not)."""
    runtime = session.scalar(select(Runtime).where(Runtime.name == name))
    if runtime is None:
        raise ApiError(
            422,
            "runtime_not_found",
            f"no runtime {name!r}; create it first (POST /v1/admin/runtimes) or name another",
        )
    return runtime


async def delete_worker(request: Request) -> Response:
    name = request.path_params["name"]
    await db(lambda s: Workers(s).delete(name))
    return Response(status_code=204)


# -- settings and keys ------------------------------------------------------------------------


async def list_settings(_: Request) -> Response:
    rows = await db(lambda s: [setting_out(r) for r in Settings(s).list_all()])
    return JSONResponse({"items": rows})


def _setting_key(request: Request) -> str:
    key: str = request.path_params["key"]
    if not SETTING_KEY.fullmatch(key):
        raise bad_parameter(
            "key", "character", "a setting key is 1-100 ASCII letters, digits, '.', '_' or '-'"
        )
    return key


async def put_setting(request: Request) -> Response:
    key = _setting_key(request)
    body = await parse_body(request, SettingIn, _limit())
    check_setting(key, body.value)  # the repo URL policy's settings have a fixed shape
    return JSONResponse(await db(lambda s: setting_out(Settings(s).put(key, body.value))))


async def setting_versions(request: Request) -> Response:
    key = _setting_key(request)
    query = parse_query(request, SettingVersionsQuery)

    def versions(session: Session) -> dict[str, Any]:
        stored = Settings(session)
        if stored.get(key) is None:
            raise ApiError(
                404,
                "setting_not_found",
                f"no setting {key!r}; GET /v1/admin/settings lists those set, "
                f"PUT /v1/admin/settings/{key} sets it",
                key=key,
            )
        rows = stored.versions(key, limit=query.limit)
        items = [
            SettingVersionOut(version=row.version, value=row.value, updated_at=row.written_at)
            for row in rows
        ]
        return SettingVersions(key=key, items=items).model_dump(mode="json")

    return JSONResponse(await db(versions))


async def create_key(request: Request) -> Response:
    body = await parse_body(request, KeyIn, _limit())

    def create(session: Session) -> dict[str, Any]:
        row, plaintext = ApiKeys(session).issue(body.name, body.scope)
        return KeyOut(
            id=row.id, name=row.name, scope=row.scope, created_at=row.created_at, key=plaintext
        ).model_dump(mode="json")

    return JSONResponse(await db(create), status_code=201)


TAGS = ("admin",)
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/admin/runtimes",
        create_runtime,
        "Create a runtime",
        body=RuntimeIn,
        response=RuntimeOut,
        status=201,
        other_statuses=(409,),
        tags=TAGS,
    ),
    Endpoint(
        "GET", "/v1/admin/runtimes", list_runtimes, "List runtimes", response=ListOf, tags=TAGS
    ),
    Endpoint(
        "GET",
        "/v1/admin/runtimes/{name}",
        get_runtime,
        "Get a runtime",
        response=RuntimeOut,
        tags=TAGS,
    ),
    Endpoint(
        "PATCH",
        "/v1/admin/runtimes/{name}",
        patch_runtime,
        "Change a runtime",
        body=RuntimePatch,
        response=RuntimeOut,
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/v1/admin/runtimes/{name}",
        delete_runtime,
        "Delete an unused runtime",
        status=204,
        other_statuses=(409,),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/v1/admin/workers",
        create_worker,
        "Create a worker",
        body=WorkerIn,
        response=WorkerOut,
        status=201,
        other_statuses=(404, 409),
        tags=TAGS,
    ),
    Endpoint("GET", "/v1/admin/workers", list_workers, "List workers", response=ListOf, tags=TAGS),
    Endpoint(
        "GET", "/v1/admin/workers/{name}", get_worker, "Get a worker", response=WorkerOut, tags=TAGS
    ),
    Endpoint(
        "PATCH",
        "/v1/admin/workers/{name}",
        patch_worker,
        "Change a worker",
        body=WorkerPatch,
        response=WorkerOut,
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/v1/admin/workers/{name}",
        delete_worker,
        "Delete a worker without sessions",
        status=204,
        other_statuses=(409,),
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/admin/settings",
        list_settings,
        "List system settings",
        response=ListOf,
        tags=TAGS,
    ),
    Endpoint(
        "PUT",
        "/v1/admin/settings/{key}",
        put_setting,
        "Set a system setting (global_instructions, allow_local_repos, repo_url_patterns, ...); "
        "applies to the next session and prompt",
        body=SettingIn,
        response=SettingOut,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/admin/settings/{key}/versions",
        setting_versions,
        "A system setting's versions, newest first: each value it was given and when",
        query=SettingVersionsQuery,
        response=SettingVersions,
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/v1/admin/keys",
        create_key,
        "Create an API key (shown once)",
        body=KeyIn,
        response=KeyOut,
        status=201,
        tags=TAGS,
    ),
]
ENDPOINTS += SKILL_ENDPOINTS  # skills and worker skills: functions/skills_admin.py
ENDPOINTS += BUDGET_ENDPOINTS  # a worker's budget: functions/budgets_api.py
