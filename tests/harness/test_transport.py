"""The transport: line framing with a size cap, JSON decoding rules, process-group cleanup."""

import asyncio
import os
import sys

import pytest

from harness.transport import (
    CliNotFound,
    CliProcess,
    CorruptJson,
    LineFramer,
    LineTooLong,
    decode_line,
)


def test_framer_splits_across_chunks_and_keeps_content():
    framer = LineFramer(100)
    assert framer.feed(b'{"a": 1}\n{"b"') == [b'{"a": 1}']
    assert framer.feed(b': " x "}\n') == [b'{"b": " x "}']
    assert framer.flush() == []


def test_framer_refuses_a_complete_line_over_the_cap():
    with pytest.raises(LineTooLong):
        LineFramer(10).feed(b"x" * 11 + b"\n")


def test_framer_refuses_a_line_still_arriving_over_the_cap():
    framer = LineFramer(10)
    framer.feed(b"x" * 8)
    with pytest.raises(LineTooLong):
        framer.feed(b"x" * 8)


def test_decode_skips_non_json_and_rejects_corrupt_json():
    assert decode_line(b"Reading additional input from stdin...") is None
    assert decode_line(b'  {"type": "x"}  ') == {"type": "x"}
    with pytest.raises(CorruptJson) as info:
        decode_line(b'{"type": ')
    assert info.value.details["line"] == '{"type":'


async def test_objects_exit_code_and_stderr_tail(tmp_path):
    script = (
        "import sys\n"
        "print('banner')\n"
        "print('{\"n\": 1}')\n"
        "sys.stderr.write('e' * 5000)\n"
        "print('{\"n\": 2}')\n"
        "sys.exit(3)\n"
    )
    proc = CliProcess(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        cwd=tmp_path,
        max_line_bytes=1000,
        stderr_tail_bytes=100,
    )
    await proc.start()
    objects = [obj async for obj in proc.objects()]
    assert objects == [{"n": 1}, {"n": 2}]
    assert await proc.wait() == 3
    assert proc.stderr.text() == "e" * 100
    await proc.close()


async def test_close_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    # The child ignores SIGTERM and outlives its parent unless the group is killed.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('{\"ready\": true}', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = CliProcess(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        cwd=tmp_path,
        max_line_bytes=1000,
        stderr_tail_bytes=100,
        kill_grace_s=0.5,
    )
    await proc.start()
    async for obj in proc.objects():
        assert obj == {"ready": True}
        break
    await proc.close()
    child = int(pid_file.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        await asyncio.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_missing_binary_is_a_clear_error(tmp_path):
    proc = CliProcess(
        ["/nonexistent/claude"], env={}, cwd=tmp_path, max_line_bytes=10, stderr_tail_bytes=10
    )
    with pytest.raises(CliNotFound, match="not found"):
        await proc.start()
