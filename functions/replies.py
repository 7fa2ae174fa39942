"""Replies: a prompt request that names a `reply_to` URL gets its job's end POSTed there.

The job's `dev.vwm.job.completed` or `dev.vwm.job.failed` (the same event subscribers get,
with the request's id as `causationid`) is sent in binary mode to the URL stored on the job
row (`vwm.jobs.reply_to`), with the broker's retries (`REPLIES_SPEC`); a URL the sink policy
refuses (`functions.sink_policy`: http(s), no credentials, local hosts only where local
repositories are allowed) is never called. In `vwm up` the embedded broker routes the job
ends here (the built-in `replies` subscription); in production a Trigger on the same filter
does.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session

from eventing.events import VwmEvent
from eventing.tls import verified_context
from functions.broker.delivery import Outcome
from functions.broker.subscriptions import HttpSink, SinkResult
from functions.context import db, settings
from functions.db.models import Job
from functions.repo_policy import RepoPolicyError, allow_local_repos
from functions.sink_policy import check_sink_url

logger = logging.getLogger(__name__)

REPLIES = "replies"
REPLIES_SPEC: dict[str, Any] = {
    "filters": [
        {
            "any": [
                {"exact": {"type": "dev.vwm.job.completed"}},
                {"exact": {"type": "dev.vwm.job.failed"}},
            ]
        }
    ],
    "delivery": {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S"},
}
REPLY_TIMEOUT = timedelta(seconds=30)


class ReplySink:
    """Sends a job's end to its request's `reply_to`, if it named one."""

    async def deliver(self, event: VwmEvent) -> SinkResult:
        if not event.causationid or not event.jobid:
            return SinkResult(Outcome.ACCEPTED, 200)  # not a prompt request's job
        reply_to, allow_local = await db(_reply_to, event.jobid)
        if reply_to is None:
            return SinkResult(Outcome.ACCEPTED, 200)
        try:
            check_sink_url(reply_to, allow_local=allow_local, what="reply_to")
        except RepoPolicyError as refused:
            logger.warning(
                "a job's reply_to is refused by the sink policy: no reply sent",
                extra={"job_id": event.jobid, "code": refused.code},
            )
            return SinkResult(Outcome.FAILED, 422, refused.message)
        async with httpx.AsyncClient(trust_env=False, verify=verified_context()) as client:
            return await HttpSink(reply_to, client, timeout=REPLY_TIMEOUT).deliver(event)


def _reply_to(session: Session, job_id: str) -> tuple[str | None, bool]:
    row = session.get(Job, job_id)
    allow_local = allow_local_repos(session, settings().allow_local_repos)
    return (row.reply_to if row is not None else None), allow_local
