"""The control plane's HTTP client for one session's harness (see docs/harness.md).

Functions never import `harness`: they speak its versioned HTTP API through this module. Every
answer is parsed into its model from the shared contract (`eventing.harness_api`, events into
`eventing.job_events.JobEvent`), so callers read attributes, never keys. Errors become
`HarnessUnavailable` (the harness did not answer in time: retry later), `HarnessRefused` (it
answered with an error JSON; the code and message are passed on to the caller) or
`HarnessAnswerInvalid` (it answered with a body that does not fit the API: 502).

Every call is bounded (`HarnessCallSettings`): a harness that is stopped, or accepts connections
and never answers, costs a caller at most the bound, never a hung request. An event stream has
no total bound, only a silence bound: the harness sends a heartbeat comment every few seconds,
and a stream that stays silent for `stream_idle_s` (no event, no heartbeat) is a dead harness.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from eventing.errors import ErrorBody
from eventing.harness_api import (
    BootstrapReport,
    FileListing,
    FileWritten,
    HarnessHealth,
    JobState,
    LearningCommitOutcome,
    ShutdownOutcome,
    SkillInstallOutcome,
    SkillListing,
)
from eventing.job_events import JobEvent
from eventing.sse import SseFrame, aparse_lines
from functions.errors import FunctionsError
from functions.settings import HarnessCallSettings

if TYPE_CHECKING:
    # Imported by the first call instead (about 25 ms of a cold start, with the command-line
    # extras httpx loads): a function whose first requests only read the database (a session's
    # or a job's state) need not pay for it.
    import httpx


class HarnessCallError(FunctionsError):
    """A call to a session's harness failed; the kinds below say how."""

    status = 502
    code = "harness_unavailable"
    retryable = False


