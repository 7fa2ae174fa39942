"""Session create → ready on the embedded default (`vwm up`), cold and from the warm pool: N
sessions made one after another (`POST /v1/sessions`, which answers once the session is ready:
harness started, repositories cloned, instructions written), with `VWM_WARM_HARNESSES=0` and
then with a pool, pausing between sessions so the pool has refilled (what a session started
now and then sees). Prints p50 / p99 of each.

    python bench/session_start.py [--sessions 10] [--pool 2] [--pause 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from bench.scale import bench_plane, ms, setup  # noqa: E402
from fake_provider.testing import serve_in_thread  # noqa: E402


def starts(provider_url: str, count: int, pool: int, pause_s: float) -> list[float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_plane(Path(tmp), {"VWM_WARM_HARNESSES": str(pool)}, case="text", pace_s=0.1) as plane,
        plane.client(timeout=600) as client,
    ):
        task_repo = setup(client, "claude", provider_url, Path(tmp))
        took = []
        for _ in range(count):
            time.sleep(pause_s)  # the pool refills meanwhile
            started = time.perf_counter()
            made = client.post(
                "/v1/sessions", json={"worker": "bench", "session_repo": {"url": str(task_repo)}}
            )
            made.raise_for_status()
            took.append(time.perf_counter() - started)
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--pause", type=float, default=1.0)
    args = parser.parse_args()
    print(describe(), flush=True)
    os.environ["BENCH_KEY"] = "bench-key"
    with serve_in_thread() as provider:
        for pool in (0, args.pool):
            took = starts(provider.base_url, args.sessions, pool, args.pause)
            label = "cold (no pool)" if pool == 0 else f"warm pool of {pool}"
            print(f"session create → ready, {label}: p50/p99 {ms(took)}", flush=True)


if __name__ == "__main__":
    main()
