"""What the event path costs, on the embedded system (`vwm up`) against the fake model provider:

1. Event latency, harness → recorded job: async prompts that nobody follows, so only the
   harness's events (outbox → broker → `events` function) record them. For each job, the time
   from the harness logging ``job_finished`` (its `finished_at`) to the control plane writing
   the job's telemetry row (its `created_at`); p50 and p99.
2. The cost of publishing on a streamed job: the same streamed prompts with harnesses that
   publish their events (the default) and with publishing off (``VWM_HARNESS_EVENT_SINK=`` empty:
   the stream's caller records the job, as the in-memory recorder did before), each against its
   own `vwm up`: time to the last SSE event (p50, p99) and the CPU seconds the harness and the
   control plane spent per prompt (the CLI's own CPU excluded).

    python bench/events.py [--prompts 30] [--cli claude]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.control_plane import setup  # noqa: E402
from fake_provider.testing import serve_in_thread  # noqa: E402
from tests.e2e.conftest import MODELS  # noqa: E402
from tests.support.control_plane import ControlPlane, harness_pids, kill_harnesses  # noqa: E402
from tests.support.sse import iter_sse  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` itself (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def start_plane(root: Path, provider_url: str, cli: str, env: dict[str, str]) -> ControlPlane:
    root.mkdir(parents=True)
    plane = ControlPlane(root / "data", {"BENCH_KEY": "bench", "VWM_TICK_S": "0", **env})
    plane.start()
    with plane.client() as client:
        setup(client, cli, provider_url, root)  # the `bench` runtime and worker
    return plane


def new_session(client: httpx.Client) -> str:
    created = client.post("/v1/sessions", json={"worker": "bench"})
    created.raise_for_status()
    return created.json()["id"]


def event_latency(plane: ControlPlane, prompts: int) -> list[float]:
    """Seconds from `job_finished` on the harness to the telemetry row, per async job."""
    delays: list[float] = []
    with plane.client() as client:
        session_id = new_session(client)
        for _ in range(prompts):
            job = client.post(
                "/v1/prompts", json={"session_id": session_id, "prompt": "say hi", "mode": "async"}
            ).json()
            while (row := client.get(f"/v1/jobs/{job['id']}").json())["status"] in (
                "queued",
                "running",
            ):
                time.sleep(0.01)
            records = client.get(
                "/v1/telemetry/requests", params={"session_id": session_id, "limit": 1}
            ).json()["items"]
            [record] = [r for r in records if r["job_id"] == job["id"]]
            finished = datetime.fromisoformat(row["finished_at"])
            recorded = datetime.fromisoformat(record["created_at"])
            delays.append((recorded - finished).total_seconds())
    return delays


def streamed(plane: ControlPlane, prompts: int) -> tuple[list[float], float, float]:
    """Per streamed prompt: seconds to its last SSE event; CPU seconds per prompt of the
    harness and of the control plane."""
    assert plane.proc is not None
    times: list[float] = []
    with plane.client() as client:
        session_id = new_session(client)
        [harness] = [
            pid
            for pid in harness_pids(plane.data_dir)
            if f"VWM_SESSION_ID={session_id}".encode()
            in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        ]
        harness_cpu, plane_cpu = cpu_s(harness), cpu_s(plane.proc.pid)
        for _ in range(prompts):
            started = time.perf_counter()
            body = {"session_id": session_id, "prompt": "say hi", "mode": "stream"}
            with client.stream("POST", "/v1/prompts", json=body) as stream:
                last = [e for e in iter_sse(stream)][-1]
            assert last.event == "job_finished", last
            times.append(time.perf_counter() - started)
        # Let the events of the last job arrive before reading the CPU counters.
        time.sleep(1.0)
        harness_cpu = (cpu_s(harness) - harness_cpu) / prompts
        plane_cpu = (cpu_s(plane.proc.pid) - plane_cpu) / prompts
    return times, harness_cpu, plane_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--cli", default="claude", choices=sorted(MODELS))
    args = parser.parse_args()
    with serve_in_thread() as provider, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plane = start_plane(root / "published", provider.base_url, args.cli, {})
        try:
            delays = event_latency(plane, args.prompts)
            print(
                f"event latency harness → recorded job ({args.prompts} async jobs): "
                f"p50 {pct(delays, 0.5) * 1000:.0f} ms, p99 {pct(delays, 0.99) * 1000:.0f} ms",
                flush=True,
            )
            published = streamed(plane, args.prompts)
        finally:
            plane.stop()
            kill_harnesses(plane.data_dir)
        plane = start_plane(
            root / "unpublished", provider.base_url, args.cli, {"VWM_HARNESS_EVENT_SINK": ""}
        )
        try:
            unpublished = streamed(plane, args.prompts)
        finally:
            plane.stop()
            kill_harnesses(plane.data_dir)
    for name, (times, harness_cpu, plane_cpu) in (
        ("with the outbox (events published)", published),
        ("without (the caller records only)", unpublished),
    ):
        print(
            f"streamed prompt {name}: last event p50 {pct(times, 0.5) * 1000:.0f} ms, "
            f"p99 {pct(times, 0.99) * 1000:.0f} ms (mean {statistics.mean(times) * 1000:.0f}); "
            f"CPU per prompt: harness {harness_cpu * 1000:.0f} ms, "
            f"control plane {plane_cpu * 1000:.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