class HarnessUnavailable(HarnessCallError):
    """No answer in time (refused, timed out, stalled, silent): the harness is down, starting or
    hung. `timed_out`: the call may have reached a harness that then stopped answering."""

    status = 503
    retryable = True

    def __init__(self, message: str, *, timed_out: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.timed_out = timed_out


class HarnessRefused(HarnessCallError):
    """The harness answered with an error; `code` is the harness's own stable code (the ones
    the control plane branches on are constants in `eventing.errors`). `status` is the harness's
    when it blames the request (4xx), else 502: the harness failed, not the caller."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status if 400 <= status < 500 else 502
        self.code = code


class HarnessAnswerInvalid(HarnessCallError):
    """The harness answered with a body its API does not allow (not JSON, a field missing or
    of the wrong type): a harness of another version, or a broken one. Refused here, at the
    edge, so no caller meets it later as a missing key. 502: the harness failed, not the
    caller; retrying the same harness gives the same answer."""

    code = "harness_answer_invalid"

    def __init__(self, what: str, problems: list[str]) -> None:
        super().__init__(
            f"the session's harness answered {what} with a body that does not fit its API "
            f"({'; '.join(problems[:3])}); the harness and the control plane may be of "
            "different versions: check the harness image",
            answer=what,
            problems=problems[:10],
        )


Model = TypeVar("Model", bound=BaseModel)


def parse_answer(model: type[Model], body: str | bytes, what: str) -> Model:
    """`body` (JSON) as `model`; `HarnessAnswerInvalid` naming `what` if it does not fit."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise HarnessAnswerInvalid(what, problems) from None


class HarnessClient:
    """Calls to one harness (its base URL and session token) over the app's shared pool."""

    def __init__(
        self,
        url: str,
        token: str,
        bounds: HarnessCallSettings,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """`http`: the connection pool to use; by default the one of the app serving this
        request (`Services.harness_http`: one pool per app, closed at its shutdown)."""
        if http is None:
            from functions.context import harness_http

            http = harness_http()
        self._base = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = http
        self.bounds = bounds

    async def __aenter__(self) -> HarnessClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None  # the pool outlives a client; nothing to release

    @property
    def files(self) -> HarnessFiles:
        return HarnessFiles(self)

    async def health(self) -> HarnessHealth:
        return await self.answer(HarnessHealth, "GET", "/healthz")

    async def bootstrap(self, body: dict[str, Any]) -> BootstrapReport:
        return await self.answer(
            BootstrapReport, "POST", "/v1/bootstrap", json=body, bound=self.bounds.bootstrap_s
        )

    async def start_job(self, body: dict[str, Any]) -> JobState:
        """Start a job, which the harness refuses (`job_expired`) if this request reaches it after
        we stopped waiting for it: a request a stopped harness reads late must not run a job
        nobody waits for. The deadline is on the harness's clock, hence the skew margin."""
        bounds = self.bounds
        not_after = time.time() + bounds.connect_s + bounds.call_s + bounds.clock_skew_s
        job = {**body, "mode": "async", "not_after": round(not_after, 3)}
        return await self.answer(JobState, "POST", "/v1/jobs", json=job)

    async def deliver(self, headers: dict[str, str], body: bytes, bound: float) -> JobState:
        """Deliver a prompt request (a CloudEvent in binary mode: its ``ce-*`` headers and
        data); the harness answers when the job it runs has ended, so `bound` covers the wait
        for its turn and the job."""
        return await self.answer(
            JobState,
            "POST",
            "/v1/events",
            headers={**self._headers, **headers},
            content=body,
            bound=bound,
        )

    async def learning_commit(self, body: dict[str, Any]) -> LearningCommitOutcome:
        """Commit what a learning job recorded in worker_repo, with provenance, and push it
        (a commit and a push: the shutdown's bound)."""
        return await self.answer(
            LearningCommitOutcome,
            "POST",
            "/v1/learning/commit",
            json=body,
            bound=self.bounds.shutdown_s,
        )

    async def skills(self) -> SkillListing:
        return await self.answer(SkillListing, "GET", "/v1/skills")

    async def install_skill(self, name: str, data: bytes, sha256: str) -> SkillInstallOutcome:
        """Install a skill's package; the harness checks `sha256` before it writes anything. A
        package may be tens of MiB: it gets the bootstrap's bound."""
        headers = {
            **self._headers,
            "Content-Type": "application/octet-stream",
            "X-VWM-Skill-SHA256": sha256,
        }
        return await self.answer(
            SkillInstallOutcome,
            "PUT",
            f"/v1/skills/{name}",
            headers=headers,
            content=data,
            bound=self.bounds.bootstrap_s,
        )

    async def remove_skill(self, name: str) -> None:
        await self.send("DELETE", f"/v1/skills/{name}")

    async def job(self, job_id: str) -> JobState:
        return await self.answer(JobState, "GET", f"/v1/jobs/{job_id}")

    async def cancel(self, job_id: str) -> JobState:
        return await self.answer(JobState, "POST", f"/v1/jobs/{job_id}/cancel")

    async def shutdown(self) -> ShutdownOutcome:
        return await self.answer(
            ShutdownOutcome, "POST", "/v1/shutdown", bound=self.bounds.shutdown_s
        )

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[SseFrame]:
        """The job's events after `after`, as they come, until the job's log ends. Every read
        must bring something (an event or a heartbeat comment) within `stream_idle_s`."""
        import httpx

        headers = {**self._headers, "Last-Event-ID": str(after)}
        idle = self.bounds.stream_idle_s
        timeout = httpx.Timeout(idle, connect=self.bounds.connect_s)
        try:
            async with self._http.stream(
                "GET", f"{self._base}/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refused(response)
                async for message in aparse_lines(response.aiter_lines()):
                    yield message
        except httpx.TimeoutException:
            raise HarnessUnavailable(
                f"the session's harness sent nothing (no event, no heartbeat) for {idle:g} s; "
                "it is hung and is being restarted, try again",
                timed_out=True,
            ) from None
        except httpx.TransportError as exc:
            raise HarnessUnavailable(
                f"the session's harness stopped answering ({exc.__class__.__name__}); "
                "it may be restarting, try again"
            ) from None

    async def answer(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        """`send`, and its answer parsed as `model` (`HarnessAnswerInvalid` if it does not fit)."""
        response = await self.send(method, path, **kwargs)
        return parse_answer(model, response.content, f"{method} {path}")

    async def send(
        self, method: str, path: str, *, bound: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call, answered in full within `connect_s` + `bound` (default `call_s`); an error
        answer raises `HarnessRefused`, no answer in time `HarnessUnavailable`."""
        import httpx

        bound = self.bounds.call_s if bound is None else bound
        total = self.bounds.connect_s + bound
        timeout = httpx.Timeout(bound, connect=self.bounds.connect_s)
        try:
            # httpx bounds each read; the outer deadline also bounds a harness that trickles.
            async with asyncio.timeout(total):
                headers = kwargs.pop("headers", self._headers)
                response = await self._http.request(
                    method, self._base + path, headers=headers, timeout=timeout, **kwargs
                )
        except (httpx.TimeoutException, TimeoutError):
            raise HarnessUnavailable(
                f"the session's harness did not answer {method} {path} within {total:g} s; "
                "it is hung or overloaded and is being restarted, try again",
                timed_out=True,
            ) from None
        except httpx.TransportError as exc:
            raise HarnessUnavailable(
                f"the session's harness did not answer ({exc.__class__.__name__}); "
                "it may be restarting, try again"
            ) from None
        if response.status_code >= 400:
            raise _refused(response)
        return response


def _refused(response: httpx.Response) -> HarnessCallError:
    if response.status_code == 401:
        # Our token, not the caller's key: the harness was started with another one (before the
        # token key changed). It never will accept this one, so it counts as unavailable, which
        # has it replaced; the caller never sees the harness's 401 as its own.
        return HarnessUnavailable(
            "the session's harness does not accept the control plane's token (it was started "
            "under another token key); it is being replaced, try again"
        )
    try:
        error = ErrorBody.model_validate(response.json()).error
        return HarnessRefused(response.status_code, error.code, error.message, **error.details)
    except (ValueError, KeyError, TypeError):  # not JSON, or not an error body (a ValueError)
        return HarnessRefused(
            response.status_code, "harness_error", f"the harness answered {response.status_code}"
        )


def decode(message: SseFrame) -> JobEvent:
    """One frame of a job's event stream as the log entry it carries; `HarnessAnswerInvalid`
    if its data is not one."""
    return parse_answer(JobEvent, message.data, f"an event stream frame (id {message.id})")


class HarnessFiles:
    """The harness's file endpoints (workspace-confined there), for the session files API."""

    def __init__(self, harness: HarnessClient) -> None:
        self._harness = harness

    async def list(self, path: str) -> FileListing:
        return await self._harness.answer(FileListing, "GET", "/v1/files", params={"path": path})

    async def read(self, path: str) -> bytes:
        response = await self._harness.send("GET", "/v1/files/content", params={"path": path})
        return response.content

    async def write(self, path: str, data: bytes) -> FileWritten:
        return await self._harness.answer(
            FileWritten, "PUT", "/v1/files/content", params={"path": path}, content=data
        )

    async def delete(self, path: str, recursive: bool) -> None:
        params = {"path": path, "recursive": "1" if recursive else "0"}
        await self._harness.send("DELETE", "/v1/files", params=params)
