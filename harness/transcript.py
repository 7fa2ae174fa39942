"""Session end: the transcript of every job, then commit and push of both repositories.

Called by the HTTP layer's shutdown route (the control plane ends a session) after the running
job, if any, has stopped. The transcript goes into the session repository
(``.vwm/sessions/<session id>/``, a folder per session so that two sessions on one branch never
conflict over it) and is pushed with the work it describes. Saving each repository is
`harness.saving`'s job. Both repositories are always attempted, so one failing push never keeps
the other's work from leaving the volume; failures are reported together afterwards.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import GitError, HarnessError, PushRejected
from harness.files import write_file
from harness.saving import SavePlan, save_repository
from harness.settings import GitSettings
from harness.workspace import Workspace

logger = logging.getLogger(__name__)

TRANSCRIPT_DIR = ".vwm"
SHUTDOWN_MESSAGE = "VWM: session end"
_TOOL_INPUT_CHARS = 200


def transcript_dir(session_id: str) -> str:
    """Where in the session repository a session's transcript goes."""
    return f"{TRANSCRIPT_DIR}/sessions/{session_id}"


def write_transcript(ws: Workspace, session_repo: Path, session_id: str) -> Path | None:
    """Write ``transcript.jsonl`` (every event) and ``transcript.md`` (a readable summary) into
    `session_repo`'s `transcript_dir`; returns the JSON-lines path, or None if no job ever ran."""
    jobs = _load_jobs(ws.jobs_dir)
    if not jobs:
        return None
    folder = transcript_dir(session_id)
    lines = [json.dumps(event, ensure_ascii=False) for events in jobs for event in events]
    # Through the workspace file layer: the agent controls session_repo, and a symlink it left
    # at .vwm must not send the harness's writes elsewhere.
    jsonl = "\n".join(lines).encode() + b"\n"
    write_file(session_repo, f"{folder}/transcript.jsonl", jsonl, max_bytes=sys.maxsize)
    markdown = _render_markdown(jobs).encode()
    write_file(session_repo, f"{folder}/transcript.md", markdown, max_bytes=sys.maxsize)
    logger.info("transcript written", extra={"jobs": len(jobs), "events": len(lines)})
    return session_repo / folder / "transcript.jsonl"


async def shutdown_repos(
    ws: Workspace,
    *,
    git: GitSettings,
    session_id: str,
    message: str = SHUTDOWN_MESSAGE,
) -> dict[str, Any]:
    """Transcript, then commit and push of session_repo and worker_repo (those that exist; a repo
    without a remote is committed only). Returns ``{transcript, transcript_error, repos: {name:
    SaveOutcome}}``; a transcript that cannot be written does not stop the commits. Raises
    PushRejected (or GitError if no push failed) after trying both, with the same per-repo
    outcomes in its details. Nothing is lost locally either way."""
    transcript, transcript_error = None, None
    if _is_repo(ws.session_repo):
        try:
            transcript = write_transcript(ws, ws.session_repo, session_id)
        except HarnessError as exc:  # e.g. the agent left a symlink at .vwm: still save the work
            transcript_error = exc.to_dict()
            logger.warning("transcript not written", extra={"error": exc.message})
    cloned = ws.load_state().get("bootstrap") or {}
    repos: dict[str, dict[str, Any]] = {}
    for label, repo in (("session_repo", ws.session_repo), ("worker_repo", ws.worker_repo)):
        if _is_repo(repo):
            plan = SavePlan(
                label=label,
                repo=repo,
                cloned_from=(cloned.get(label) or {}).get("url"),
                fallback_branch=f"{git.fallback_prefix}{session_id}",
                allow_local=git.allow_local,
                message=message,
            )
            repos[label] = (await save_repository(plan)).to_dict()
    outcome = {
        "transcript": str(transcript) if transcript else None,
        "transcript_error": transcript_error,
        "repos": repos,
    }
    failed = {label: result["error"] for label, result in repos.items() if result["error"]}
    if failed:
        push_failed = any(error["code"] == PushRejected.code for error in failed.values())
        error_type = PushRejected if push_failed else GitError
        summary = "; ".join(f"{label}: {error['message']}" for label, error in failed.items())
        raise error_type(f"could not save the session's work: {summary}", **outcome)
    return outcome


def _is_repo(path: Path) -> bool:
    return (path / ".git").exists() or (path / ".git").is_symlink()


def _load_jobs(jobs_dir: Path) -> list[list[dict[str, Any]]]:
    """Every job's events in sequence order; jobs ordered by the time of their first event."""
    jobs: list[list[dict[str, Any]]] = []
    for log_path in sorted(jobs_dir.glob("*.jsonl")):
        events = []
        for number, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                # A crash can leave a half-written last line; the rest of the log still counts.
                where = {"file": log_path.name, "line": number}
                logger.warning("skipped a corrupt event line", extra=where)
        if events:
            events.sort(key=lambda event: event.get("seq", 0))
            jobs.append(events)
    jobs.sort(key=lambda events: (events[0].get("ts", 0), str(events[0].get("job_id", ""))))
    return jobs


def _render_markdown(jobs: list[list[dict[str, Any]]]) -> str:
    out = ["# Session transcript", ""]
    for events in jobs:
        first = events[0]
        started = datetime.fromtimestamp(first.get("ts", 0), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        status = next((_data(e).get("status") for e in events if _is(e, "job_finished")), None)
        out += [
            f"## Job `{first.get('job_id')}`: {started}" + (f" ({status})" if status else ""),
            "",
        ]
        prompt = next((_data(e).get("prompt") for e in events if _is(e, "job_started")), None)
        if prompt:
            out += ["**Prompt**", "", *_quoted(str(prompt)), ""]
        calls = [_data(e) for e in events if _is(e, "tool_call")]
        if calls:
            out += ["**Tool calls**", ""]
            out += [f"- `{call.get('name')}` {_short(call.get('input'))}" for call in calls]
            out.append("")
        result = next((_data(e) for e in events if _is(e, "result")), None)
        if result is not None:
            heading = "**Result (error)**" if result.get("is_error") else "**Result**"
            text = result.get("final_text") or result.get("error") or "(no text)"
            out += [heading, "", str(text).strip(), ""]
    return "\n".join(out)


def _is(event: dict[str, Any], kind: str) -> bool:
    return event.get("kind") == kind


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def _quoted(text: str) -> list[str]:
    return [f"> {line}".rstrip() for line in text.strip().splitlines()]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else ""
    text = " ".join(text.split())
    if len(text) > _TOOL_INPUT_CHARS:
        text = text[: _TOOL_INPUT_CHARS - 1] + "…"
    return text
