"""The harness publishes its job events: each job's log, as CloudEvents, through an outbox on the
volume, to the sink (the control plane's broker). docs/harness.md, "Publishing job events".

The job log stays the record. `JobEventPublisher` is the runner's `JobObserver`: told of each log
entry as it is appended, it hands the entry to one writer task (the runner never waits, and never
fails because of publishing) which turns the log into events, in log order:

- ``job_started`` → ``dev.vwm.job.started``, id ``<job>.<seq>``;
- the agent events in between → ``dev.vwm.job.output`` batches, id ``<job>.<first>-<last>``,
  flushed at `EventSettings.batch_max` events, `batch_s` seconds after a batch's first event,
  near the 1 MiB event limit, and always before the job's final event;
- ``job_finished`` → ``dev.vwm.job.completed`` or ``dev.vwm.job.failed``, id ``<job>.<seq>``,
  with the timings, summary and bounded raw output the control plane records.

Each event is appended to a `FileOutbox` at ``<workspace>/.vwm/outbox/`` (durable once appended)
and an `eventing.relay.Relay` drains it to the sink with the harness's session token. Once a
job's final event is in the outbox its meta file says ``published``; at start every finished job
whose meta does not is published again whole from its log (same ids for the start and the end),
so a process that dies between a log append and an outbox append loses nothing.

`EventPublishing` wires it into the app: `open` at lifespan start (after `JobRunner.recover`),
`health` for ``/healthz``, `settle` for the shutdown route, `close` at exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from eventing import codec
from eventing.agent_events import EventKind
from eventing.events import (
    JobCompleted,
    JobFailed,
    JobOutput,
    JobStarted,
    JobSummary,
    JobTimings,
    OutputEvent,
    VwmEvent,
    harness_source,
    job_event_id,
    new_event,
)
from eventing.events.payloads import MAX_BATCH_EVENTS
from eventing.inputs import InputError, load_json_object
from eventing.job_events import JobEvent, JobEventKind, JobStatus
from eventing.outbox import DEAD_LETTER_FILE, FileOutbox, OutboxError
from eventing.publisher import Publisher
from eventing.relay import Relay
from harness.jobs import Job, JobRunner
from harness.settings import EventSettings
from harness.workspace import Workspace

logger = logging.getLogger(__name__)

# `JobFinished.raw_output`'s own limit, in characters.
RAW_OUTPUT_CHARS = 262_144
# What an event may take on the wire and in the outbox (a line over `codec.MAX_EVENT_BYTES` is
# refused when the outbox reads it back), less room for the envelope and the newline.
EVENT_BUDGET_BYTES = codec.MAX_EVENT_BYTES - 16_384
# How telemetry counts (functions/telemetry_writer.py, `record_job`): the CLI has started at the
# first entry that is none of these; output begins at the first of `_OUTPUT_KINDS`.
_NOT_CLI_KINDS = frozenset(
    {JobEventKind.JOB_STARTED, JobEventKind.JOB_FINISHED, EventKind.MODEL_CALL, EventKind.STDERR}
)
_OUTPUT_KINDS = frozenset({EventKind.TEXT_DELTA, EventKind.ASSISTANT_TEXT, EventKind.TOOL_CALL})
_AGENT_KINDS = frozenset(kind.value for kind in EventKind)
# A failed job whose runner recorded no error still needs one (`JobFailed.error` is required).
NO_ERROR_RECORDED = "no_error_recorded"


# -- the job log as events (pure) ----------------------------------------------------------------


def started_event(
    session_id: str,
    entry: JobEvent,
    causation_id: str | None = None,
    trace: Mapping[str, str] | None = None,
) -> VwmEvent:
    """``dev.vwm.job.started`` for a log's ``job_started`` entry. `causation_id`: the id of the
    ``dev.vwm.prompt.requested`` the job runs, carried by each of its events (``causationid``);
    `trace`: the job span's trace context (`Job.trace_context`), which each of them carries too."""
    data = entry.data
    started_at = _utc(entry.ts)
    fields = {
        "prompt": data.get("prompt") or "(no prompt recorded)",
        "cli": data.get("cli") or "unknown",
        "model": data.get("model"),
        "resume_id": data.get("resume_id"),
        "started_at": started_at.isoformat(),
        "cli_version": data.get("cli_version"),
    }
    payload = _fit(JobStarted, fields, shrink=("prompt",))
    return _job_event(payload, session_id, entry.job_id, entry.seq, started_at, causation_id, trace)


