"""A fake of the control plane's REST API (docs/control-plane.md), just enough for SDK and CLI tests.

It speaks the real wire format: bearer keys with scopes, ``{"error": {code, message, details}}``
answers, ``{items, next_cursor}`` pages, and job events as SSE (``id: <seq>``, ``event: <kind>``,
``data: {job_id, seq, kind, data, ts}``, heartbeat comments, ``Last-Event-ID``). Jobs do not run:
each prompt gets a scripted event log at once. Knobs on `FakeControlPlane` make streams drop the
connection, replay events already sent, or keep async jobs running for a few polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from functions.http import NO_KEY, UNKNOWN_KEY

ADMIN_KEY = "vwm_admin_secret"
CLIENT_KEY = "vwm_client_secret"
FINISHED = {"succeeded", "failed", "cancelled", "timeout"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class DropConnection(Exception):
    """Raised inside a stream body: the server goes away mid-response."""


@dataclass
class FakeJob:
    id: str
    session_id: str
    prompt: str
    events: list[dict[str, Any]]
    status: str = "queued"
    polls_left: int = 0
    idempotency_key: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished_data(self) -> dict[str, Any]:
        return self.events[-1]["data"]

    def document(self) -> dict[str, Any]:
        done = self.status in FINISHED
        data = self.finished_data
        return {
            "id": self.id,
            "session_id": self.session_id,
            "status": self.status,
            "prompt": self.prompt,
            "summary": data["summary"] if done else None,
            "error": data["error"] if done and self.status != "cancelled" else None,
            "last_seq": len(self.events) if done else 1,
        }


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeControlPlane:
    keys: dict[str, str] = field(default_factory=lambda: {ADMIN_KEY: "admin", CLIENT_KEY: "client"})
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    # Knobs.
    drops: list[int] = field(default_factory=list)
    """Per stream connection, in order: send this many events, then drop the connection."""
    cut_mid_event: bool = False
    """When dropping, send the first half of the next event before going away."""
    overlap: int = 0
    """On a resumed stream, send this many events again that came before Last-Event-ID."""
    async_polls: int = 0
    """An async job reads `running` for this many GETs before it is finished."""
    stall_after: int | None = None
    """A stream job sends this many events, then runs until it is cancelled."""
    end_fails: bool = False
    """Ending a session fails (its shutdown could not push)."""
    page_size: int = 2

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def recorded(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # Scripted jobs.

    def script(self, job_id: str, prompt: str) -> list[dict[str, Any]]:
        """The event log of a prompt. A prompt starting with "fail" fails."""
        failing = prompt.startswith("fail")
        usage = {"input": 10, "cache_read": 100, "cache_write": 0, "output": 20, "reasoning": 0}
        summary = {
            "cli_session_id": "cli-1",
            "final_text": "" if failing else "Hello, world\nDone.",
            "usage": usage,
            "cost_usd": 0.0123,
            "cost_source": "reported",
            "is_error": failing,
            "error": "the model refused" if failing else None,
        }
        error = {"code": "cli_failed", "message": "the model refused"} if failing else None
        steps: list[tuple[str, dict[str, Any]]] = [
            ("job_started", {"prompt": prompt, "cli": "claude", "resume_id": None}),
            ("session_started", {"cli_session_id": "cli-1", "model": "fake-model"}),
            ("text_delta", {"text": "Hello"}),
            ("text_delta", {"text": ", world"}),
            ("assistant_text", {"text": "Hello, world"}),
            ("tool_call", {"id": "t1", "name": "Bash", "input": {"command": "ls -la [x]"}}),
            ("tool_result", {"id": "t1", "output": "README.md", "is_error": False}),
            ("assistant_text", {"text": "Done."}),  # a block that came without deltas
            ("usage", {**usage, "cost_usd": 0.0123, "cost_source": "reported"}),
            ("result", summary),
        ]
        if failing:
            steps[2:8] = [("error", {"message": "the model refused", "fatal": True, "code": None})]
        status = "failed" if failing else "succeeded"
        finished = {
            "status": status,
            "summary": summary,
            "error": error,
            "exit_code": 0,
            "duration_ms": 1500,
        }
        steps.append(("job_finished", finished))
        return [
            {"job_id": job_id, "seq": seq, "kind": kind, "data": data, "ts": time.time()}
            for seq, (kind, data) in enumerate(steps, start=1)
        ]

    # The app.

    def app(self) -> Starlette:
        def route(path: str, endpoint: Any, methods: list[str]) -> Route:
            async def handle(request: Request) -> Response:
                body = None
                if request.method in ("POST", "PUT", "PATCH"):
                    raw = await request.body()
                    body = json.loads(raw) if raw else None
                self.requests.append(
                    Recorded(
                        request.method,
                        request.url.path,
                        dict(request.query_params),
                        dict(request.headers),
                        body,
                    )
                )
                try:
                    self._authorize(request)
                    return await endpoint(request, body)
                except ApiError as exc:
                    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                    if exc.details:
                        error["details"] = exc.details
                    return JSONResponse({"error": error}, status_code=exc.status)

            return Route(path, handle, methods=methods)

        return Starlette(
            routes=[
                route("/v1/admin/runtimes", self._runtimes, ["GET", "POST"]),
                route("/v1/admin/runtimes/{name}", self._runtime, ["GET", "PATCH", "DELETE"]),
                route("/v1/admin/workers", self._workers, ["GET", "POST"]),
                route("/v1/admin/workers/{name}", self._worker, ["GET", "PATCH", "DELETE"]),
                route("/v1/admin/settings", self._settings, ["GET"]),
                route("/v1/admin/settings/{key}", self._setting, ["PUT"]),
                route("/v1/admin/keys", self._keys, ["POST"]),
                route("/v1/sessions", self._sessions, ["GET", "POST"]),
                route("/v1/sessions/{id}", self._session, ["GET", "DELETE"]),
                route("/v1/prompts", self._prompts, ["POST"]),
                route("/v1/jobs/{id}", self._job, ["GET"]),
                route("/v1/jobs/{id}/events", self._job_events, ["GET"]),
                route("/v1/jobs/{id}/cancel", self._cancel, ["POST"]),
                route("/v1/telemetry/requests", self._telemetry_requests, ["GET"]),
                route("/v1/telemetry/summary", self._telemetry_summary, ["GET"]),
            ]
        )

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scope = self.keys.get(header.removeprefix("Bearer "))
        if scope is None:  # the real control plane's two messages (functions.http)
            message = UNKNOWN_KEY if header.startswith("Bearer ") else NO_KEY
            raise ApiError(401, "unauthorized", message)
        if request.url.path.startswith("/v1/admin/") and scope != "admin":
            raise ApiError(403, "forbidden", "this key's scope is client; admin calls need admin")

    # Admin.

    async def _runtimes(self, request: Request, body: Any) -> Response:
        return await self._collection(request, body, self.runtimes, ("name", "cli", "cli_version"))

    async def _runtime(self, request: Request, body: Any) -> Response:
        return await self._member(request, body, self.runtimes, "runtime")

    async def _workers(self, request: Request, body: Any) -> Response:
        if request.method == "POST" and body.get("runtime") not in self.runtimes:
            raise ApiError(422, "invalid_request", "no such runtime", field="runtime")
        defaults = {"repo_branch": "main", "instructions": "", "auto_learning": False}
        return await self._collection(
            request, {**defaults, **(body or {})}, self.workers, ("name", "runtime", "repo_url")
        )

    async def _worker(self, request: Request, body: Any) -> Response:
        return await self._member(request, body, self.workers, "worker")

    async def _collection(
        self,
        request: Request,
        body: Any,
        store: dict[str, dict[str, Any]],
        required: tuple[str, ...],
    ) -> Response:
        if request.method == "GET":
            return JSONResponse({"items": list(store.values()), "next_cursor": None})
        missing = [name for name in required if not body.get(name)]
        if missing:
            raise ApiError(
                422, "invalid_request", f"missing fields: {', '.join(missing)}", missing=missing
            )
        if body["name"] in store:
            raise ApiError(409, "name_taken", f"{body['name']!r} exists already")
        store[body["name"]] = body
        return JSONResponse(body, status_code=201)

    async def _member(
        self, request: Request, body: Any, store: dict[str, dict[str, Any]], noun: str
    ) -> Response:
        name = request.path_params["name"]
        if name not in store:
            raise ApiError(404, "not_found", f"no {noun} {name!r}")
        if request.method == "DELETE":
            del store[name]
            return Response(status_code=204)
        if request.method == "PATCH":
            store[name].update(body)
        return JSONResponse(store[name])

    async def _settings(self, request: Request, body: Any) -> Response:
        return JSONResponse({"items": [{"key": k, **v} for k, v in self.settings.items()]})

    async def _setting(self, request: Request, body: Any) -> Response:
        key = request.path_params["key"]
        version = self.settings.get(key, {}).get("version", 0) + 1
        self.settings[key] = {"value": body["value"], "version": version}
        return JSONResponse({"key": key, **self.settings[key]})

    async def _keys(self, request: Request, body: Any) -> Response:
        key = f"vwm_k{len(self.keys)}_secret"
        self.keys[key] = body["scope"]
        return JSONResponse({"id": f"k{len(self.keys)}", "key": key}, status_code=201)

    # Sessions.

    async def _sessions(self, request: Request, body: Any) -> Response:
        if request.method == "GET":
            query = request.query_params
            matching = [
                s
                for s in self.sessions.values()
                if query.get("worker") in (None, s["worker"])
                and query.get("status") in (None, s["status"])
            ]
            start = int(query.get("cursor", "0"))
            size = int(query.get("limit", self.page_size))
            end = start + size
            return JSONResponse(
                {
                    "items": matching[start:end],
                    "next_cursor": str(end) if end < len(matching) else None,
                }
            )
        if body.get("worker") not in self.workers:
            raise ApiError(404, "not_found", f"no worker {body.get('worker')!r}")
        session_id = f"ses_{len(self.sessions) + 1}"
        wait = body.get("wait", True)
        self.sessions[session_id] = {
            "id": session_id,
            "worker": body["worker"],
            "status": "ready" if wait else "provisioning",
            "session_repo": body.get("session_repo"),
            "created_at": "2025-01-01T00:00:00Z",
        }
        return JSONResponse(self.sessions[session_id], status_code=201 if wait else 202)

    async def _session(self, request: Request, body: Any) -> Response:
        session = self._find_session(request.path_params["id"])
        if request.method == "DELETE" and session["status"] != "ended":  # ending twice: a no-op
            if self.end_fails:  # the real answer: 502 with the failed session as the body
                session["status"] = "failed"
                session["error"] = {"code": "push_failed", "message": "the push was rejected"}
                return JSONResponse(session, status_code=502)
            session["status"] = "ended"
        elif session["status"] == "provisioning":
            session["status"] = "ready"  # provisioned by the next look
        return JSONResponse(session)

    def _find_session(self, session_id: str) -> dict[str, Any]:
        if session_id not in self.sessions:
            raise ApiError(404, "not_found", f"no session {session_id!r}")
        return self.sessions[session_id]

    # Prompts and jobs.

    async def _prompts(self, request: Request, body: Any) -> Response:
        if not body.get("prompt") or body.get("mode") not in ("sync", "stream", "async"):
            raise ApiError(422, "invalid_request", "prompt and mode are required", field="prompt")
        session = self._find_session(body["session_id"])
        if session["status"] == "ended":
            raise ApiError(409, "session_ended", "the session has ended; start a new one")
        key = body.get("idempotency_key")
        job = next((j for j in self.jobs.values() if key and j.idempotency_key == key), None)
        if job is None:
            if any(
                j.session_id == session["id"] and j.status not in FINISHED
                for j in self.jobs.values()
            ):
                raise ApiError(
                    409, "session_busy", "the session is running a job; wait or cancel it"
                )
            job_id = f"job_{len(self.jobs) + 1}"
            job = FakeJob(
                job_id, session["id"], body["prompt"], self.script(job_id, body["prompt"])
            )
            job.idempotency_key = key
            self.jobs[job_id] = job
            if body["mode"] == "async":
                job.polls_left = self.async_polls
            elif body["mode"] == "stream" and self.stall_after is not None:
                job.status = "running"
            else:
                job.status = job.finished_data["status"]
        match body["mode"]:
            case "async":
                return JSONResponse(job.document(), status_code=202)
            case "stream":
                return self._sse(job, 0)
            case _:
                return JSONResponse(job.document())

    def _find_job(self, job_id: str) -> FakeJob:
        if job_id not in self.jobs:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return self.jobs[job_id]

    async def _job(self, request: Request, body: Any) -> Response:
        job = self._find_job(request.path_params["id"])
        if job.status not in FINISHED:
            if job.polls_left > 0:
                job.polls_left -= 1
                job.status = "running"
            else:
                job.status = job.finished_data["status"]
        return JSONResponse(job.document())

    async def _job_events(self, request: Request, body: Any) -> Response:
        job = self._find_job(request.path_params["id"])
        after = int(request.headers.get("last-event-id") or request.query_params.get("after") or 0)
        return self._sse(job, max(0, after - self.overlap))

    async def _cancel(self, request: Request, body: Any) -> Response:
        job = self._find_job(request.path_params["id"])
        if job.status not in FINISHED:
            job.status = "cancelled"
            job.cancelled.set()
        return JSONResponse(job.document())

    def _sse(self, job: FakeJob, after: int) -> StreamingResponse:
        drop_after = self.drops.pop(0) if self.drops else None
        cut, stall_after = self.cut_mid_event, self.stall_after

        async def body() -> AsyncIterator[bytes]:
            yield b": heartbeat\n\n"
            for sent, event in enumerate(job.events[after:]):
                if sent == stall_after:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(job.cancelled.wait(), timeout=10)
                    return
                frame = f"id: {event['seq']}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n".encode()
                if sent == drop_after:
                    if cut:
                        yield frame[: len(frame) // 2]
                    raise DropConnection
                yield frame
                yield b": heartbeat\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    # Telemetry.

    async def _telemetry_requests(self, request: Request, body: Any) -> Response:
        query = request.query_params
        records = []
        for job in self.jobs.values():
            session = self.sessions[job.session_id]
            if query.get("worker") not in (None, session["worker"]):
                continue
            if query.get("session_id") not in (None, job.session_id):
                continue
            records.append(
                {
                    "job_id": job.id,
                    "session_id": job.session_id,
                    "worker": session["worker"],
                    "model": "fake-model",
                    "status": job.status,
                    "tokens": {
                        "input": 10,
                        "cache_read": 100,
                        "cache_write": 0,
                        "output": 20,
                        "reasoning": 0,
                    },
                    "cost_usd": 0.0123,
                    "cost_source": "reported",
                    "durations_ms": {
                        "queued": 5,
                        "cli_start": 100,
                        "first_output": 300,
                        "total": 1500,
                    },
                }
            )
        return JSONResponse({"items": records})

    async def _telemetry_summary(self, request: Request, body: Any) -> Response:
        group_by = request.query_params.get("group_by", "worker")
        if group_by not in ("worker", "session"):
            raise ApiError(
                422, "invalid_request", "group_by is worker or session", field="group_by"
            )
        groups: dict[str, dict[str, Any]] = {}
        for job in self.jobs.values():
            session = self.sessions[job.session_id]
            name = session["worker"] if group_by == "worker" else job.session_id
            group = groups.setdefault(
                name,
                {group_by: name, "jobs": 0, "tokens": {"input": 0, "output": 0}, "cost_usd": 0.0},
            )
            group["jobs"] += 1
            group["tokens"]["input"] += 10
            group["tokens"]["output"] += 20
            group["cost_usd"] += 0.0123
        return JSONResponse({"items": list(groups.values())})
