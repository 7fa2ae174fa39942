"""Files of a live session's workspace, through the `sessions` function.

The control plane only relays: confinement to the workspace (no `..`, no absolute paths, no
symlinks out, the CLI's state never served) is enforced by the harness, which owns the volume.
Each call is bounded; one that gets no answer in time answers 503 `harness_unavailable` after the
hung harness was replaced, so trying again works.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.lazy_models import LazyModel
from functions.api import Endpoint
from functions.harness_client import HarnessFiles
from functions.http import ApiError, parse_query, read_body
from functions.session_runtime import client_for, reach, recovering

MAX_FILE_BYTES = 32 << 20


class FileQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(default=".", min_length=1, max_length=4096)


class DeleteQuery(FileQuery):
    recursive: bool = False


class FileEntry(LazyModel):
    name: str
    path: str
    type: str
    size: int
    mtime: float


class FileList(LazyModel):
    entries: list[FileEntry]


T = TypeVar("T")


async def _on_files(request: Request, call: Callable[[HarnessFiles], Awaitable[T]]) -> T:
    """One call to the files of the request's session, through its harness."""
    session_id = request.path_params["session_id"]
    _, endpoint = await reach(session_id)
    async with recovering(session_id), client_for(endpoint) as harness:
        return await call(harness.files)


async def list_files(request: Request) -> Response:
    query = parse_query(request, FileQuery)
    listing = await _on_files(request, lambda files: files.list(query.path))
    return JSONResponse(listing.model_dump(mode="json"))


async def read_file(request: Request) -> Response:
    query = parse_query(request, FileQuery)
    data = await _on_files(request, lambda files: files.read(query.path))
    return Response(data, media_type="application/octet-stream")


async def write_file(request: Request) -> Response:
    query = parse_query(request, FileQuery)
    if query.path == ".":
        raise ApiError(400, "bad_request", "name the file to write with ?path=")
    data = await read_body(request, MAX_FILE_BYTES)
    written = await _on_files(request, lambda files: files.write(query.path, data))
    return JSONResponse(written.model_dump(mode="json"))


async def delete_file(request: Request) -> Response:
    query = parse_query(request, DeleteQuery)
    await _on_files(request, lambda files: files.delete(query.path, query.recursive))
    return Response(status_code=204)


TAGS = ("sessions",)
_ERRORS = (400, 403, 409, 502, 503)
ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/sessions/{session_id}/files",
        list_files,
        "List a folder of the session's workspace",
        query=FileQuery,
        response=FileList,
        other_statuses=_ERRORS,
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/v1/sessions/{session_id}/files",
        delete_file,
        "Delete a file or folder of the session's workspace",
        query=DeleteQuery,
        status=204,
        other_statuses=_ERRORS,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/sessions/{session_id}/files/content",
        read_file,
        "Read a file of the session's workspace",
        query=FileQuery,
        binary=True,
        other_statuses=_ERRORS,
        tags=TAGS,
    ),
    Endpoint(
        "PUT",
        "/v1/sessions/{session_id}/files/content",
        write_file,
        "Write a file of the session's workspace (raw body)",
        query=FileQuery,
        binary_body=True,
        other_statuses=(*_ERRORS, 413),
        tags=TAGS,
    ),
]
