"""`vwm up`'s control plane on the Knative backend of a fake cluster, with a Claude Code runtime
on the fake provider and a worker `w`: what the Knative end-to-end modules share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.conftest import make_bare_repo
from tests.runtime.knative_cluster import Cluster, control_plane_env
from tests.support.control_plane import ControlPlane, add_claude_workers


@contextlib.contextmanager
def knative_plane(
    root: Path, cluster: Cluster, provider_url: str, **env: str
) -> Iterator[ControlPlane]:
    """Started for the block, with `env` over the cluster's settings; stopped after it."""
    plane = ControlPlane(root / "data", {**control_plane_env(cluster), **env})
    plane.start()
    try:
        repo = make_bare_repo(root / "worker.git", {"README.md": "# knowledge\n"})
        with plane.client() as admin:
            add_claude_workers(admin, provider_url, repo)
        yield plane
    finally:
        plane.stop()
