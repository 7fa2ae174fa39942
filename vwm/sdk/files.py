"""A session's workspace files: ``session.files.read("session_repo/README.md")``.

Paths are relative to the workspace (``session_repo/…``, ``worker_repo/…``); the harness refuses
anything that would leave it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vwm.sdk.client import Client


class SessionFiles:
    def __init__(self, client: Client, session_id: str) -> None:
        self._client = client
        self._base = f"/v1/sessions/{session_id}/files"

    def list(self, path: str = ".") -> list[dict[str, Any]]:
        """Entries of a folder: name, path, type (file, dir, symlink), size, mtime."""
        answer = self._client.request("GET", self._base, params={"path": path})
        return list(answer.get("entries", [])) if isinstance(answer, dict) else []

    def read(self, path: str) -> bytes:
        return self._client.send_bytes("GET", f"{self._base}/content", params={"path": path})

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def write(self, path: str, data: bytes | str) -> dict[str, Any]:
        """Create or replace a file (folders are made as needed)."""
        content = data.encode() if isinstance(data, str) else data
        answer = self._client.send_bytes(
            "PUT", f"{self._base}/content", params={"path": path}, content=content
        )
        return json.loads(answer) if answer else {}

    def delete(self, path: str, *, recursive: bool = False) -> None:
        self._client.send_bytes(
            "DELETE", self._base, params={"path": path, "recursive": "true" if recursive else None}
        )
