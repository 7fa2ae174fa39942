"""Admin calls (`client.admin`): runtimes, workers, system settings and API keys.

Thin on purpose: fields go to the control plane as given and its documents come back as dicts,
so a new server field needs no SDK release. They need an API key with scope ``admin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vwm.errors import NotFoundError

if TYPE_CHECKING:
    from vwm.sdk.client import Client


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

    # System settings, such as ``global_instructions``.

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