def output_event(
    session_id: str,
    job_id: str,
    events: Sequence[OutputEvent],
    causation_id: str | None = None,
    trace: Mapping[str, str] | None = None,
) -> VwmEvent:
    """``dev.vwm.job.output`` for consecutive agent entries: id ``<job>.<first>-<last>`` (two
    batchings of the same seqs never share an id: the consumer skips an id it has seen)."""
    first, last = events[0].seq, events[-1].seq
    payload = JobOutput(first_seq=first, last_seq=last, events=list(events))
    return new_event(
        payload,
        source=harness_source(session_id),
        session_id=session_id,
        job_id=job_id,
        seq=last,
        causation_id=causation_id,
        event_id=f"{job_id}.{first}-{last}",
        time=_utc(events[-1].ts),
        trace=trace,
    )


def output_item(entry: JobEvent) -> OutputEvent | None:
    """The batch form of an agent entry; None for a kind that is not an agent event (only the
    lifecycle entries, which have their own events). An entry that cannot travel as it is (over
    the event limit, or not plain JSON) keeps its seq, kind and ts with its data replaced by a
    note saying why and where the whole entry is, so the consumer's log has no gap."""
    if entry.kind not in _AGENT_KINDS:
        return None
    data: dict[str, Any] = entry.data
    try:
        raw = json.dumps(data, allow_nan=False).encode()
        load_json_object(raw)  # what the outbox and the sink will check when they read it
        too_big = len(raw) > EVENT_BUDGET_BYTES
    except (ValueError, TypeError, InputError):
        raw, too_big = b"", False
        data = _omitted(entry, "not_plain_json", None)
    if too_big:
        data = _omitted(entry, "over_event_limit", len(raw))
    return OutputEvent(kind=EventKind(entry.kind), data=data, seq=entry.seq, ts=max(entry.ts, 0.0))


def finished_event(
    session_id: str,
    job: Job,
    entries: Sequence[JobEvent],
    raw_output: str,
) -> VwmEvent:
    """``dev.vwm.job.completed`` or ``.failed`` for the log's ``job_finished`` entry (the last of
    `entries`), with what the control plane records: summary, error, exit code, times, timings
    (`job_timings`) and the CLI's raw output (`bound_raw_output`)."""
    entry = entries[-1]
    data = entry.data
    status = JobStatus(data["status"])
    started = next((e for e in entries if e.kind == JobEventKind.JOB_STARTED), None)
    start_ts = started.ts if started else job.created_at
    timings = job_timings(entries, data.get("duration_ms"), entry.ts)
    fields: dict[str, Any] = {
        "summary": json_summary(data.get("summary")),
        "exit_code": data.get("exit_code") if type(data.get("exit_code")) is int else None,
        "started_at": _utc(start_ts).isoformat(),
        "finished_at": _utc(entry.ts).isoformat(),
        "timings": timings.model_dump(),
        "raw_output": bound_raw_output(raw_output),
    }
    if isinstance(data.get("calls"), list):  # metered: the calls travel with the job's end
        fields["calls"] = data["calls"]
    error = data.get("error")
    if status is JobStatus.SUCCEEDED:
        model: type[JobCompleted] | type[JobFailed] = JobCompleted
        fields["error"] = json_error(error) if error else None
    else:
        model = JobFailed
        fields["status"] = status.value
        fields["error"] = json_error(
            error
            or {
                "code": NO_ERROR_RECORDED,
                "message": f"the job ended {status.value} and the harness recorded no error; "
                "its log on the volume has what is known",
            }
        )
    payload = _fit(model, fields, shrink=("raw_output", "summary.final_text"))
    payload = _fit_calls(model, payload)
    return _job_event(
        payload,
        session_id,
        job.id,
        entry.seq,
        _utc(entry.ts),
        job.causation_id,
        job.trace_context,
    )


