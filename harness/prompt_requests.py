"""Prompt requests delivered as CloudEvents: `POST /v1/events` with a `dev.vwm.prompt.requested`.

The session's subscription (a Knative Trigger in production, the embedded broker's
`session-prompts` route in `vwm up`) delivers each prompt request for this session here. The job
runs inside the delivery: the answer comes when the job has ended, so a platform that scales
on requests in flight sees this harness busy for as long as the agent works.

- **Once per event.** The job's id is derived from the event's `source` + `id`
  (`eventing.events.prompt_job_id`). A redelivery while the job waits or runs joins it; one
  after it ended gets its end at once (the job's meta file is on the volume, so this holds
  across restarts too).
- **One at a time.** A request for a busy session waits for its turn, first come first
  served, up to `VWM_PROMPT_WAIT_S`; then its job is recorded as failed with `session_busy`
  (`JobRunner.refuse`) instead of being lost. One whose `not_after` has passed is recorded as
  failed with `job_expired`: its sender stopped waiting.
- **Who may ask.** A delivery with this harness's bearer token (the embedded broker's), or a
  request the control plane signed for this session (the `vwmauth` extension,
  `eventing.signatures`): a Knative Trigger carries no credentials, so its deliveries are
  trusted for their signature. Without either: 401 ``unauthorized``; with a signature that
  does not verify: 401 ``invalid_signature``. A replayed signed request is the same request:
  it joins or returns its job.
- **Its answer.** To the bearer: the job's state as JSON, with no CloudEvent headers (not a
  reply event). To a signed delivery: 202 with no body, since Knative would read a 200's body
  as a reply event. The job's events (with `causationid` set to the request's id) leave
  through the outbox like every other job's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from eventing import signatures, tracing
from eventing.budgets import JobBudget
from eventing.codec import from_http
from eventing.events import PROMPT_REQUESTED, EventError, PromptRequested, VwmEvent, prompt_job_id
from harness.cli_install import CliInstallFailed
from harness.errors import BadRequest, JobExpired, Unauthorized
from harness.jobs import Job, JobRequest, JobRunner

logger = logging.getLogger(__name__)

SESSION_BUSY = "session_busy"
UNAUTHENTICATED = (
    "send the session token as 'Authorization: Bearer <token>', or a prompt request the control "
    "plane signed for this session (the vwmauth extension; docs/harness.md, Prompt requests): "
    "post the request to the broker, not to the harness"
)


class PromptTurns:
    """Runs the prompt requests of one session, in arrival order, one job at a time."""

    def __init__(
        self,
        runner: JobRunner,
        session_id: str,
        token: str,
        wait_s: float,
        *,
        charges: JobBudget | None = None,
    ) -> None:
        self._runner = runner
        self._charges = charges
        self._session_id = session_id
        self._token = token
        self._wait_s = wait_s
        self._turn = asyncio.Lock()  # fair: waiters get it in the order they asked
        self._waiting: dict[str, asyncio.Task[Job]] = {}

    def decode(self, headers: Mapping[str, str], body: bytes) -> VwmEvent:
        """The prompt request in an HTTP request; `EventError` (a 4xx: never retried) for
        anything else, including a request for another session."""
        return self._ours(from_http(dict(headers), body))

    def decode_signed(self, headers: Mapping[str, str], body: bytes) -> VwmEvent:
        """The prompt request of a delivery without the bearer token: it must be signed for
        this session. `Unauthorized` when it is not a signed event at all (what it is
        otherwise is not said to a caller who proved nothing); `EventError`
        ``invalid_signature`` when its signature does not verify."""
        try:
            event = from_http(dict(headers), body)
        except EventError:
            raise Unauthorized(UNAUTHENTICATED) from None
        if event.vwmauth is None:
            raise Unauthorized(UNAUTHENTICATED)
        try:
            signatures.check(self._token, event)
        except EventError:
            logger.warning(  # never the value
                "a prompt request with a signature that does not verify: refused",
                extra={"event_id": event.id, "event_source": event.source},
            )
            raise
        return self._ours(event)

    def _ours(self, event: VwmEvent) -> VwmEvent:
        if event.type != PROMPT_REQUESTED:
            raise EventError(
                "unsupported_event_type",
                f"a harness takes only {PROMPT_REQUESTED} events, not {event.type}",
                type=event.type,
            )
        if event.sessionid != self._session_id:
            raise EventError(
                "wrong_session",
                f"this harness runs session {self._session_id}, not {event.sessionid}: the "
                "event was routed to the wrong harness",
                status=422,
                sessionid=event.sessionid,
            )
        return event

    async def run(self, event: VwmEvent) -> Job:
        """Run the event's job, or join it: returns once it has ended."""
        request = job_request(event, self._charges)
        job_id = str(request.job_id)
        if (known := self._runner.find(job_id)) is not None:
            return await self._runner.wait(known)
        waiting = self._waiting.get(job_id)
        if waiting is None:
            # The job (its task is made inside the turn's) continues the sender's trace.
            with tracing.continuing(event):
                waiting = asyncio.create_task(self._take_turn(request), name=f"turn-{job_id}")
            self._waiting[job_id] = waiting
            waiting.add_done_callback(lambda _: self._waiting.pop(job_id, None))
        # Shielded: a delivery that gives up (its connection dropped) leaves the job to run;
        # the redelivery joins it.
        job = await asyncio.shield(waiting)
        return await self._runner.wait(job)

    async def _take_turn(self, request: JobRequest) -> Job:
        try:
            async with asyncio.timeout(self._wait_s):
                async with self._turn:
                    while (running := self._runner.current) is not None:
                        await self._runner.wait(running)  # a job started over HTTP, or by a turn
                    await self._runner.ready_cli()
                    job, _ = self._runner.start(request)
                    return job
        except TimeoutError:
            logger.warning(
                "a prompt request waited too long for its turn: its job fails",
                extra={"job_id": request.job_id, "wait_s": self._wait_s},
            )
            return self._runner.refuse(
                request,
                {
                    "code": SESSION_BUSY,
                    "message": f"the session was busy with other jobs for {self._wait_s:g} s "
                    "(VWM_PROMPT_WAIT_S), so this prompt never ran; send it again later",
                },
            )
        except (JobExpired, CliInstallFailed) as refused:
            return self._runner.refuse(request, {"code": refused.code, "message": refused.message})


def job_request(event: VwmEvent, charges: JobBudget | None = None) -> JobRequest:
    """The job a prompt request asks for, named after the event; its calls are charged to
    `charges` (the session's, from the harness's settings), since it never passed the control
    plane's dispatch, which gives other jobs theirs."""
    data = event.data
    if not isinstance(data, PromptRequested):
        raise BadRequest(f"{event.type} is not a prompt request")
    return JobRequest(
        prompt=data.prompt,
        job_id=prompt_job_id(event.source, event.id),
        model=data.model,
        timeout_s=data.timeout_s,
        new_session=data.new_session,
        not_after=data.not_after.timestamp() if data.not_after else None,
        causation_id=event.id,
        budget=charges,
    )
