"""The file outbox (`eventing.outbox.FileOutbox`): events leave in the order they were appended,
survive reopening (a crash at any point: what was marked sent since the last checkpoint comes
again, nothing is lost), a torn last line is cut, a fully sent outbox compacts once its segment
is long enough, concurrent appends keep the order of the calls, pending events beyond what it
keeps in memory are read back from the file, and files it did not write are refused."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventing import outbox as outbox_module
from eventing.events import JobStarted, VwmEvent, harness_source, job_event_id, new_event
from eventing.outbox import CURSOR_FILE, DEAD_LETTER_FILE, FileOutbox, OutboxError

SESSION = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
JOB = "f0e1d2c3b4a5968778695a4b3c2d1e0f"


def job_event(seq: int, job: str = JOB) -> VwmEvent:
    return new_event(
        JobStarted(prompt=f"prompt {seq}", cli="claude", started_at=datetime.now(UTC)),
        source=harness_source(SESSION),
        session_id=SESSION,
        job_id=job,
        seq=seq,
        event_id=job_event_id(job, seq),
    )


def segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("events.*.jsonl"))


async def drain(outbox: FileOutbox) -> list[str]:
    """Mark everything sent, oldest first; the ids in the order they left."""
    ids = []
    while entries := await outbox.peek(3):
        for entry in entries:
            ids.append(entry.event.id)
            await outbox.mark_sent(entry)
    return ids


async def test_events_leave_in_append_order_and_the_cursor_survives_reopening(tmp_path):
    outbox = await FileOutbox.open(tmp_path)
    events = [job_event(seq) for seq in range(1, 6)]
    for event in events:
        await outbox.append(event)
    assert await outbox.pending() == 5
    first, second = await outbox.peek(2)
    assert (first.event, second.event) == (events[0], events[1])  # the whole event round-trips
    await outbox.mark_sent(first)
    await outbox.close()

    reopened = await FileOutbox.open(tmp_path)
    assert await reopened.pending() == 4
    [read_back] = await reopened.peek(1)
    assert read_back.event == events[1]  # from the file this time, not from memory
    assert await drain(reopened) == [event.id for event in events[1:]]
    assert await reopened.pending() == 0
    await reopened.close()
    assert await (await FileOutbox.open(tmp_path)).peek(10) == []


async def test_a_crash_repeats_what_was_sent_since_the_checkpoint_and_loses_nothing(tmp_path):
    outbox = await FileOutbox.open(tmp_path, checkpoint_s=3600)
    events = [job_event(seq) for seq in range(1, 6)]
    for event in events:
        await outbox.append(event)
    for entry in await outbox.peek(2):
        await outbox.mark_sent(entry)
    # No close: as if the process died. No checkpoint was due, so both come again.
    assert await drain(await FileOutbox.open(tmp_path)) == [event.id for event in events]

    eager = await FileOutbox.open(tmp_path, checkpoint_s=0)  # a cursor write after each event
    for entry in await eager.peek(2):
        await eager.mark_sent(entry)
    assert await drain(await FileOutbox.open(tmp_path)) == [event.id for event in events[2:]]


async def test_pending_events_beyond_the_memory_bound_are_read_from_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "MEMORY_BYTES", 2_000)  # room for a few events only
    outbox = await FileOutbox.open(tmp_path)
    events = [job_event(seq) for seq in range(1, 41)]
    for event in events:
        await outbox.append(event)
    assert await drain(outbox) == [event.id for event in events]
    await outbox.append(job_event(41))  # all sent: memory holds the pending ones again
    [entry] = await outbox.peek(5)
    assert entry.event.id == job_event_id(JOB, 41)


async def test_only_the_oldest_pending_entry_can_leave(tmp_path):
    outbox = await FileOutbox.open(tmp_path)
    for seq in (1, 2):
        await outbox.append(job_event(seq))
    first, second = await outbox.peek(2)
    with pytest.raises(ValueError, match="not the oldest pending"):
        await outbox.mark_sent(second)  # skipping the first would lose it
    await outbox.mark_sent(first)
    with pytest.raises(ValueError, match="not the oldest pending"):
        await outbox.dead_letter(first, status=400, answer="")  # already gone
    assert [entry.event.id for entry in await outbox.peek(5)] == [job_event_id(JOB, 2)]
    assert await outbox.pending() == 1
    assert await outbox.dead_letters() == []


async def test_a_torn_last_line_is_cut_and_appends_go_on(tmp_path):
    outbox = await FileOutbox.open(tmp_path)
    for seq in (1, 2, 3):
        await outbox.append(job_event(seq))
    [segment] = segments(tmp_path)
    whole = (tmp_path / segment).read_bytes()
    with (tmp_path / segment).open("ab") as file:  # a crash half way through a fourth append
        file.write(whole.splitlines(keepends=True)[0][:57])

    reopened = await FileOutbox.open(tmp_path)
    assert await reopened.pending() == 3
    assert (tmp_path / segment).read_bytes() == whole
    await reopened.append(job_event(4))
    assert await drain(reopened) == [job_event_id(JOB, seq) for seq in (1, 2, 3, 4)]


async def test_a_fully_sent_outbox_starts_a_new_segment_and_deletes_the_old(tmp_path):
    outbox = await FileOutbox.open(tmp_path, compact_bytes=1_000)
    await outbox.append(job_event(1))
    await drain(outbox)
    await outbox.append(job_event(2))  # all sent, but the segment is still short: kept
    await drain(outbox)
    assert segments(tmp_path) == ["events.0.jsonl"]
    for seq in range(3, 8):  # past 1,000 bytes, but not all sent yet: no compaction
        await outbox.append(job_event(seq))
    assert segments(tmp_path) == ["events.0.jsonl"]
    await drain(outbox)
    await outbox.append(job_event(8))
    assert segments(tmp_path) == ["events.1.jsonl"]
    assert json.loads((tmp_path / CURSOR_FILE).read_text()) == {"segment": 1, "offset": 0}
    assert [entry.event.id for entry in await outbox.peek(10)] == [job_event_id(JOB, 8)]
    reopened = await FileOutbox.open(tmp_path)
    assert await drain(reopened) == [job_event_id(JOB, 8)]


async def test_a_crash_during_compaction_or_a_cursor_write_repeats_and_loses_nothing(tmp_path):
    outbox = await FileOutbox.open(tmp_path, compact_bytes=0)
    await outbox.append(job_event(1))
    await drain(outbox)
    await outbox.append(job_event(2))  # compacts: segment 0 → 1
    # As if the crash came after the cursor moved but before segment 0 was deleted, and during
    # a later cursor write (its temporary file left behind, pointing somewhere wrong).
    (tmp_path / "events.0.jsonl").write_bytes((tmp_path / "events.1.jsonl").read_bytes())
    (tmp_path / f"{CURSOR_FILE}.tmp").write_text('{"segment": 0, "offset": 999')

    reopened = await FileOutbox.open(tmp_path)
    assert segments(tmp_path) == ["events.1.jsonl"]
    assert not (tmp_path / f"{CURSOR_FILE}.tmp").exists()
    assert await drain(reopened) == [job_event_id(JOB, 2)]


async def test_concurrent_appends_keep_the_order_of_the_calls(tmp_path):
    outbox = await FileOutbox.open(tmp_path)
    events = [job_event(seq, job=f"job{seq % 4}") for seq in range(1, 121)]
    # Started in order and left to run together: each waits its turn for the file.
    await asyncio.gather(*(outbox.append(event) for event in events))
    assert await drain(outbox) == [event.id for event in events]

    async def producer(job: str) -> None:
        for seq in range(1, 31):
            await outbox.append(job_event(seq, job=job))

    await asyncio.gather(*(producer(f"p{n}") for n in range(4)))
    await outbox.close()
    left = await drain(await FileOutbox.open(tmp_path))
    assert len(left) == 120
    for n in range(4):  # each producer's events in its own order, none torn or lost
        mine = [event_id for event_id in left if event_id.startswith(f"p{n}.")]
        assert mine == [job_event_id(f"p{n}", seq) for seq in range(1, 31)]


async def test_dead_letters_are_kept_with_the_answer_and_leave_the_queue(tmp_path):
    outbox = await FileOutbox.open(tmp_path)
    await outbox.append(job_event(1))
    await outbox.append(job_event(2))
    [first, _] = await outbox.peek(2)
    await outbox.dead_letter(first, status=400, answer='{"code": "invalid_payload"}')
    assert [entry.event.id for entry in await outbox.peek(10)] == [job_event_id(JOB, 2)]
    [letter] = await (await FileOutbox.open(tmp_path)).dead_letters()
    assert (letter.event, letter.status, letter.answer) == (
        first.event,
        400,
        '{"code": "invalid_payload"}',
    )
    assert (tmp_path / DEAD_LETTER_FILE).read_text().count("\n") == 1


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("events.0.jsonl", b'{"specversion": "1.0", "id": "x"}\n'),
        ("events.0.jsonl", b"not json at all\n"),
        (CURSOR_FILE, b'{"segment": "0", "offset": 0}'),
        (CURSOR_FILE, b'{"segment": 0, "offset": 99999}'),
    ],
)
async def test_files_it_did_not_write_are_refused_with_what_to_do(tmp_path, name, content):
    outbox = await FileOutbox.open(tmp_path)
    await outbox.append(job_event(1))
    path = tmp_path / name
    path.write_bytes(content if name == CURSOR_FILE else path.read_bytes() + content)
    with pytest.raises(OutboxError) as caught:
        await FileOutbox.open(tmp_path)
    assert caught.value.code == "outbox_corrupt"
    assert "move the directory aside" in caught.value.message
