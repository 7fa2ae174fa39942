"""Session start on the Knative backend, cold and from the warm pool, against the fake cluster of
the tests (tests/runtime/knative_cluster: the real `kubernetes` client over HTTP to the fake API
server, each Service's pod a real `python -m harness` on a folder standing in for its PVC).

For N sessions one after another it prints provision → ready (`provision` then `wait_ready`),
p50 / p99, and the Kubernetes API requests each start makes, cold and with a warm Service taken.
The fake starts a pod in well under a second and binds a volume at once: on a cluster a cold
start adds the PVC's binding, the scheduling, the image pull and the volume's attachment, which
a warm Service has done before its claim; the figures here are what VWM itself adds.

    python bench/knative_session_start.py [--sessions 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from bench.scale import ms  # noqa: E402
from functions.runtime.base import PoolShape  # noqa: E402
from functions.runtime.knative import KnativeBackend  # noqa: E402
from tests.runtime.knative_cluster import (  # noqa: E402
    NAMESPACE,
    Cluster,
    claude_spec,
    knative_cluster,
)
from tests.support.fake_knative import SERVICES  # noqa: E402

READY_S = 60.0


async def wait_warm(cluster: Cluster, backend: KnativeBackend) -> None:
    """Fill the pool and wait until its member's pod is ready (what the reconciler keeps)."""
    await backend.fill_pools([PoolShape()])
    for name in cluster.api.objects(SERVICES, NAMESPACE):
        if name.startswith("vwm-w-"):
            cluster.serving.wait_condition(name, "True", NAMESPACE, timeout=READY_S)


async def start(cluster: Cluster, backend: KnativeBackend, session_id: str) -> tuple[float, int]:
    """Provision → ready of one session: seconds, and the API requests it made."""
    requests = len(cluster.api.requests)
    began = time.perf_counter()
    handle = await backend.provision(claude_spec(session_id))
    await backend.wait_ready(handle, READY_S)
    took = time.perf_counter() - began
    made = len(cluster.api.requests) - requests
    await backend.teardown(handle)
    return took, made


async def run(sessions: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="vwm-knative-start-") as root,
        knative_cluster(Path(root) / "cluster") as cluster,
    ):
        results = {}
        for label, warm in (("cold", 0), ("warm pool", 1)):
            backend = cluster.backend(warm_services=warm)
            times, requests = [], []
            for n in range(sessions):
                if warm:
                    await wait_warm(cluster, backend)
                took, made = await start(cluster, backend, f"bench-{label[:4]}-{n}")
                times.append(took)
                requests.append(made)
            results[label] = (times, requests)
            if warm:
                await backend.fill_pools([])  # no runtime left: the pool goes
    print(f"Knative session start, provision -> ready, {sessions} sessions one after another")
    print(f"(fake cluster in {NAMESPACE}: a pod is a local process, a volume a folder)")
    # The warm start's requests include those of the refill it starts (a list and 3 creates).
    for label, (times, requests) in results.items():
        median_requests = sorted(requests)[len(requests) // 2]
        print(f"  {label:10} p50 / p99 {ms(times)}, API requests (median) {median_requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    args = parser.parse_args()
    print(describe())
    asyncio.run(run(args.sessions))


if __name__ == "__main__":
    main()