def job_timings(
    entries: Iterable[JobEvent], duration_ms: Any, finished_ts: float | None = None
) -> JobTimings:
    """`JobTimings` as the control plane's telemetry computes them from the same log."""
    entries = list(entries)
    start = next((e.ts for e in entries if e.kind == JobEventKind.JOB_STARTED), None)
    first_cli = next((e.ts for e in entries if e.kind not in _NOT_CLI_KINDS), None)
    first_output = next((e.ts for e in entries if e.kind in _OUTPUT_KINDS), None)
    if type(duration_ms) is int and duration_ms >= 0:
        total = duration_ms
    else:  # a job a restart finished has no duration of its own
        total = _ms(finished_ts, start) or 0
    return JobTimings(
        total_ms=total, cli_start_ms=_ms(first_cli, start), first_output_ms=_ms(first_output, start)
    )


def json_summary(summary: Any) -> dict[str, Any]:
    """The logged `RunSummary` as `JobSummary` accepts it: unknown fields dropped, a field the
    strict model refuses (a negative cost, say) reset to its default."""
    fields = {k: v for k, v in (summary or {}).items() if k in JobSummary.model_fields}
    return _strict_fields(JobSummary, fields)


def json_error(error: Any) -> dict[str, Any]:
    """The logged error as `ErrorInfo`: a non-empty code of at most 100 characters, a message
    of at most 8192, details an object."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    details = error.get("details")
    return {
        "code": (str(error.get("code") or "") or "error")[:100],
        "message": str(error.get("message") or "")[:8192],
        "details": details
        if isinstance(details, dict)
        else ({} if details is None else {"value": details}),
    }


def bound_raw_output(text: str, limit: int = RAW_OUTPUT_CHARS) -> str:
    """`text` cut to at most `limit` characters, keeping its start (the harness's own copy on the
    volume keeps the start too) and ending with a note of how many characters were cut."""
    if len(text) <= limit:
        return text
    keep = limit
    for _ in range(3):  # the note's length depends on the count it states
        note = f"\n[... {len(text) - keep} characters of output cut ...]\n"
        keep = limit - len(note)
    return text[:keep] + f"\n[... {len(text) - keep} characters of output cut ...]\n"


def read_raw_output(jobs_dir: Path, job_id: str) -> str:
    """The CLI's stdout as the harness kept it for the job ("" if none)."""
    try:
        return (jobs_dir / f"{job_id}.stdout").read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _job_event(
    payload: Any,
    session_id: str,
    job_id: str,
    seq: int,
    at: datetime,
    causation_id: str | None = None,
    trace: Mapping[str, str] | None = None,
) -> VwmEvent:
    return new_event(
        payload,
        source=harness_source(session_id),
        session_id=session_id,
        job_id=job_id,
        seq=seq,
        causation_id=causation_id,
        event_id=job_event_id(job_id, seq),
        time=at,
        trace=trace,
    )


def _omitted(entry: JobEvent, reason: str, size: int | None) -> dict[str, Any]:
    return {
        "vwm_omitted": {
            "reason": reason,
            "bytes": size,
            "log": f".vwm/jobs/{entry.job_id}.jsonl",
        }
    }


