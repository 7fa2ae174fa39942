"""A finished job's metered model calls, from the ``calls`` of its ``job_finished`` to rows of
`vw_telemetry.model_calls`, and the usage facts its telemetry row keeps beside them.

Called by `functions.telemetry_writer.finish_job`, in the caller's transaction, once per job
(a job finishes once). What the harness sent is checked call by call: one that does not
validate as `eventing.model_calls.ModelCall`, or would not fit its row (a seq seen before, a
count past a column's range, a time that is no instant), is logged and skipped, never the job's
record. A ``job_finished`` without ``calls`` (a harness without a meter) stores none.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from eventing.agent_events import Usage
from eventing.model_calls import MAX_CALLS_PER_JOB, ModelCall, metered_total
from functions.db.models import ModelCallRecord, UsageSource

logger = logging.getLogger(__name__)

_MAX_INT = 2**31 - 1  # an Integer column (seq, status)
_MAX_BIGINT = 2**63 - 1  # a BigInteger column (tokens)
_API_CHARS = 32
_MODEL_CHARS = 200


@dataclass(frozen=True)
class UsageFacts:
    """Where a job's token counts come from, for its telemetry row."""

    usage_source: str
    cli_usage: dict[str, Any] | None
    usage_mismatch: bool


def checked_calls(job_id: str, raw: Any) -> list[ModelCall]:
    """The calls of `raw` (the ``calls`` a job's end carried) that can be stored, in order."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        _skip(job_id, None, f"`calls` is a {type(raw).__name__}, not a list")
        return []
    kept: list[ModelCall] = []
    seqs: set[int] = set()
    for index, item in enumerate(raw):
        if len(kept) == MAX_CALLS_PER_JOB:
            _skip(job_id, index, f"more than {MAX_CALLS_PER_JOB} calls: the rest are not stored")
            break
        try:
            call = ModelCall.model_validate(item)
        except ValidationError as error:
            problems = error.errors(include_url=False, include_input=False)[:3]
            _skip(job_id, index, f"not a model call: {problems}")
            continue
        reason = _unstorable(call) or ("a seq seen before" if call.seq in seqs else None)
        if reason:
            _skip(job_id, index, reason)
            continue
        seqs.add(call.seq)
        kept.append(call)
    return kept


def add_call_rows(
    session: Session, job_id: str, session_id: str, worker_id: str, calls: list[ModelCall]
) -> None:
    """One row per call (`checked_calls`' output), in the caller's transaction."""
    for call in calls:
        session.add(
            ModelCallRecord(
                job_id=job_id,
                session_id=session_id,
                worker_id=worker_id,
                seq=call.seq,
                api=call.api[:_API_CHARS],
                model=call.model[:_MODEL_CHARS] if call.model is not None else None,
                streamed=call.streamed,
                status=call.status,
                outcome=call.outcome,
                input_tokens=call.usage.input,
                cache_read_tokens=call.usage.cache_read,
                cache_write_tokens=call.usage.cache_write,
                output_tokens=call.usage.output,
                reasoning_tokens=call.usage.reasoning,
                complete=call.complete,
                started_at=datetime.fromtimestamp(call.started_at, UTC),
                latency_ms=call.latency_ms,
                ttft_ms=call.ttft_ms,
                error=call.error,  # bounded, and without NUL, by `ModelCall`
            )
        )


def usage_facts(job_id: str, summary: dict[str, Any], calls: list[ModelCall]) -> UsageFacts:
    """The summary's word on its usage (an older harness says nothing: the CLI's report). A
    metered usage that is not the sum of the stored calls is logged: calls were skipped."""
    source = summary.get("usage_source")
    metered = source == UsageSource.METERED
    cli_usage = summary.get("cli_usage")
    if cli_usage is not None:
        try:
            cli_usage = Usage.model_validate(cli_usage).model_dump(mode="json")
        except ValidationError:
            logger.warning("a job's cli_usage is not a usage: not kept", extra={"job_id": job_id})
            cli_usage = None
    if metered:
        try:
            reported = Usage.model_validate(summary.get("usage") or {})
        except ValidationError:
            reported = None
        if reported != metered_total(calls):
            logger.warning(
                "a job's metered usage is not the sum of its stored calls",
                extra={"job_id": job_id, "calls": len(calls)},
            )
    return UsageFacts(
        usage_source=UsageSource.METERED if metered else UsageSource.CLI,
        cli_usage=cli_usage,
        usage_mismatch=summary.get("usage_mismatch") is True,
    )


def _unstorable(call: ModelCall) -> str | None:
    """Why a valid call would not fit its row (PostgreSQL would refuse it, failing the job's
    whole record), or None."""
    usage = call.usage
    tokens = (usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning)
    if not 1 <= call.seq <= _MAX_INT:
        return f"seq {call.seq} is not from 1 to {_MAX_INT}"
    if call.status is not None and not 0 <= call.status <= _MAX_INT:
        return f"status {call.status} is no HTTP status"
    if not all(0 <= count <= _MAX_BIGINT for count in tokens):
        return "a token count is negative or too large"
    if not _duration(call.latency_ms) or (call.ttft_ms is not None and not _duration(call.ttft_ms)):
        return "latency_ms or ttft_ms is negative or not finite"
    try:
        datetime.fromtimestamp(call.started_at, UTC)
    except (ValueError, OverflowError, OSError):
        return f"started_at {call.started_at} is no instant"
    return None


def _duration(ms: float) -> bool:
    return math.isfinite(ms) and ms >= 0


def _skip(job_id: str, index: int | None, reason: str) -> None:
    logger.warning(
        "a model call of a job is not stored: %s",
        reason,
        extra={"job_id": job_id, "call_index": index},
    )
