"""File endpoints: list, read, write and delete inside the session workspace only.

Confinement is `harness.files`'s job; this module only maps HTTP onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from harness import files
from harness.errors import BadRequest, Forbidden
from harness.http import read_body
from harness.workspace import Workspace

WorkspaceOf = Callable[[Request], Workspace]
LimitOf = Callable[[Request], int]


# The CLI's own state may hold credentials, and the harness's state must only change through the
# harness: the first is never served, the second is read-only.
_HIDDEN = ".cli-home"
_READ_ONLY = ".vwm"


def _path(request: Request, default: str | None = None, *, writing: bool = False) -> str:
    path = request.query_params.get("path", default)
    if path is None:
        raise BadRequest("the 'path' query parameter is required")
    top = PurePosixPath(path).parts[0] if PurePosixPath(path).parts else ""
    if top == _HIDDEN or (writing and top == _READ_ONLY):
        raise Forbidden(
            f"{top}/ is managed by the harness and cannot be {'changed' if writing else 'read'} "
            "through the files API",
            path=path,
        )
    return path


def routes(workspace_of: WorkspaceOf, max_bytes_of: LimitOf) -> list[Route]:
    async def list_files(request: Request) -> Response:
        root = workspace_of(request).root
        return JSONResponse({"entries": files.list_dir(root, _path(request, "."))})

    async def read(request: Request) -> Response:
        root = workspace_of(request).root
        data = files.read_file(root, _path(request), max_bytes_of(request))
        return Response(data, media_type="application/octet-stream")

    async def write(request: Request) -> Response:
        root = workspace_of(request).root
        limit = max_bytes_of(request)
        path = _path(request, writing=True)
        data = await read_body(request, limit)
        return JSONResponse(files.write_file(root, path, data, limit), status_code=200)

    async def delete(request: Request) -> Response:
        root = workspace_of(request).root
        recursive = request.query_params.get("recursive", "0") in ("1", "true", "yes")
        files.delete_path(root, _path(request, writing=True), recursive=recursive)
        return Response(status_code=204)

    return [
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files", delete, methods=["DELETE"]),
        Route("/v1/files/content", read, methods=["GET"]),
        Route("/v1/files/content", write, methods=["PUT"]),
    ]
