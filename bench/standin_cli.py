"""A stand-in for a coding-agent CLI, for benchmarks: it replays a run the real CLI recorded
(tests/fixtures/transcripts) at a chosen pace, so that what a benchmark measures is VWM's own
cost, not a model's or a CLI's.

The harness runs it exactly as it runs the real CLI: the binary the adapter is given
(`VWM_CLI_BIN` / `VWM_<CLI>_BIN`), with the adapter's own argv. `make_launchers` writes one small
executable per CLI that starts this script with the case and pace baked in, because the harness
passes the CLI only the environment its adapter sets.

- ``--version`` answers the recorded CLI version (the pinned one), as the harness checks it.
- The recorded session id is replaced everywhere by a new one, or by the id the argv resumes
  (``--resume ID``, ``exec resume ID``, ``--session ID``), so resuming works as with the CLI.
- The first line is printed at once; the others are spread evenly over ``--pace`` seconds.
- No model call is made: the session's meter sees none, so the job's metered usage is zero and
  its CLI-reported usage is the recording's.

    python bench/standin_cli.py --cli claude [--case tool] [--pace 1.0] -- <the CLI's argv>
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
import sys
import time
import uuid
from pathlib import Path

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "transcripts"
CLIS = ("claude", "codex", "gemini", "opencode")
CASES = ("text", "tool")
# How each CLI is told which session to resume.
CPU_LOG = ".standin-cpu.log"
RESUME_FLAGS = {"claude": "--resume", "gemini": "--resume", "opencode": "--session"}


def manifest() -> dict:
    return json.loads((TRANSCRIPTS / "manifest.json").read_text())


def recorded_session_id(cli: str) -> str:
    """The session id of the recordings: the one the recorded resume run resumed."""
    argv = manifest()["runs"][f"{cli}/resume"]["argv"]
    if cli == "codex":
        return argv[argv.index("resume") + 1]
    return argv[argv.index(RESUME_FLAGS[cli]) + 1]


def resumed_id(cli: str, argv: list[str]) -> str | None:
    """The session id `argv` resumes, if it resumes one."""
    if cli == "codex":
        if len(argv) > 2 and argv[0] == "exec" and argv[1] == "resume":
            return argv[2]
        return None
    flag = RESUME_FLAGS[cli]
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def new_session_id(cli: str) -> str:
    if cli == "opencode":
        return "ses_" + uuid.uuid4().hex[:26]
    return str(uuid.uuid4())


def replayed_lines(cli: str, case: str, session_id: str) -> list[str]:
    recorded = (TRANSCRIPTS / cli / f"{case}.jsonl").read_text().splitlines()
    old = recorded_session_id(cli)
    return [line.replace(old, session_id) for line in recorded if line.strip()]


def replay(cli: str, case: str, pace_s: float, argv: list[str], cpu_log: Path | None = None) -> int:
    if "--version" in argv:
        print(manifest()["clis"][cli]["version"])
        return 0
    lines = replayed_lines(cli, case, resumed_id(cli, argv) or new_session_id(cli))
    gap = pace_s / max(1, len(lines) - 1)
    out = sys.stdout
    for number, line in enumerate(lines):
        if number:
            time.sleep(gap)
        out.write(line + "\n")
        out.flush()
    if cpu_log is not None:  # what this run cost, for the benchmark's CPU split
        times = os.times()
        with cpu_log.open("a") as log:
            log.write(f"{times.user + times.system}\n")
    return 0


def cpu_seconds(folder: Path) -> float:
    """The CPU the stand-in's runs logged (`--log-cpu`) in homes under `folder` so far."""
    return sum(float(n) for log in folder.rglob(CPU_LOG) for n in log.read_text().split())


def standin_env(folder: Path, *, case: str = "tool", pace_s: float = 1.0) -> dict[str, str]:
    """`VWM_<CLI>_BIN` for each CLI, pointing at its stand-in (`make_launchers`), for `vwm up`."""
    launchers = make_launchers(folder, case=case, pace_s=pace_s)
    return {f"VWM_{cli.upper()}_BIN": str(path) for cli, path in launchers.items()}


def make_launchers(folder: Path, *, case: str = "tool", pace_s: float = 1.0) -> dict[str, Path]:
    """One executable per CLI in `folder`, each running this script with `case` and `pace_s`;
    point `VWM_<CLI>_BIN` at them. Each run adds its CPU seconds to `CPU_LOG` in its home (the
    CLI's state folder in the session's workspace: the one place a sandboxed CLI may write
    outside its repository)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for cli in CLIS:
        launcher = folder / cli
        command = [sys.executable, str(Path(__file__).resolve()), "--cli", cli]
        command += ["--case", case, "--pace", str(pace_s), "--log-cpu", "--"]
        launcher.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        made[cli] = launcher
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", choices=CLIS, required=True)
    parser.add_argument("--case", choices=CASES, default="tool")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds over which to replay")
    parser.add_argument(
        "--log-cpu", action="store_true", help=f"add this run's CPU seconds to ~/{CPU_LOG}"
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the CLI's own argv")
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    cpu_log = Path.home() / CPU_LOG if args.log_cpu else None
    return replay(args.cli, args.case, max(0.0, args.pace), rest, cpu_log)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
