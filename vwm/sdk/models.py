"""Plain data the SDK hands back: stream events, finished-job results, subscriptions, skills and
learning records.

`Event` is one entry of a job's event log as the control plane relays it (see docs/harness.md,
"Events"). `JobResult` is what a finished job came to, read from a job document or from the
``job_finished`` event that ends a stream. `Subscription` is a sink subscribed to VWM's
CloudEvents (docs/events.md, "Subscribing"). `Skill`, `SkillVersions` and `WorkerSkill` are the
admin API's skill documents; `Learning` is what one auto-learning run recorded
(docs/learning.md). Each keeps the document it was read from as ``raw``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventing.agent_events import Usage
from eventing.job_events import JobEventKind
from vwm.errors import ProtocolError

T = TypeVar("T")

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


@dataclass(frozen=True)
class Skill:
    """One uploaded version of a skill package. ``manifest`` is its SKILL.md front matter (with
    ``format`` and ``files``); ``sha256`` the package's checksum."""

    name: str
    version: str
    description: str
    sha256: str
    size: int
    format: str
    manifest: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        """``name@version``, as workers pin it."""
        return f"{self.name}@{self.version}"

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Skill:
        return _read("skill", doc, lambda: cls(**_skill_fields(doc), raw=doc))


@dataclass(frozen=True)
class UploadedSkill(Skill):
    """The answer to an upload. ``created`` is False when this very package was uploaded
    before (the stored version is answered and nothing changed)."""

    created: bool = True

    @classmethod
    def from_upload(cls, doc: Mapping[str, Any], *, created: bool) -> UploadedSkill:
        return _read("skill", doc, lambda: cls(**_skill_fields(doc), raw=doc, created=created))


@dataclass(frozen=True)
class SkillVersions:
    """Every version of one skill, highest first; ``latest`` is the highest."""

    name: str
    latest: str
    versions: list[Skill]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> SkillVersions:
        return _read(
            "skill versions",
            doc,
            lambda: cls(
                name=str(doc["name"]),
                latest=str(doc["latest"]),
                versions=[Skill.from_document(item) for item in doc["versions"]],
                raw=doc,
            ),
        )


@dataclass(frozen=True)
class WorkerSkill:
    """A skill a worker uses. ``pinned`` is the version it is pinned to (None: it follows the
    highest uploaded); ``version`` is the one its sessions get now (None if none is uploaded)."""

    name: str
    pinned: str | None
    version: str | None
    sha256: str | None = None
    description: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def follows_latest(self) -> bool:
        return self.pinned is None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> WorkerSkill:
        return _read(
            "worker skill",
            doc,
            lambda: cls(
                name=str(doc["name"]),
                pinned=doc.get("pinned"),
                version=doc.get("version"),
                sha256=doc.get("sha256"),
                description=doc.get("description"),
                raw=doc,
            ),
        )


LEARNING_STATUSES = ("recorded", "nothing", "failed")


@dataclass(frozen=True)
class Learning:
    """What one auto-learning run at the end of a session came to: ``status`` is ``recorded``
    (``commit`` pushed to ``branch``, ``files_changed``), ``nothing`` (nothing worth keeping) or
    ``failed`` (``error`` says why); ``mode`` is ``direct`` or ``review``; ``prompt_version`` the
    ``learning_prompt`` setting's version (0: the default prompt)."""

    id: str
    session_id: str
    job_id: str | None
    worker: str | None
    status: str
    mode: str
    summary: str = ""
    files_changed: list[str] = field(default_factory=list)
    commit: str | None = None
    branch: str | None = None
    error: dict[str, Any] | None = None
    prompt_version: int = 0
    tokens: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    created_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Learning:
        def build() -> Learning:
            tokens = doc.get("tokens")
            return cls(
                id=str(doc["id"]),
                session_id=str(doc["session_id"]),
                job_id=doc.get("job_id"),
                worker=doc.get("worker"),
                status=str(doc["status"]),
                mode=str(doc["mode"]),
                summary=str(doc.get("summary") or ""),
                files_changed=[str(path) for path in doc.get("files_changed") or []],
                commit=doc.get("commit"),
                branch=doc.get("branch"),
                error=doc.get("error"),
                prompt_version=int(doc.get("prompt_version") or 0),
                tokens=Usage.model_validate(tokens) if isinstance(tokens, Mapping) else Usage(),
                cost_usd=doc.get("cost_usd"),
                created_at=doc.get("created_at"),
                raw=doc,
            )

        return _read("learning", doc, build)


def _skill_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": str(doc["name"]),
        "version": str(doc["version"]),
        "description": str(doc.get("description") or ""),
        "sha256": str(doc["sha256"]),
        "size": int(doc["size"]),
        "format": str(doc.get("format") or ""),
        "manifest": dict(doc.get("manifest") or {}),
        "created_at": doc.get("created_at"),
    }


def _read(what: str, doc: Mapping[str, Any], build: Callable[[], T]) -> T:
    """`build()`, with a missing or malformed field reported as the answer not being the API."""
    if not isinstance(doc, Mapping):
        raise ProtocolError(f"expected a {what} document, got {str(doc)[:200]}")
    try:
        return build()
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(
            f"the {what} document is not the documented one ({type(exc).__name__}: {exc})",
            details={what.replace(" ", "_"): dict(doc)},
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
