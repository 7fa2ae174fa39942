"""File endpoints: list, read, write and delete inside the session workspace only.

Confinement is `harness.files`'s job and what may be touched inside the workspace is
`harness.path_policy.WORKSPACE_POLICY`'s; this module only maps HTTP onto them.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from harness import files
from harness.errors import BadRequest
from harness.http import query_flag, read_body
from harness.path_policy import WORKSPACE_POLICY
from harness.workspace import Workspace

WorkspaceOf = Callable[[Request], Workspace]
LimitOf = Callable[[Request], int]


def _path(request: Request, default: str | None = None) -> str:
    path = request.query_params.get("path", default)
    if path is None:
        raise BadRequest("the 'path' query parameter is required")
    return path


def routes(workspace_of: WorkspaceOf, max_bytes_of: LimitOf) -> list[Route]:
    async def list_files(request: Request) -> Response:
        root = workspace_of(request).root
        return JSONResponse(
            {"entries": files.list_dir(root, _path(request, "."), WORKSPACE_POLICY)}
        )

    async def read(request: Request) -> Response:
        root = workspace_of(request).root
        data = files.read_file(root, _path(request), max_bytes_of(request), WORKSPACE_POLICY)
        return Response(data, media_type="application/octet-stream")

    async def write(request: Request) -> Response:
        root = workspace_of(request).root
        limit = max_bytes_of(request)
        path = _path(request)
        data = await read_body(request, limit)
        written = files.write_file(root, path, data, limit, WORKSPACE_POLICY)
        return JSONResponse(written, status_code=200)

    async def delete(request: Request) -> Response:
        root = workspace_of(request).root
        recursive = query_flag(request, "recursive")
        files.delete_path(root, _path(request), recursive, WORKSPACE_POLICY)
        return Response(status_code=204)

    return [
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files", delete, methods=["DELETE"]),
        Route("/v1/files/content", read, methods=["GET"]),
        Route("/v1/files/content", write, methods=["PUT"]),
    ]
