"""The answers of the harness's HTTP API (v1), as models both sides share (see docs/harness.md).

The harness builds its answers with them; the control plane (`functions.harness_client`) parses
what it receives into them, so a body that does not fit is refused once, at the edge, with a
stable code, instead of surfacing later as a missing key. A job's events are `JobEvent`s
(`eventing.job_events`), the stream's frames and the log's lines alike.

Every answer model ignores fields it does not know (a newer harness may add some without
breaking an older control plane) and is strict on the types of those it knows: a number sent as
a string is refused, not coerced. Error answers are `eventing.errors.ErrorBody`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from eventing.agent_events import RunSummary
from eventing.job_events import JobEvent, JobStatus
from eventing.lazy_models import LazyModel

__all__ = [
    "BootstrapReport",
    "EventsHealth",
    "FileListing",
    "FileWritten",
    "HarnessAnswer",
    "HarnessHealth",
    "InstalledSkill",
    "JobEvent",
    "JobState",
    "LearningCommitOutcome",
    "ListedFile",
    "PoolClaim",
    "RepoSaveOutcome",
    "ShutdownOutcome",
    "SkillInstallOutcome",
    "SkillListing",
]


class HarnessAnswer(LazyModel):
    """Base of every answer: unknown fields ignored, known ones strictly typed."""

    model_config = ConfigDict(extra="ignore", strict=True)


class JobState(HarnessAnswer):
    """A job as the harness holds it: the answer of ``POST /v1/jobs`` (async and sync modes),
    ``GET /v1/jobs/{id}`` and ``POST /v1/jobs/{id}/cancel``."""

    job_id: str
    status: JobStatus  # never ``queued``: the harness's jobs start ``running``
    created_at: float
    finished_at: float | None = None
    exit_code: int | None = None
    summary: RunSummary | None = None
    # The inside of an error body (``{code, message[, details]}``), as the job recorded it.
    error: dict[str, Any] | None = None
    last_seq: int = Field(ge=0, description="seq of the job's last logged event (0: none yet)")


class BootstrapReport(HarnessAnswer):
    """``POST /v1/bootstrap``: what it changed and what it found in place, by workspace entry."""

    changed: list[str]
    unchanged: list[str]
    notes: list[str] = Field(default_factory=list)


PushMode = Literal["direct", "rebased", "fallback_branch", "none"]


class RepoSaveOutcome(HarnessAnswer):
    """What the end of the session did to one repository (`harness.saving.SaveOutcome`)."""

    committed: str | None = None  # the commit made at session end; None: the tree was clean
    pushed: bool = False
    push: PushMode = "none"
    branch: str | None = None  # the remote branch the work is on
    head: str | None = None  # the commit pushed (after a rebase: the rebased one)
    dropped_config: list[str] = Field(default_factory=list)
    error: dict[str, Any] | None = None  # ``{code, message[, details]}`` when saving it failed


class ShutdownOutcome(HarnessAnswer):
    """``POST /v1/shutdown``: the transcript, each repository's save, and how many job events
    had not left for the event sink yet (0: all did, or no sink). A shutdown whose save failed
    answers an error whose details have this same shape (`from_details`)."""

    transcript: str | None = None  # path of transcript.jsonl in the workspace; None: no job ran
    transcript_error: dict[str, Any] | None = None
    repos: dict[str, RepoSaveOutcome] = Field(default_factory=dict)  # session_repo, worker_repo
    events_pending: int = Field(ge=0)

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> ShutdownOutcome | None:
        """The outcome a failed shutdown's error details carry; None when they carry none (an
        error of another kind, or a harness that could not say)."""
        if not isinstance(details.get("repos"), dict):
            return None
        try:
            # Without an event sink the harness adds no count to the details: nothing pending.
            return cls.model_validate({"events_pending": 0, **details})
        except ValueError:  # pydantic's ValidationError is one
            return None

    def result(self) -> dict[str, Any]:
        """What a session's row keeps of its end: the transcript, and per repository the
        commit, how it was pushed and where the work is."""
        return {
            "transcript": self.transcript,
            "repos": {name: repo.model_dump(mode="json") for name, repo in self.repos.items()},
        }


class LearningCommitOutcome(HarnessAnswer):
    """``POST /v1/learning/commit``: what the harness did with the notes a learning job left in
    ``worker_repo/``. `status` ``recorded``: `commit` holds them; ``nothing``: the repository
    had no change, nothing was committed. `branch` is the remote branch the commit was pushed to
    (the worker repository's own branch, or ``learning/<session id>`` in review mode or when it
    conflicted). A failed push is no HTTP error: the commit is ``recorded``, `pushed` is false
    and `error` says why (``{code, message[, details]}``)."""

    status: Literal["recorded", "nothing"]
    commit: str | None = None
    branch: str | None = None
    pushed: bool = False
    push: PushMode = "none"
    files_changed: list[str] = Field(default_factory=list)  # relative to worker_repo, sorted
    error: dict[str, Any] | None = None


class EventsHealth(HarnessAnswer):
    """The harness's event publishing (`harness.publishing`): its sink (credentials masked;
    None when publishing is off), events not yet sent, events given up on, whether the relay
    runs."""

    sink: str | None
    pending: int = Field(ge=0)
    dead_letters: int = Field(ge=0)
    relay_running: bool


class HarnessHealth(HarnessAnswer):
    """``GET /healthz``: liveness and what this harness runs."""

    status: str
    cli: str
    bootstrapped: bool
    running_job_id: str | None = None
    sandbox: str  # what confines the CLI: "bwrap", or "none" (the pod, in production)
    events: EventsHealth


class ListedFile(HarnessAnswer):
    name: str
    path: str  # relative to the workspace
    type: str  # "file", "dir", "symlink" or "other"
    size: int = Field(ge=0)
    mtime: float


class FileListing(HarnessAnswer):
    """``GET /v1/files``: a folder's entries, sorted by name."""

    entries: list[ListedFile]


class FileWritten(HarnessAnswer):
    """``PUT /v1/files/content``: the file written."""

    path: str
    size: int = Field(ge=0)
    created: bool


SHA256_HEX = r"^[0-9a-f]{64}$"


class InstalledSkill(HarnessAnswer):
    """A skill installed for the session's CLI: its name, its manifest's version, and the
    SHA-256 of the archive it came from (lowercase hex)."""

    name: str
    version: str
    sha256: str = Field(pattern=SHA256_HEX)


class SkillInstallOutcome(InstalledSkill):
    """``PUT /v1/skills/{name}``: the skill now installed; `installed` is false when the same
    archive was installed already (nothing changed)."""

    installed: bool


class SkillListing(HarnessAnswer):
    """``GET /v1/skills``: the installed skills, sorted by name."""

    items: list[InstalledSkill]


# -- a warm Knative Service before its session (harness.pool_member) -----------------------------

# The variable that makes `python -m harness` a pool member (with no VWM_SESSION_ID), holding the
# token its claim must bear; and the claim's path.
POOL_TOKEN_ENV = "VWM_POOL_TOKEN"  # noqa: S105 (the variable's name, not a secret)
CLAIM_PATH = "/v1/claim"


class PoolClaim(LazyModel):
    """``POST /v1/claim``'s body: the session's whole harness environment. A request, so strict
    both ways: an unknown field is refused."""

    model_config = ConfigDict(extra="forbid")

    env: dict[str, str]
