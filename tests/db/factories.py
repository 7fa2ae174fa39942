"""Rows the tests need, built through the repositories with sensible defaults."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from functions.db.models import Job, Runtime, Worker, WorkerSession
from functions.db.repositories import Runtimes, Sessions, Workers
from functions.db.transitions import start_job, transition_session


def runtime(db: Session, name: str = "claude-default", **fields: Any) -> Runtime:
    fields = {"cli": "claude", "cli_version": "2.0.0", **fields}
    return Runtimes(db).add(name=name, **fields)


def worker(db: Session, name: str = "reviewer", **fields: Any) -> Worker:
    if "runtime_id" not in fields:
        fields["runtime_id"] = runtime(db, name=f"rt-{name}").id
    fields = {"repo_url": "https://git.example/repo.git", **fields}
    return Workers(db).add(name=name, **fields)


def session(db: Session, owner: Worker | None = None, *, ready: bool = True) -> WorkerSession:
    owner = owner or worker(db, f"worker-{uuid.uuid4().hex[:8]}")
    row = Sessions(db).add(owner.id, workspace="/tmp/ws")
    return transition_session(db, row, "ready") if ready else row


def job(db: Session, on: WorkerSession, prompt: str = "hello", **fields: Any) -> Job:
    return start_job(db, on.id, prompt=prompt, mode=fields.pop("mode", "sync"), **fields).job
