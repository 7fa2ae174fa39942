"""`vwm up` logs for people on a terminal (readable lines, no library set-up chatter) and JSON
lines otherwise or when asked (`--log-format`, ``VWM_LOG_FORMAT``)."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventing.logs import JsonFormatter, TextFormatter, log_format
from tests.support.harness_process import REPO_ROOT, free_port

STARTED = "embedded broker started"
TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d info +embedded broker started  subscriptions=")


def _run_up(tmp_path: Path, *, terminal: bool, env: dict[str, str] | None = None) -> str:
    """What `vwm up` writes (stdout and stderr together) until its broker has started."""
    command = [sys.executable, "-m", "vwm", "up", "--port", str(free_port())]
    command += ["--data-dir", str(tmp_path / "data")]
    environ = {k: v for k, v in os.environ.items() if k != "VWM_LOG_FORMAT"} | (env or {})
    if terminal:
        controller, child = pty.openpty()
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=child,
            start_new_session=True,
        )
        os.close(child)
        reader = controller
    else:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        reader = proc.stdout.fileno()
    output = b""
    try:
        deadline = time.monotonic() + 60
        while STARTED.encode() not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([reader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(reader, 65536)
                except OSError:  # the pty's other end closed: the process is gone
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if terminal:
            os.close(controller)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    assert STARTED in text, text
    return text


def test_on_a_terminal_vwm_up_logs_readable_lines(tmp_path: Path) -> None:
    text = _run_up(tmp_path, terminal=True)

    lines = text.splitlines()
    assert not [line for line in lines if line.startswith("{")], text
    assert any(TEXT_LINE.match(line) for line in lines), text
    assert any(line.startswith("vwm: first admin API key (shown once): vwm_") for line in lines)
    for chatter in ("alembic", "Started server process", "Waiting for application startup"):
        assert chatter not in text


def test_off_a_terminal_or_when_asked_vwm_up_logs_json_lines(tmp_path: Path) -> None:
    piped = _run_up(tmp_path / "piped", terminal=False)
    asked = _run_up(tmp_path / "asked", terminal=True, env={"VWM_LOG_FORMAT": "json"})

    for text in (piped, asked):
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        started = [r for r in records if r["msg"] == STARTED]
        assert started and started[0]["level"] == "info", text
        assert started[0]["logger"] == "functions.broker.service"


def test_the_format_is_chosen_by_name_or_by_the_stream() -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert log_format("auto", Terminal()) == "text"  # type: ignore[arg-type]
    assert log_format("auto", open(os.devnull)) == "json"  # noqa: SIM115
    assert log_format("JSON", Terminal()) == "json"  # type: ignore[arg-type]
    assert log_format("text") == "text"
    with pytest.raises(ValueError, match="auto, json, text"):
        log_format("yaml")


def test_a_text_line_carries_the_extra_fields_and_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "it failed", None, sys.exc_info()
        )
    record.session_id = "s 1"
    record.paths = ["/a"]

    text = TextFormatter().format(record)

    assert re.match(r'^\d\d:\d\d:\d\d error +it failed  session_id="s 1" paths=\["/a"\]\n', text)
    assert "RuntimeError: boom" in text
    assert json.loads(JsonFormatter().format(record))["session_id"] == "s 1"
