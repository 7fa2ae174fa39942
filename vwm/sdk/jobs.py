"""A job: one prompt run in a session. Created by `VWSession.submit` (or fetched with
`Client.get_job`); polled, waited for, followed as events, or cancelled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vwm.errors import WaitTimeoutError
from vwm.sdk.models import JOB_FINISHED, Event, JobResult, job_id
from vwm.sdk.sse import follow

if TYPE_CHECKING:
    from vwm.sdk.client import Client


class Job:
    """A job as last fetched; ``data`` is the control plane's job document."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        self.data = data
        self.id = job_id(data)

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def finished(self) -> bool:
        return self.status in JOB_FINISHED

    @property
    def session_id(self) -> str | None:
        return self.data.get("session_id")

    def refresh(self) -> Job:
        self.data = self._client.request("GET", f"/v1/jobs/{self.id}")
        return self

    def wait(self, *, poll_s: float = 1.0, timeout_s: float | None = None) -> JobResult:
        """Poll until the job finishes and return its result. `WaitTimeoutError` after
        ``timeout_s`` seconds; the job itself keeps running."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.refresh().finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(
                    f"job {self.id} is still {self.status} after {timeout_s} s",
                    details={"job_id": self.id, "status": self.status},
                )
            time.sleep(poll_s if remaining is None else min(poll_s, remaining))
        return self.result()

    def result(self) -> JobResult:
        """The result as of the last fetch (meaningful once `finished`)."""
        return JobResult.from_job(self.data)

    def events(self, after: int = 0) -> Iterator[Event]:
        """The job's events after sequence number ``after``, live until ``job_finished``;
        a dropped connection is resumed where it broke."""
        return follow(self._client, job_id=self.id, after=after)

    def calls(self) -> list[dict[str, Any]]:
        """The job's metered model calls, in order (`Client.calls`)."""
        return self._client.calls(self.id)

    def cancel(self) -> Job:
        """Ask the control plane to stop the job; it ends ``cancelled``."""
        self.data = self._client.request("POST", f"/v1/jobs/{self.id}/cancel")
        return self

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status!r})"
