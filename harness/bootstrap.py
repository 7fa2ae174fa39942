"""Bootstrap: turn an empty session volume into a workspace the CLI can work in.

Called by the HTTP layer (``POST /v1/bootstrap``) before the first prompt, and again on every
start of the harness for the same session. It clones the worker's knowledge base into
``worker_repo/`` and the task into ``session_repo/``, installs the CLI at the runtime's pinned
version into ``.vwm/cli/`` when the image has another one (`harness.cli_install`), and writes the
CLI's instruction file at the workspace root, which also lists the notes earlier sessions of the
worker left under ``worker_repo/knowledge/`` (`harness.learning` commits them). It is
idempotent: repositories already cloned from the same URL are left exactly as they are (the
agent's uncommitted work lives there), a CLI already installed is not installed again, and the
instruction file is rewritten only when its content changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from eventing.harness_api import BootstrapReport as BootstrapAnswer
from eventing.lazy_models import LazyModel
from harness import gitops
from harness.cli_install import PinnedCli
from harness.errors import Conflict
from harness.workspace import Workspace, write_atomic

logger = logging.getLogger(__name__)

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_INSTRUCTIONS = 512_000
KNOWLEDGE_DIR = "knowledge"  # in worker_repo: what earlier sessions learned
KNOWLEDGE_LISTED = 100  # files named in the instruction file; the rest are counted


class RepoSpec(LazyModel):
    """A repository to clone: an https, ssh or git URL (a local path or file:// URL only where
    local repositories are allowed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(min_length=1, max_length=4096)
    branch: str = Field(default="main", min_length=1, max_length=255)

    @field_validator("url", "branch")
    @classmethod
    def _no_option_or_control_chars(cls, value: str) -> str:
        # A leading "-" would reach git as an option; control characters have no place in either.
        if value.startswith("-") or _CONTROL_CHARS.search(value):
            raise ValueError("must not start with '-' or contain control characters")
        return value


class BootstrapRequest(LazyModel):
    model_config = ConfigDict(extra="forbid")

    worker_repo: RepoSpec | None = None
    session_repo: RepoSpec | None = None
    system_instructions: str = Field(default="", max_length=_MAX_INSTRUCTIONS)
    worker_instructions: str = Field(default="", max_length=_MAX_INSTRUCTIONS)
    # The model the worker's jobs run with (a job may name another); None: the harness's own
    # (VWM_MODEL). Here rather than only at launch, so a change reaches a running session.
    model: str | None = Field(default=None, min_length=1, max_length=200)


@dataclass(frozen=True)
class BootstrapReport:
    """What this bootstrap changed and what it found already in place, by workspace entry."""

    changed: list[str]
    unchanged: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        answer = BootstrapAnswer(changed=self.changed, unchanged=self.unchanged, notes=self.notes)
        return answer.model_dump(mode="json")


async def bootstrap(
    ws: Workspace,
    request: BootstrapRequest,
    instruction_file_name: str,
    *,
    allow_local: bool = False,
    cli: PinnedCli | None = None,
) -> BootstrapReport:
    """Bring the workspace in line with `request`; `instruction_file_name` is the CLI's own
    (CLAUDE.md, AGENTS.md, GEMINI.md). `allow_local`: local paths and file:// URLs may be
    cloned. `cli`: the CLI at its pinned version, installed if needed. Raises RepoUrlNotAllowed
    for a URL of another transport, Conflict if a repository folder holds a clone of another URL,
    GitError if a clone fails, CliInstallFailed if the pinned CLI cannot be installed."""
    if Path(instruction_file_name).name != instruction_file_name or instruction_file_name in (
        "",
        ".",
        "..",
    ):
        raise ValueError(f"{instruction_file_name!r} is not a plain file name")
    ws.ensure_dirs()
    changed: list[str] = []
    unchanged: list[str] = []
    notes: list[str] = []

    for spec in (request.worker_repo, request.session_repo):
        if spec is not None:  # both checked before anything is cloned
            gitops.check_url(spec.url, allow_local=allow_local)
    repos = [
        (label, dest, spec)
        for label, dest, spec in (
            ("worker_repo", ws.worker_repo, request.worker_repo),
            ("session_repo", ws.session_repo, request.session_repo),
        )
        if spec is not None or label == "session_repo"  # a worker may have no knowledge base
    ]
    # Both at once: each clone waits on git processes most of its time, and a session waits
    # for both. Each one runs to its end even when the other fails (a finished clone is what a
    # bootstrap again would keep), and the first failure in this order is the one raised.
    outcomes = await asyncio.gather(
        *(_ensure_repo(label, dest, spec, allow_local) for label, dest, spec in repos),
        return_exceptions=True,
    )
    for (label, _, _), outcome in zip(repos, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        did_clone, note = outcome
        (changed if did_clone else unchanged).append(label)
        if note:
            notes.append(note)

    # After the repositories: a wrong repository fails in a second, before a long install.
    if cli is not None:
        resolved, installed = await cli.ensure()
        if installed:
            changed.append(cli.entry)
            notes.append(
                f"{cli.kind} {cli.version} installed into {cli.entry}: the image has another "
                "version"
            )
        elif resolved.source == "volume":
            unchanged.append(cli.entry)

    content = render_instructions(
        request.system_instructions,
        request.worker_instructions,
        has_worker_repo=request.worker_repo is not None or ws.worker_repo.is_dir(),
        knowledge=knowledge_files(ws),
    )
    if _write_if_changed(ws.root / instruction_file_name, content):
        changed.append(instruction_file_name)
        logger.info("instructions written", extra={"file": instruction_file_name})
    else:
        unchanged.append(instruction_file_name)

    _record(ws, request, instruction_file_name, content)
    logger.info("bootstrapped", extra={"changed": changed, "unchanged": unchanged})
    return BootstrapReport(changed=changed, unchanged=unchanged, notes=notes)


def render_instructions(
    system: str, worker: str, *, has_worker_repo: bool, knowledge: Sequence[str] = ()
) -> str:
    """The instruction file: system instructions, then the worker's, then the workspace layout,
    then the `knowledge` files (paths relative to the workspace, sorted) when there are any."""
    sections = ["<!-- Written by the VWM harness at bootstrap. Edits here are overwritten. -->"]
    if system.strip():
        sections.append(f"# System instructions\n\n{system.strip()}")
    if worker.strip():
        sections.append(f"# Worker instructions\n\n{worker.strip()}")
    layout = [
        "# Workspace",
        "",
        "The folder holding this file is your workspace:",
        "",
        "- `session_repo/` is the task of this session and your working directory. "
        "Your changes there are committed and pushed when the session ends.",
    ]
    if has_worker_repo:
        layout.append(
            "- `worker_repo/` holds your knowledge base as this worker, kept across sessions. "
            "Read it before you start; record what future sessions should know in "
            f"`worker_repo/{KNOWLEDGE_DIR}/`. It is committed and pushed when the session ends."
        )
    sections.append("\n".join(layout))
    if knowledge:
        sections.append(_knowledge_section(knowledge))
    return "\n\n".join(sections) + "\n"


def knowledge_files(ws: Workspace) -> list[str]:
    """The files under ``worker_repo/knowledge/``, relative to the workspace and sorted; hidden
    ones, links and names that are not printable left out (the list goes into instructions)."""
    folder = ws.worker_repo / KNOWLEDGE_DIR
    if folder.is_symlink() or not folder.is_dir():
        return []
    found = []
    for directory, subfolders, names in os.walk(folder):  # never follows a link
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            path = Path(directory) / name
            relative = path.relative_to(ws.root).as_posix()
            # Not printable: a control character, or bytes that are not UTF-8.
            if name.startswith(".") or not relative.isprintable() or not _is_file(path):
                continue
            found.append(relative)
    return sorted(found)


def _is_file(path: Path) -> bool:
    return not path.is_symlink() and path.is_file()


def _knowledge_section(files: Sequence[str]) -> str:
    lines = [
        "# What earlier sessions learned",
        "",
        f"`worker_repo/{KNOWLEDGE_DIR}/` holds what earlier sessions of this worker learned. "
        "Before you start on the task, read the notes there that bear on it:",
        "",
        *(f"- `{path}`" for path in files[:KNOWLEDGE_LISTED]),
    ]
    if len(files) > KNOWLEDGE_LISTED:
        lines.append(f"- and {len(files) - KNOWLEDGE_LISTED} more")
    return "\n".join(lines)


async def _ensure_repo(
    label: str, dest: Path, spec: RepoSpec | None, allow_local: bool
) -> tuple[bool, str | None]:
    """A clone of `spec`, or without one an empty repository; whether it was made now, and a
    note for the report."""
    if spec is None:
        return await _ensure_empty_repo(dest), None
    return await _ensure_clone(label, dest, spec, allow_local)


async def _ensure_clone(
    label: str, dest: Path, spec: RepoSpec, allow_local: bool
) -> tuple[bool, str | None]:
    """Clone unless `dest` already is a clone of the same URL; never touches an existing clone."""
    url = gitops.mask_credentials(spec.url)
    if await gitops.is_clone_of(dest, spec.url):
        branch = await gitops.current_branch(dest)
        if branch != spec.branch:
            logger.warning(
                "existing clone is on another branch; left as it is",
                extra={"repo": label, "branch": branch, "requested_branch": spec.branch},
            )
        logger.info("already cloned", extra={"repo": label, "url": url})
        return False, None
    if _holds_anything(dest):
        origin = await gitops.remote_url(dest) if (dest / ".git").exists() else None
        found = (
            f"a clone of {gitops.mask_credentials(origin)}"
            if origin
            else "files that are not a clone of it"
        )
        raise Conflict(
            f"{label}/ should be a clone of {url} but holds {found}; a workspace keeps its "
            "repositories for its whole life: start a new session to work on another repository",
            repo=label,
            url=url,
            found=gitops.mask_credentials(origin) if origin else None,
        )
    result = await gitops.clone(spec.url, spec.branch, dest, allow_local=allow_local)
    logger.info(
        "cloned",
        extra={
            "repo": label,
            "url": url,
            "branch": spec.branch,
            "branch_created": result.created_branch,
            "head": result.head,
        },
    )
    note = None
    if result.created_branch:
        note = (
            f"{label}: branch {spec.branch!r} does not exist on {url}; it was created locally "
            "and is pushed at shutdown"
        )
    return True, note


async def _ensure_empty_repo(dest: Path) -> bool:
    if (dest / ".git").exists():
        return False
    await gitops.init(dest, "main")
    logger.info("initialised empty repository", extra={"repo": "session_repo"})
    return True


def _holds_anything(path: Path) -> bool:
    if not path.exists() and not path.is_symlink():
        return False
    return not path.is_dir() or path.is_symlink() or any(path.iterdir())


def _write_if_changed(path: Path, content: str) -> bool:
    data = content.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return True


def _record(ws: Workspace, request: BootstrapRequest, file_name: str, content: str) -> None:
    """Remember what the workspace was bootstrapped from, and the model its jobs run with;
    credentials and the instruction text itself stay out (a hash says whether they changed)."""
    record = {
        "worker_repo": _repo_record(request.worker_repo),
        "session_repo": _repo_record(request.session_repo),
        "instruction_file": file_name,
        "instructions_sha256": hashlib.sha256(content.encode()).hexdigest(),
        "model": request.model,
    }
    state = ws.load_state()
    if state.get("bootstrap") != record:
        state["bootstrap"] = record
        ws.save_state(state)


def _repo_record(spec: RepoSpec | None) -> dict[str, str] | None:
    if spec is None:
        return None
    return {"url": gitops.mask_credentials(spec.url), "branch": spec.branch}
