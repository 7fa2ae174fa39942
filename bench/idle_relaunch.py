"""What scale to zero costs on the embedded default: sessions whose harness the reconciler
stopped for being idle (`VWM_HARNESS_IDLE_S`), prompted again. On `vwm up` with the stand-in
CLI (bench/standin_cli.py), for N sessions one after another it prints:

- a streamed prompt on a live harness (warm): first byte and whole stream, p50 / p99;
- the processes and RSS the N sessions hold once idle (none, when the idle stop works);
- the same prompt on the stopped harness (cold: the relaunch is on its path), p50 / p99, and the
  difference of the medians: what a relaunch adds to the first prompt after a pause.

    python bench/idle_relaunch.py [--sessions 10] [--cli claude] [--pace 0.2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.scale import (  # noqa: E402
    bench_plane,
    create_sessions,
    ms,
    pct,
    rss_bytes,
    setup,
    stream_prompt,
)
from fake_provider.testing import serve_in_thread  # noqa: E402
from tests.e2e.conftest import MODELS  # noqa: E402
from tests.support.control_plane import ControlPlane, harness_pids  # noqa: E402

IDLE_S = 5


def prompts(plane: ControlPlane, ids: list[str]) -> tuple[list[float], list[float]]:
    """One streamed prompt per session, one after another: first bytes and whole streams."""
    with plane.client() as client:
        base_url, headers = str(client.base_url), dict(client.headers)
    firsts, totals = [], []
    for session_id in ids:
        stream = stream_prompt(base_url, headers, session_id)
        if not stream.ok or stream.gap:
            raise SystemExit(f"the prompt on {session_id} failed\n{plane.log()[-3000:]}")
        firsts.append(stream.first_byte)
        totals.append(stream.total)
    return firsts, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--cli", default="claude", choices=sorted(MODELS))
    parser.add_argument("--case", default="tool", choices=["text", "tool"])
    parser.add_argument("--pace", type=float, default=0.2, help="seconds each stand-in run takes")
    args = parser.parse_args()
    settings = {"VWM_TICK_S": "1", "VWM_HARNESS_IDLE_S": str(IDLE_S)}
    with (
        serve_in_thread() as provider,
        tempfile.TemporaryDirectory() as tmp,
        bench_plane(Path(tmp), settings, case=args.case, pace_s=args.pace) as plane,
    ):
        with plane.client(timeout=600) as client:
            task_repo = setup(client, args.cli, provider.base_url, Path(tmp))
            ids, _ = create_sessions(client, task_repo, args.sessions)
        # Each session's second prompt is the warm one (its first also starts the CLI's
        # own session), sent right after it, long before the idle setting.
        warm = prompts(plane, [sid for session_id in ids for sid in (session_id, session_id)])
        warm_first, warm_total = warm[0][1::2], warm[1][1::2]
        live = harness_pids(plane.data_dir)
        live_rss = sum(rss_bytes(pid) for pid in live)
        print(
            f"{args.sessions} sessions, {args.cli} stand-in at {args.pace:g} s; warm: first "
            f"byte p50/p99 {ms(warm_first)}, whole stream {ms(warm_total)}; "
            f"the {len(live)} harnesses still up (the first ones may be idle already) hold "
            f"{live_rss / 2**20:.0f} MiB",
            flush=True,
        )
        waited = time.perf_counter()
        deadline = waited + IDLE_S + 60
        while harness_pids(plane.data_dir):
            if time.perf_counter() > deadline:
                raise SystemExit("harnesses still up a minute past the idle setting")
            time.sleep(0.2)
        idle = harness_pids(plane.data_dir)
        print(
            f"  idle (VWM_HARNESS_IDLE_S={IDLE_S}): all stopped "
            f"{time.perf_counter() - waited:.1f} s after the last prompt; "
            f"{len(idle)} processes, {sum(map(rss_bytes, idle)) / 2**20:.0f} MiB",
            flush=True,
        )
        cold_first, cold_total = prompts(plane, ids)
        added = pct(cold_first, 0.5) - pct(warm_first, 0.5)
        print(
            f"  after the idle stop: first byte p50/p99 {ms(cold_first)}, whole stream "
            f"{ms(cold_total)}; the relaunch adds {added * 1000:.0f} ms to the first byte "
            "(p50)",
            flush=True,
        )


if __name__ == "__main__":
    main()
