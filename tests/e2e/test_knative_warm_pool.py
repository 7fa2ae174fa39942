"""The warm pool on Knative, end to end: `vwm up`'s control plane with
``VWM_RUNTIME_BACKEND=knative`` and ``VWM_WARM_HARNESSES=1`` against the fake cluster. Its
reconciler makes a warm Service (PVC, Secret, Service whose pod waits) for each runtime's shape; a
session takes it, is bootstrapped on it and prompts the real Claude Code CLI on the fake
provider; the pool is refilled; the session's end removes what it took; a runtime's new shape
gets its own pool and the old one goes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.runtime.knative_objects import SESSION_ANNOTATION, SessionNames
from functions.runtime.knative_pool import MEMBER_COMPONENT
from tests.e2e.conftest import git, make_bare_repo
from tests.e2e.knative_plane import knative_plane
from tests.e2e.test_knative_end_to_end import prompt, start_session
from tests.runtime.knative_cluster import (
    NAMESPACE,
    TRIGGERS,
    Cluster,
    knative_cluster,
)
from tests.support.control_plane import ControlPlane, until
from tests.support.fake_knative import PVCS, SECRETS, SERVICES

pytestmark = [pytest.mark.cli, pytest.mark.xdist_group("knative-warm-pool")]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("knative-warm")


@pytest.fixture(scope="module")
def cluster(root: Path) -> Iterator[Cluster]:
    with knative_cluster(root / "cluster") as running:
        yield running


@pytest.fixture(scope="module")
def plane(root: Path, cluster: Cluster, fake_provider: Any) -> Iterator[ControlPlane]:
    with knative_plane(
        root,
        cluster,
        fake_provider.base_url,
        FAKE_PROVIDER_KEY=f"warm-{uuid.uuid4().hex[:8]}",
        VWM_WARM_HARNESSES="1",
    ) as plane:
        yield plane


def ready_members(cluster: Cluster) -> list[dict[str, Any]]:
    """The unclaimed members whose pod is ready."""
    found = []
    for service in cluster.api.objects(SERVICES, NAMESPACE).values():
        labels = service["metadata"]["labels"]
        conditions = (service.get("status") or {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        if labels.get("app.kubernetes.io/component") == MEMBER_COMPONENT and ready:
            found.append(service)
    return found


def session_of(cluster: Cluster, service: str) -> str | None:
    found = cluster.api.get(SERVICES, NAMESPACE, service)
    return None if found is None else found["metadata"]["annotations"].get(SESSION_ANNOTATION)


def test_a_session_takes_the_warm_service_works_on_it_and_the_pool_refills(
    plane: ControlPlane, cluster: Cluster, root: Path
) -> None:
    [member] = until(lambda: ready_members(cluster), plane)
    name = member["metadata"]["name"]
    names = SessionNames(name)
    task_repo = make_bare_repo(root / f"task-{uuid.uuid4().hex[:6]}.git", {"README.md": "# t\n"})
    with plane.client() as client:
        session_id = start_session(client, plane, task_repo)
        # The session is the member: its Service, and its volume, bootstrapped there.
        assert session_of(cluster, name) == session_id
        assert cluster.api.get(SERVICES, NAMESPACE, SessionNames.of(session_id).service) is None
        volume = cluster.serving.volume_path(NAMESPACE, names.volume)
        assert (volume / "session_repo" / "README.md").exists()
        assert cluster.serving.revisions_of(name, NAMESPACE) == 1  # no template change

        answer = prompt(client, session_id, "write hello.txt")
        assert answer["status"] == "succeeded", (answer, plane.log()[-4000:])
        assert (volume / "session_repo" / "hello.txt").exists()

        # Another member is made for the next session, never the one taken.
        [refill] = until(lambda: ready_members(cluster), plane)
        assert refill["metadata"]["name"] != name

        ended = client.delete(f"/v1/sessions/{session_id}")
        assert ended.status_code == 200, ended.text
        for kind, object_name in (
            (SERVICES, name),
            (SECRETS, names.secret),
            (TRIGGERS, names.trigger),
            (PVCS, names.volume),
        ):
            assert cluster.api.get(kind, NAMESPACE, object_name) is None, (kind, object_name)
    assert "hello.txt" in git("--git-dir", str(task_repo), "show", "--stat", "--format=%s", "main")


def test_a_runtime_with_a_new_shape_gets_its_own_pool_and_the_old_one_goes(
    plane: ControlPlane, cluster: Cluster
) -> None:
    until(lambda: ready_members(cluster), plane)
    with plane.client() as admin:
        patched = admin.patch("/v1/admin/runtimes/c", json={"limits": {"cpu": "2"}})
        assert patched.status_code == 200, patched.text

        def reshaped() -> list[dict[str, Any]]:
            services = ready_members(cluster)
            cpus = [
                s["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
                for s in services
            ]
            return services if cpus == ["2"] else []

        [member] = until(reshaped, plane)
        # A session of the runtime takes the member of its new shape.
        session_id = start_session(admin, plane, make_bare_repo_for(plane))
        assert session_of(cluster, member["metadata"]["name"]) == session_id
        assert admin.delete(f"/v1/sessions/{session_id}").status_code == 200


def make_bare_repo_for(plane: ControlPlane) -> Path:
    return make_bare_repo(plane.data_dir.parent / f"r-{uuid.uuid4().hex[:6]}.git", {"a": "b\n"})