def _strict_fields(model: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with every top-level field `model` refuses (through JSON, as a receiver reads
    it) dropped, so the model's default stands in for it."""
    fields = dict(fields)
    for _ in range(len(model.model_fields) + 1):
        try:
            return model.model_validate_json(_dumps(fields)).model_dump(mode="json")
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            if not bad & fields.keys():
                raise
            for name in bad:
                fields.pop(name, None)
        except ValueError:  # not plain JSON (NaN): keep what is
            fields = {k: v for k, v in fields.items() if _is_plain(v)}
    return model.model_validate_json(_dumps(fields)).model_dump(mode="json")


def _fit(model: type[BaseModel], fields: dict[str, Any], *, shrink: tuple[str, ...]) -> Any:
    """The payload, with the `shrink` fields (dotted paths to strings) cut, in turn, until the
    event fits the size limit: a huge raw output or prompt must not make an event that the outbox
    could never read back."""
    payload = model.model_validate_json(_dumps(fields))
    for path in shrink:
        size = len(_dumps(payload.model_dump(mode="json")))
        if size <= EVENT_BUDGET_BYTES:
            return payload
        fields = _cut(fields, path.split("."), size - EVENT_BUDGET_BYTES)
        payload = model.model_validate_json(_dumps(fields))
    return payload


def _fit_calls(model: type[BaseModel], payload: Any) -> Any:
    """The payload with as many of its first calls as fit the event, when all of them do not
    (thousands of calls): the summary keeps the metered total, the log on the volume all calls."""
    calls = payload.calls
    if not calls or len(_dumps(payload.model_dump(mode="json"))) <= EVENT_BUDGET_BYTES:
        return payload
    fields = payload.model_dump(mode="json")
    kept = len(calls)
    while kept > 0 and len(_dumps({**fields, "calls": calls[:kept]})) > EVENT_BUDGET_BYTES:
        kept //= 2
    logger.warning(
        "a job's calls do not all fit its final event: the first ones are sent",
        extra={"calls": len(calls), "sent": kept},
    )
    return model.model_validate_json(_dumps({**fields, "calls": calls[:kept]}))


def _cut(fields: dict[str, Any], path: list[str], over: int) -> dict[str, Any]:
    """`fields` with the string at `path` shortened by at least `over` encoded bytes (escapes
    take up to 12 bytes a character), ending with a note of how much was cut."""
    fields = dict(fields)
    head, *rest = path
    if rest:
        fields[head] = _cut(dict(fields.get(head) or {}), rest, over)
        return fields
    text: str = fields.get(head) or ""
    keep = len(text)
    while keep > 0 and len(_dumps(text[:keep])) > len(_dumps(text)) - over - 200:
        keep //= 2
    fields[head] = text[:keep] + f"\n[... {len(text) - keep} characters cut to fit the event ...]\n"
    return fields


def _dumps(value: Any) -> str:
    # The CloudEvents SDK's encoding (ASCII escapes, default separators): sizes match the wire.
    return json.dumps(value, allow_nan=False)


def _is_plain(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError):
        return False
    return True


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(max(ts, 0.0), UTC)


def _ms(later: float | None, earlier: float | None) -> int | None:
    if later is None or earlier is None:
        return None
    return max(0, int((later - earlier) * 1000))


# -- the writer: log entries in, outbox appends out, in order -----------------------------------


@dataclass
class _Tracked:
    """Where one job's publishing stands: the log up to `done_seq` is in the outbox or in
    `batch`; `failed` once an append failed (the job is then left for the next start)."""

    job: Job
    done_seq: int = 0
    batch: list[OutputEvent] = field(default_factory=list)
    batch_bytes: int = 0
    deadline: float = 0.0
    final_appended: bool = False
    failed: bool = False


class JobEventPublisher:
    """The runner's `JobObserver`. `on_log` and `on_finished` only queue (never block, never
    raise); one task turns the queue into outbox appends, so events enter the outbox in log
    order. Start with `start()` in a running loop; `flush()` waits until everything queued is in
    the outbox; `stop()` flushes and ends the task."""

    def __init__(
        self,
        relay: Relay,
        runner: JobRunner,
        workspace: Workspace,
        session_id: str,
        *,
        batch_max: int = 100,
        batch_s: float = 0.1,
    ) -> None:
        if not 1 <= batch_max <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_max must be 1..{MAX_BATCH_EVENTS}, got {batch_max}")
        self._relay = relay
        self._runner = runner
        self._jobs_dir = workspace.jobs_dir
        self._session_id = session_id
        self._batch_max = batch_max
        self._batch_s = batch_s
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tracked: dict[str, _Tracked] = {}
        self._task: asyncio.Task[None] | None = None
        self.failed_appends = 0

    # -- JobObserver ------------------------------------------------------------------------

    def on_log(self, job: Job, entry: JobEvent) -> None:
        self._queue.put_nowait(("entry", job))

    def on_finished(self, job: Job) -> None:
        self._queue.put_nowait(("finished", job))

    # -- control ----------------------------------------------------------------------------

    def republish(self, job: Job) -> None:
        """Queue a finished job's whole log again (its meta does not say ``published``)."""
        self._queue.put_nowait(("republish", job))

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this publisher was already started")
        self._task = asyncio.create_task(self._run(), name="job-event-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def unwritten(self) -> int:
        """Not yet in the outbox: entries in open batches plus queued notices (0: nothing)."""
        return self._queue.qsize() + sum(len(t.batch) for t in self._tracked.values())

    async def flush(self) -> None:
        """Return once every entry queued before the call is in the outbox (open batches too)."""
        if not self.running:
            return
        done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(("flush", done))
        await asyncio.shield(done)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Put what is queued into the outbox and end the task, within `grace_s` seconds (a
        storage that hangs must not hold the process's exit): then it is cancelled, and what did
        not reach the outbox is published at the next start."""
        if self._task is None:
            return
        if self.running:
            self._queue.put_nowait(("flush", asyncio.get_running_loop().create_future()))
            self._queue.put_nowait(("stop", None))
        done, _ = await asyncio.wait({self._task}, timeout=grace_s)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            due = [t.deadline for t in self._tracked.values() if t.batch]
            try:
                if due:
                    async with asyncio.timeout(max(0.0, min(due) - time.monotonic())):
                        what, item = await self._queue.get()
                else:
                    what, item = await self._queue.get()
            except TimeoutError:
                await self._flush_due()
                continue
            try:
                if what == "stop":
                    return
                await self._handle(what, item)
            except Exception:  # the writer must outlive any one job's trouble
                logger.exception("publishing a job's events failed; it is published at next start")
            await self._flush_due()

    async def _handle(self, what: str, item: Any) -> None:
        if what == "flush":
            for tracked in list(self._tracked.values()):
                await self._flush_batch(tracked)
            if not item.done():
                item.set_result(None)
            return
        job: Job = item
        if what == "republish":
            self._tracked[job.id] = _Tracked(job)  # from the first entry, whatever went before
        tracked = self._tracked.setdefault(job.id, _Tracked(job))
        await self._advance(tracked)
        if what in ("finished", "republish") and job.status.finished:
            del self._tracked[job.id]
            if tracked.final_appended and not tracked.failed:
                self._runner.mark_published(job)
            elif tracked.failed:
                logger.error(
                    "some of a job's events did not reach the outbox: they are published again "
                    "from its log when the harness next starts",
                    extra={"job_id": job.id},
                )

    async def _advance(self, tracked: _Tracked) -> None:
        """Take the job's log entries after `done_seq` into batches and the outbox."""
        entries = tracked.job.log.events(tracked.done_seq)
        for entry in entries:
            if entry.kind == JobEventKind.JOB_STARTED:
                await self._flush_batch(tracked)
                await self._append(
                    tracked,
                    lambda e=entry: started_event(
                        self._session_id, e, tracked.job.causation_id, tracked.job.trace_context
                    ),
                )
            elif entry.kind == JobEventKind.JOB_FINISHED:
                await self._flush_batch(tracked)
                whole = tracked.job.log.events()[: entry.seq]  # seq n is index n - 1
                raw = await asyncio.to_thread(read_raw_output, self._jobs_dir, tracked.job.id)
                await self._append(
                    tracked,
                    lambda w=whole, r=raw: finished_event(self._session_id, tracked.job, w, r),
                )
                tracked.final_appended = not tracked.failed
            elif (item := output_item(entry)) is not None:
                await self._add(tracked, item)
            else:  # no event carries it: a gap in the consumer's log, so say so
                await self._flush_batch(tracked)
                logger.error(
                    "a job log entry of an unknown kind is not published",
                    extra={"job_id": entry.job_id, "seq": entry.seq, "kind": entry.kind[:100]},
                )
        if entries:
            tracked.done_seq = entries[-1].seq

    async def _add(self, tracked: _Tracked, item: OutputEvent) -> None:
        size = len(_dumps(item.model_dump(mode="json"))) + 2
        if tracked.batch and tracked.batch_bytes + size > EVENT_BUDGET_BYTES:
            await self._flush_batch(tracked)
        if not tracked.batch:
            tracked.deadline = time.monotonic() + self._batch_s
        tracked.batch.append(item)
        tracked.batch_bytes += size
        if len(tracked.batch) >= self._batch_max:
            await self._flush_batch(tracked)

    async def _flush_due(self) -> None:
        now = time.monotonic()
        for tracked in list(self._tracked.values()):
            if tracked.batch and tracked.deadline <= now:
                await self._flush_batch(tracked)

    async def _flush_batch(self, tracked: _Tracked) -> None:
        if not tracked.batch:
            return
        batch, tracked.batch, tracked.batch_bytes = tracked.batch, [], 0
        job = tracked.job
        await self._append(
            tracked,
            lambda: output_event(
                self._session_id, job.id, batch, job.causation_id, job.trace_context
            ),
        )

    async def _append(self, tracked: _Tracked, build: Any) -> None:
        """Build an event and append it to the outbox. Whatever fails is logged and the job's
        publishing goes on; the job is then left unpublished, for the next start to republish."""
        try:
            event: VwmEvent = build()
            await self._relay.publish(event)
        except Exception:
            tracked.failed = True
            self.failed_appends += 1
            logger.exception(
                "a job event could not be put in the outbox",
                extra={"job_id": tracked.job.id},
            )


# -- the app's view ------------------------------------------------------------------------------


class EventPublishing:
    """The outbox, the relay (with its HTTP client) and the writer of one harness process."""

    def __init__(
        self,
        settings: EventSettings,
        outbox: FileOutbox,
        relay: Relay,
        writer: JobEventPublisher,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.relay = relay
        self.writer = writer

    @classmethod
    async def open(
        cls,
        settings: EventSettings,
        workspace: Workspace,
        runner: JobRunner,
        *,
        session_id: str,
        session_token: str,
    ) -> EventPublishing:
        """Open the outbox, start the relay and the writer, queue every recent job that is not
        published, then attach the writer to the runner. Call after `runner.recover()`."""
        if settings.publisher is None:
            raise ValueError("publishing is off: no event sink is set")
        directory = workspace.state_dir / "outbox"
        republish_all = False
        try:
            outbox = await FileOutbox.open(directory)
        except OutboxError as exc:
            # Refusing to start would end the session; its events are all in the job logs.
            aside = directory.with_name(f"outbox.corrupt-{int(time.time())}")
            logger.error(
                "the event outbox is damaged: moved aside, a new one started, and every recent "
                "job is published again from its log",
                extra={"problem": exc.message, "moved_to": aside.name},
            )
            os.replace(directory, aside)
            outbox = await FileOutbox.open(directory)
            republish_all = True
        # httpx logs every request at INFO: one line per event, with the sink's URL. The relay
        # logs what matters (a sink that stays down, a refusal) itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # Its client is made at the first event, off the way to ready (`Publisher`).
        publisher = Publisher(
            settings.publisher, headers={"Authorization": f"Bearer {session_token}"}
        )
        relay = Relay(outbox, publisher)
        writer = JobEventPublisher(
            relay,
            runner,
            workspace,
            session_id,
            batch_max=settings.batch_max,
            batch_s=settings.batch_s,
        )
        relay.start()
        writer.start()
        since = time.time() - settings.republish_days * 86_400
        stale = runner.unpublished_jobs(since, include_published=republish_all)
        for job in stale:
            writer.republish(job)
        if stale:
            logger.info(
                "republishing jobs whose events may not have left", extra={"jobs": len(stale)}
            )
        runner.observer = writer
        return cls(settings, outbox, relay, writer)

    async def health(self) -> dict[str, Any]:
        return {
            "sink": _shown_url(self.relay.publisher.settings.sink),
            "pending": await self.outbox.pending(),
            "dead_letters": await asyncio.to_thread(
                _count_lines, self.outbox.directory / DEAD_LETTER_FILE
            ),
            "relay_running": self.relay.running,
        }

    async def pending(self) -> int:
        """Events not yet taken by the sink: those in the outbox, plus anything the writer has
        not put there yet (0 means every job event logged so far has left)."""
        return await self.outbox.pending() + self.writer.unwritten

    async def settle(self, timeout_s: float | None = None) -> int:
        """Put everything queued into the outbox, then wait (at most `timeout_s`, default the
        drain setting) for the relay to send it; returns `pending()` at the end."""
        timeout_s = self.settings.drain_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self.writer.flush()
        except TimeoutError:
            pass
        while await self.outbox.pending() and time.monotonic() < deadline:
            if not self.relay.running:
                break
            await asyncio.sleep(0.01)
        return await self.pending()

    async def close(self) -> None:
        """At exit, after the runner closed: a bounded drain, then stop everything."""
        pending = await self.settle()
        await self.writer.stop(grace_s=1.0)
        await self.relay.stop()
        await self.outbox.close()  # its cursor: the next start repeats nothing already sent
        await self.relay.publisher.aclose()
        if pending:
            logger.warning(
                "the harness stops with events still in its outbox: they are sent when it next "
                "starts on this volume",
                extra={"pending": pending},
            )


def _shown_url(url: str) -> str:
    """The sink URL without any user:password part (it is shown on /healthz, which needs no token)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0
