"""Control-plane figures on the embedded system (`vwm up`), against the fake model provider:

1. session create → ready, with a worker repo and a session repo (p50, p99);
2. sync prompt through the control plane vs. the same prompt sent to the session's harness
   directly (median overhead);
3. N concurrent sessions each streaming a prompt: errors, time to first byte and total (p50, p99).

    python bench/control_plane.py [--sessions 20] [--prompts 10] [--concurrent 50] [--cli claude]

Each function's cold start is bench/cold_start.py's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fake_provider.testing import serve_in_thread  # noqa: E402
from tests.e2e.conftest import MODELS, make_bare_repo  # noqa: E402
from tests.support.control_plane import ControlPlane, kill_harnesses  # noqa: E402
from vwm.local.clis import pinned_version  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def setup(client: httpx.Client, cli: str, provider_url: str, root: Path) -> None:
    worker_repo = make_bare_repo(root / "worker.git", {"README.md": "# knowledge\n"})
    client.post(
        "/v1/admin/runtimes",
        json={
            "name": "bench",
            "cli": cli,
            "cli_version": pinned_version(cli),
            "default_model": MODELS[cli],
            "provider_base_url": provider_url,
            "credential_ref": "BENCH_KEY",
        },
    ).raise_for_status()
    client.post(
        "/v1/admin/workers",
        json={"name": "bench", "runtime": "bench", "repo_url": str(worker_repo)},
    ).raise_for_status()


def new_session(client: httpx.Client, task_repo: Path) -> tuple[str, float]:
    started = time.perf_counter()
    response = client.post(
        "/v1/sessions", json={"worker": "bench", "session_repo": {"url": str(task_repo)}}
    )
    response.raise_for_status()
    return response.json()["id"], time.perf_counter() - started


def session_create(client: httpx.Client, root: Path, count: int) -> list[str]:
    task_repo = make_bare_repo(root / "task.git", {"README.md": "# task\n"})
    ids, times = [], []
    for _ in range(count):
        session_id, elapsed = new_session(client, task_repo)
        ids.append(session_id)
        times.append(elapsed)
    print(
        f"session create→ready ({count}): p50 {pct(times, 0.5) * 1000:.0f} ms, "
        f"p99 {pct(times, 0.99) * 1000:.0f} ms",
        flush=True,
    )
    return ids


def prompt_overhead(plane: ControlPlane, client: httpx.Client, session_id: str, runs: int) -> None:
    client.post(
        "/v1/prompts", json={"session_id": session_id, "prompt": "say hi"}
    ).raise_for_status()
    state = plane.data_dir / "vwm.sqlite3"
    assert state.exists()
    import sqlite3

    row = (
        sqlite3.connect(state)
        .execute("SELECT runtime_state FROM sessions WHERE id = ?", (session_id,))
        .fetchone()
    )
    import json

    from functions.runtime.tokens import TokenKey

    handle = json.loads(row[0])["state"]
    token = TokenKey.in_folder(plane.data_dir).token(session_id)  # derived, never stored
    harness = httpx.Client(
        base_url=f"http://127.0.0.1:{handle['port']}",
        timeout=120,
        headers={"Authorization": f"Bearer {token}"},
    )
    through, direct = [], []
    for _ in range(runs):
        started = time.perf_counter()
        client.post(
            "/v1/prompts", json={"session_id": session_id, "prompt": "say hi"}
        ).raise_for_status()
        through.append(time.perf_counter() - started)
        started = time.perf_counter()
        harness.post("/v1/jobs", json={"prompt": "say hi"}).raise_for_status()
        direct.append(time.perf_counter() - started)
    harness.close()
    overhead = statistics.median(through) - statistics.median(direct)
    print(
        f"sync prompt ({runs} each, interleaved): control plane p50 "
        f"{statistics.median(through) * 1000:.0f} ms, harness direct p50 "
        f"{statistics.median(direct) * 1000:.0f} ms, overhead {overhead * 1000:.0f} ms "
        f"({overhead / statistics.median(direct) * 100:.1f}%)",
        flush=True,
    )


def concurrent_streams(client: httpx.Client, root: Path, count: int) -> None:
    task_repo = make_bare_repo(root / "task-many.git", {"README.md": "# task\n"})
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(new_session, client, task_repo) for _ in range(count)]
    ids, failed = [], []
    for future in futures:
        try:
            ids.append(future.result()[0])
        except httpx.HTTPStatusError as exc:
            failed.append(exc.response.text[:300])
    if failed:
        print(f"{len(failed)} of {count} session creations failed; first: {failed[0]}", flush=True)

    def stream(session_id: str) -> tuple[float, float, bool]:
        started = time.perf_counter()
        first = None
        ok = False
        with (
            httpx.Client(
                base_url=str(client.base_url), headers=dict(client.headers), timeout=600
            ) as own,
            own.stream(
                "POST",
                "/v1/prompts",
                json={"session_id": session_id, "prompt": "say hi", "mode": "stream"},
            ) as response,
        ):
            for line in response.iter_lines():
                first = first or time.perf_counter() - started
                ok = ok or ('"status":"succeeded"' in line and "job_finished" in line)
        return (
            first or float("nan"),
            time.perf_counter() - started,
            ok and response.status_code == 200,
        )

    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        """The API's own latency while the agents run: a cheap read every 200 ms."""
        while not done.is_set():
            started = time.perf_counter()
            client.get(f"/v1/sessions/{ids[0]}").raise_for_status()
            latencies.append(time.perf_counter() - started)
            done.wait(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(stream, ids))
    done.set()
    prober.join()
    firsts = [r[0] for r in results]
    totals = [r[1] for r in results]
    errors = sum(1 for r in results if not r[2])
    print(
        f"{count} concurrent streamed prompts: errors {errors}, first byte p50 "
        f"{pct(firsts, 0.5) * 1000:.0f} ms p99 {pct(firsts, 0.99) * 1000:.0f} ms, total p50 "
        f"{pct(totals, 0.5):.1f} s p99 {pct(totals, 0.99):.1f} s; GET session during the load "
        f"p50 {pct(latencies, 0.5) * 1000:.0f} ms p99 {pct(latencies, 0.99) * 1000:.0f} ms "
        f"({len(latencies)} calls)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--cli", default="claude", choices=sorted(MODELS))
    args = parser.parse_args()
    with serve_in_thread() as provider, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["BENCH_KEY"] = "bench-key"
        plane = ControlPlane(root / "data", {"BENCH_KEY": "bench-key"})
        plane.start()
        try:
            with plane.client(timeout=600) as client:
                setup(client, args.cli, provider.base_url, root)
                ids = session_create(client, root, args.sessions)
                prompt_overhead(plane, client, ids[0], args.prompts)
                for session_id in ids:
                    client.delete(f"/v1/sessions/{session_id}")
                # Each function's cold start: bench/cold_start.py.
                concurrent_streams(client, root, args.concurrent)
        finally:
            plane.stop()
            kill_harnesses(plane.data_dir)


if __name__ == "__main__":
    main()
