"""Plain data the SDK hands back: stream events, finished-job results and subscriptions.

`Event` is one entry of a job's event log as the control plane relays it (see docs/harness.md,
"Events"). `JobResult` is what a finished job came to, read from a job document or from the
``job_finished`` event that ends a stream. `Subscription` is a sink subscribed to VWM's
CloudEvents (docs/events.md, "Subscribing").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventing.agent_events import Usage
from eventing.job_events import JobEventKind
from vwm.errors import ProtocolError

SESSION_STATUSES = ("provisioning", "ready", "ending", "ended", "failed")
SESSION_FINISHED = frozenset({"ended", "failed"})
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timeout")
JOB_FINISHED = frozenset({"succeeded", "failed", "cancelled", "timeout"})


@dataclass(frozen=True)
class Event:
    """One numbered job event. ``seq`` starts at 1 and is the SSE id used to resume."""

    seq: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    ts: float | None = None

    @property
    def is_final(self) -> bool:
        """True for ``job_finished``, the last event of every job."""
        return self.kind == JobEventKind.JOB_FINISHED


@dataclass(frozen=True)
class JobResult:
    """What a job came to. ``error`` is a message; ``raw`` is the document it was read from."""

    job_id: str | None
    status: str
    final_text: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    cost_source: str | None = None
    cli_session_id: str | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> JobResult:
        """Read a job document. The run's outcome may sit at the top level or under ``summary``
        (the harness's shape) or ``result``; the first one that has a field wins."""
        return cls._build(job_id(job), str(job.get("status", "")), job, job.get("error"))

    @classmethod
    def from_event(cls, event: Event) -> JobResult:
        """Read the ``job_finished`` event at the end of a stream."""
        if not event.is_final:
            raise ValueError(f"a job result comes from a job_finished event, not {event.kind!r}")
        data = event.data
        return cls._build(event.job_id, str(data.get("status", "")), data, data.get("error"))

    @classmethod
    def _build(cls, id_: str | None, status: str, doc: Mapping[str, Any], error: Any) -> JobResult:
        layers = [doc, *(doc[k] for k in ("summary", "result") if isinstance(doc.get(k), Mapping))]

        def pick(name: str) -> Any:
            return next((layer[name] for layer in layers if layer.get(name) is not None), None)

        usage = pick("usage")
        return cls(
            job_id=id_,
            status=status,
            final_text=pick("final_text") or "",
            usage=Usage.model_validate(usage) if isinstance(usage, Mapping) else Usage(),
            cost_usd=pick("cost_usd"),
            cost_source=pick("cost_source"),
            cli_session_id=pick("cli_session_id"),
            error=_error_message(error) or _error_message(pick("error")),
            raw=doc,
        )


@dataclass(frozen=True)
class Subscription:
    """A subscription as the control plane stored it: Knative Trigger ``filters`` (ANDed), the
    ``sink`` URL events are POSTed to, its ``delivery`` spec (None: the broker's default)."""

    name: str
    filters: list[dict[str, Any]]
    sink: str
    delivery: dict[str, Any] | None = None
    created_by: str | None = None
    created_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Subscription:
        try:
            return cls(
                name=str(doc["name"]),
                filters=list(doc.get("filters") or []),
                sink=str(doc["sink"]),
                delivery=doc.get("delivery"),
                created_by=doc.get("created_by"),
                created_at=doc.get("created_at"),
                raw=doc,
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(
                f"the subscription document lacks {exc}", details={"subscription": dict(doc)}
            ) from None


def job_id(job: Mapping[str, Any]) -> str:
    """The id of a job document (``id``, or ``job_id`` as the harness spells it)."""
    value = job.get("id") or job.get("job_id")
    if not value:
        raise ProtocolError("the job document has no id", details={"job": dict(job)})
    return str(value)


def _error_message(error: Any) -> str | None:
    if isinstance(error, Mapping):
        return str(error.get("message") or error.get("code") or error) or None
    return str(error) if error else None
