"""Virtual workers and their sessions: the SDK's main entry points.

A `VirtualWorker` is a handle on a worker configured by an admin; `.session()` starts a session
(a workspace with the worker's knowledge base and a running CLI). A `VWSession` takes prompts in
three modes: `prompt` (wait for the result), `stream` (live events) and `submit` (a `Job` to poll).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vwm.errors import (
    ConflictError,
    ProtocolError,
    SessionFailedError,
    VWMError,
    WaitTimeoutError,
)
from vwm.sdk.files import SessionFiles
from vwm.sdk.jobs import Job
from vwm.sdk.models import SESSION_FINISHED, Event, JobResult
from vwm.sdk.sse import follow

if TYPE_CHECKING:
    from vwm.sdk.client import Client

PROVISION_TIMEOUT_S = 600.0
"""How long `VirtualWorker.session(wait=True)` waits for the answer: cloning and starting a CLI."""
SYNC_MARGIN_S = 60.0
"""Added to a sync prompt's ``timeout_s`` for the HTTP read: the server times the job out first."""


class VirtualWorker:
    """Worker ``name`` of the control plane behind ``client``. Creating it fetches nothing."""

    def __init__(self, name: str, client: Client) -> None:
        self.name = name
        self._client = client

    def session(
        self,
        session_repo: dict[str, str] | None = None,
        wait: bool = True,
        *,
        timeout_s: float = PROVISION_TIMEOUT_S,
        budget: dict[str, int | float | None] | None = None,
        idempotency_key: str | None = None,
    ) -> VWSession:
        """Start a session. ``session_repo`` is ``{"url", "branch"}`` of the repository to work in.
        With ``wait`` the answer comes when the session is ``ready``; without, it is
        ``provisioning`` and `VWSession.wait_ready` waits for it. Sent again with the same
        ``idempotency_key`` (a retry after a timeout, a restarted caller), it answers the session
        the first call started, as it is now, instead of starting another."""
        body: dict[str, Any] = {"worker": self.name, "wait": wait}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if session_repo is not None:
            body["session_repo"] = session_repo
        if budget is not None:
            body["budget"] = budget  # {"tokens", "usd"}: docs/budgets.md
        data = self._client.request(
            "POST", "/v1/sessions", json=body, timeout=self._client.read_timeout(timeout_s)
        )
        return VWSession(self._client, data)

    def sessions(self, status: str | None = None) -> Iterator[VWSession]:
        """This worker's sessions, newest pages fetched as the iteration goes."""
        return self._client.sessions(worker=self.name, status=status)

    def __repr__(self) -> str:
        return f"VirtualWorker({self.name!r})"


class VWSession:
    """A session as last fetched. ``with`` ends it on exit."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        if not data.get("id"):
            raise ProtocolError("the session document has no id", details={"session": data})
        self._client = client
        self.data = data
        self.id = str(data["id"])

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def worker(self) -> str | None:
        return self.data.get("worker")

    @property
    def result(self) -> dict[str, Any] | None:
        """Once ended: per repository the commit made, how it was pushed (``direct``,
        ``rebased``, ``fallback_branch``) and the ``branch`` and ``head`` holding the work."""
        return self.data.get("result")

    @property
    def files(self) -> SessionFiles:
        """The session's workspace files (list, read, write, delete)."""
        return SessionFiles(self._client, self.id)

    def set_budget(self, **limits: int | float | None) -> dict[str, Any]:
        """Set the session's ``tokens`` and ``usd`` limits (those given; None removes one);
        answers its budget (limits, used, left, state), which ``data`` then shows too."""
        budget = self._client.request("PUT", f"/v1/sessions/{self.id}/budget", json=limits)
        self.data["budget"] = budget
        return budget

    def refresh(self) -> VWSession:
        self.data = self._client.request("GET", f"/v1/sessions/{self.id}")
        return self

    def wait_ready(
        self, *, poll_s: float = 1.0, timeout_s: float = PROVISION_TIMEOUT_S
    ) -> VWSession:
        """Poll a ``provisioning`` session until it is ``ready``. `SessionFailedError` if it fails."""
        deadline = time.monotonic() + timeout_s
        while self.refresh().status != "ready":
            if self.status in SESSION_FINISHED:
                raise SessionFailedError(
                    f"session {self.id} is {self.status}, it will not become ready",
                    details={"session": self.data},
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(
                    f"session {self.id} is still {self.status} after {timeout_s} s"
                )
            time.sleep(min(poll_s, remaining))
        return self

    def prompt(
        self, text: str, *, timeout_s: int | None = None, idempotency_key: str | None = None
    ) -> JobResult:
        """Run a prompt and wait for its result. A job that fails still returns a result; look
        at ``status`` / ``ok``. `SessionBusyError` if another job is running."""
        read = None if timeout_s is None else timeout_s + SYNC_MARGIN_S
        data = self._client.request(
            "POST",
            "/v1/prompts",
            json=self._body(text, "sync", timeout_s, idempotency_key),
            timeout=self._client.read_timeout(read),
        )
        return JobResult.from_job(data)

    def stream(
        self, text: str, *, timeout_s: int | None = None, idempotency_key: str | None = None
    ) -> Iterator[Event]:
        """Run a prompt and yield its events as they happen, ending with ``job_finished``
        (`JobResult.from_event` reads it). A dropped connection is resumed without loss."""
        body = self._body(text, "stream", timeout_s, idempotency_key)
        return follow(
            self._client, start=lambda: self._client.open_stream("POST", "/v1/prompts", json=body)
        )

    def submit(
        self, text: str, *, timeout_s: int | None = None, idempotency_key: str | None = None
    ) -> Job:
        """Start a prompt and return at once with its `Job`."""
        data = self._client.request(
            "POST", "/v1/prompts", json=self._body(text, "async", timeout_s, idempotency_key)
        )
        return Job(self._client, data)

    def end(self, *, learn: bool = True) -> VWSession:
        """End the session: auto-learning first if the worker has it on (``learn=False`` skips
        it), then the transcript is saved, both repositories are committed and pushed, and the
        workspace is torn down. Returns the ``ended`` session."""
        answer = self._client.request(
            "DELETE",
            f"/v1/sessions/{self.id}",
            params=None if learn else {"learn": "false"},
            timeout=self._client.read_timeout(PROVISION_TIMEOUT_S),
        )
        # The API answers the ended session; an empty 204 still means it ended.
        self.data = answer if isinstance(answer, dict) else {**self.data, "status": "ended"}
        return self

    def __enter__(self) -> VWSession:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self.status in SESSION_FINISHED:
            return
        try:
            self.end()
        except ConflictError as error:
            if error.code != "session_ended":
                raise
        except VWMError as error:
            if exc is None:
                raise
            # The body's own exception matters more; keep the failed end as a note on it.
            exc.add_note(f"ending session {self.id} failed too: {error}")

    def __repr__(self) -> str:
        return f"VWSession({self.id!r}, status={self.status!r})"

    def _body(
        self, text: str, mode: str, timeout_s: int | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"session_id": self.id, "prompt": text, "mode": mode}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return body
