"""Admin calls (`client.admin`): runtimes, workers, skills, system settings and API keys.

Thin on purpose: fields go to the control plane as given and its documents come back as dicts,
so a new server field needs no SDK release; skills come back as the small dataclasses of
`vwm.sdk.models` (each with its ``raw`` document). They need an API key with scope ``admin``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from vwm.errors import NotFoundError, ProtocolError, ValidationError
from vwm.sdk.answers import rows_of
from vwm.sdk.models import Skill, SkillVersions, UploadedSkill, WorkerSkill
from vwm.sdk.skill_package import PackageSource, read_package

if TYPE_CHECKING:
    from vwm.sdk.client import Client

LATEST = "latest"
"""The version that names a skill's highest version, in reads and downloads."""
SHA256_HEADER = "x-vwm-skill-sha256"
_FILENAME = re.compile(r'filename="?([^";]+)"?')
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")


class AdminAPI:
    def __init__(self, client: Client) -> None:
        self._client = client

    # Runtimes: a CLI, its version and image, prices, where its credential lives.

    def create_runtime(self, **fields: Any) -> dict[str, Any]:
        return self._client.request("POST", "/v1/admin/runtimes", json=fields)

    def list_runtimes(self) -> list[dict[str, Any]]:
        return list(self._client.paginate("/v1/admin/runtimes"))

    def get_runtime(self, name: str) -> dict[str, Any]:
        return self._client.request("GET", f"/v1/admin/runtimes/{name}")

    def update_runtime(self, name: str, **fields: Any) -> dict[str, Any]:
        return self._client.request("PATCH", f"/v1/admin/runtimes/{name}", json=fields)

    def delete_runtime(self, name: str) -> None:
        self._client.request("DELETE", f"/v1/admin/runtimes/{name}")

    # Workers: a runtime plus a knowledge-base repository and instructions.

    def create_worker(self, **fields: Any) -> dict[str, Any]:
        return self._client.request("POST", "/v1/admin/workers", json=fields)

    def list_workers(self) -> list[dict[str, Any]]:
        return list(self._client.paginate("/v1/admin/workers"))

    def get_worker(self, name: str) -> dict[str, Any]:
        return self._client.request("GET", f"/v1/admin/workers/{name}")

    def update_worker(self, name: str, **fields: Any) -> dict[str, Any]:
        return self._client.request("PATCH", f"/v1/admin/workers/{name}", json=fields)

    def delete_worker(self, name: str) -> None:
        self._client.request("DELETE", f"/v1/admin/workers/{name}")

    def worker_budget(self, name: str) -> dict[str, Any]:
        """A worker's budget: ``limits``, ``used`` (today in UTC, in total) and ``left``."""
        return self._client.request("GET", f"/v1/admin/workers/{name}/budget")

    def set_worker_budget(self, name: str, **limits: int | float | None) -> dict[str, Any]:
        """Set ``tokens_per_day``, ``tokens_total``, ``usd_per_day``, ``usd_total`` (those
        given; None removes a limit). See docs/budgets.md."""
        return self._client.request("PUT", f"/v1/admin/workers/{name}/budget", json=limits)

    # Skills: immutable, versioned packages (a SKILL.md and its files) that workers use.

    def upload_skill(self, package: PackageSource) -> UploadedSkill:
        """Upload a skill package: its bytes, a ``.tar.gz`` or ``.zip`` file, or a skill folder
        (packed into a tar.gz here, the same bytes every time). Name and version come from its
        SKILL.md. ``created`` is False when the same package was uploaded before.
        `ConflictError` ``skill_exists`` for other content under a version that exists,
        `ValidationError` ``skill_archive_invalid`` (``details.reason``, ``details.path``) for a
        package the control plane refuses, ``skill_package_invalid`` for a folder it cannot
        pack (a symbolic link, say)."""
        response = self._client.exchange("POST", "/v1/admin/skills", content=read_package(package))
        try:
            document = response.json()
        except ValueError as exc:
            raise ProtocolError(
                f"the upload answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
            ) from exc
        return UploadedSkill.from_upload(document, created=response.status_code == 201)

    def list_skills(self) -> list[Skill]:
        """Every version of every skill, by name, then highest version first."""
        return [Skill.from_document(item) for item in self._rows("/v1/admin/skills")]

    def get_skill(self, name: str) -> SkillVersions:
        """A skill's versions, highest first."""
        answer = self._client.request("GET", f"/v1/admin/skills/{_segment(name)}")
        return SkillVersions.from_document(answer)

    def get_skill_version(self, name: str, version: str = LATEST) -> Skill:
        """One version of a skill; ``latest`` is the highest uploaded."""
        answer = self._client.request("GET", _skill_path(name, version))
        return Skill.from_document(answer)

    def download_skill(self, name: str, version: str = LATEST) -> bytes:
        """A version's package bytes, checked against the checksum the control plane sent."""
        return self._fetch_skill(name, version)[0]

    def save_skill(
        self, name: str, version: str = LATEST, path: str | os.PathLike[str] = "."
    ) -> Path:
        """Download a version's package to ``path``: a file, or a folder to put it in under
        the control plane's file name (``name-version.tar.gz``). Returns the file written."""
        data, filename = self._fetch_skill(name, version)
        target = Path(path)
        if target.is_dir():
            target = target / filename
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise ValidationError(
                f"cannot write {target}: {exc.strerror or exc}; name a file in a folder that "
                "exists, or a folder",
                code="unwritable",
                details={"path": str(target)},
            ) from None
        return target

    def delete_skill(self, name: str, version: str) -> None:
        """Delete one version. `ConflictError` ``in_use`` while a worker is pinned to it, or
        follows the skill and it is the skill's last version."""
        self._client.request("DELETE", _skill_path(name, version))

    # A worker's skills.

    def list_worker_skills(self, worker: str) -> list[WorkerSkill]:
        """The skills ``worker`` uses and the version each gives its sessions now."""
        rows = self._rows(f"/v1/admin/workers/{_segment(worker)}/skills")
        return [WorkerSkill.from_document(item) for item in rows]

    def add_worker_skill(self, worker: str, name: str, version: str | None = None) -> WorkerSkill:
        """Make ``worker`` use skill ``name``: pinned to ``version``, or following the highest
        version uploaded when None. Running sessions get it at their next prompt.
        `ValidationError` ``skill_not_found`` if no such skill (version) is uploaded."""
        answer = self._client.request(
            "PUT", self._worker_skill_path(worker, name), json={"version": version}
        )
        return WorkerSkill.from_document(answer)

    def remove_worker_skill(self, worker: str, name: str) -> None:
        """Stop ``worker`` using skill ``name``."""
        self._client.request("DELETE", self._worker_skill_path(worker, name))

    def _worker_skill_path(self, worker: str, name: str) -> str:
        return f"/v1/admin/workers/{_segment(worker)}/skills/{_segment(name)}"

    def _rows(self, path: str) -> list[Any]:
        return list(self._client.paginate(path))

    def _fetch_skill(self, name: str, version: str) -> tuple[bytes, str]:
        response = self._client.exchange("GET", _skill_path(name, version) + "/archive")
        data = response.content
        expected = response.headers.get(SHA256_HEADER)
        actual = hashlib.sha256(data).hexdigest()
        if expected is not None and expected.lower() != actual:
            raise ProtocolError(
                f"the package of skill {name}@{version} arrived damaged (sha256 {actual}, "
                f"the control plane sent {expected}); download it again",
                code="skill_checksum_mismatch",
                details={"expected": expected, "actual": actual},
            )
        return data, _filename(response.headers.get("content-disposition"), name, version)

    # System settings, such as ``global_instructions`` and ``learning_prompt``.

    def settings(self) -> dict[str, dict[str, Any]]:
        """Every setting by key, each as ``{value, version, ...}``."""
        return settings_by_key(self._client.request("GET", "/v1/admin/settings"))

    def get_setting(self, key: str) -> Any:
        """The value of one setting; `NotFoundError` if it was never set."""
        entries = self.settings()
        if key not in entries:
            raise NotFoundError(f"setting {key!r} is not set", details={"known": sorted(entries)})
        return entries[key].get("value")

    def put_setting(self, key: str, value: Any) -> dict[str, Any]:
        """Write a setting; the answer carries its new ``version``."""
        return self._client.request("PUT", f"/v1/admin/settings/{key}", json={"value": value})

    def setting_versions(self, key: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Every value ``key`` was given, newest first, each ``{version, value, updated_at}``;
        ``limit`` 1 to 500 (the control plane's default: 50). `NotFoundError`
        ``setting_not_found`` if it was never set."""
        path = f"/v1/admin/settings/{_segment(key)}/versions"
        return rows_of(self._client.request("GET", path, params={"limit": limit}))

    # API keys.

    def create_key(self, name: str, scope: str = "client") -> dict[str, Any]:
        """A new key, ``{id, key}``; the key itself is shown only in this answer."""
        return self._client.request("POST", "/v1/admin/keys", json={"name": name, "scope": scope})


def settings_by_key(answer: Any) -> dict[str, dict[str, Any]]:
    """Settings keyed by name from a listing answer, which may be ``{items: [{key, value, ...}]}``,
    a bare list of those, or a mapping of key to entry (or to the bare value)."""
    if isinstance(answer, Mapping) and isinstance(answer.get("items"), list):
        answer = answer["items"]
    if isinstance(answer, list):
        return {str(entry["key"]): dict(entry) for entry in answer if isinstance(entry, Mapping)}
    if isinstance(answer, Mapping):
        return {
            str(key): dict(entry)
            if isinstance(entry, Mapping) and "value" in entry
            else {"value": entry}
            for key, entry in answer.items()
        }
    return {}


def _skill_path(name: str, version: str) -> str:
    return f"/v1/admin/skills/{_segment(name)}/{_segment(version)}"


def _segment(value: str) -> str:
    """`value` as one path segment: quoted, and never a dot segment that would climb the path."""
    if value in ("", ".", ".."):
        raise ValidationError(f"{value!r} is not a name", code="invalid_request")
    return quote(value, safe="")


def _filename(disposition: str | None, name: str, version: str) -> str:
    """The file name the control plane gave the download, if it is a plain one."""
    match = _FILENAME.search(disposition or "")
    if match:
        candidate = PurePosixPath(match.group(1)).name
        if _SAFE_FILENAME.fullmatch(candidate):
            return candidate
    return f"{name}-{version}.tar.gz"
