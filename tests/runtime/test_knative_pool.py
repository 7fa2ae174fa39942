"""The Knative backend's warm pool (functions.runtime.knative_pool): members made per runtime
shape, generic until claimed, a claim that makes one a session's harness in place without a new
revision, a pod of it restarted as the session's, two control planes never taking the same
member, and what the session's end and the reconciler's sweeps remove. Against the fake cluster
of tests/runtime/knative_cluster (real client, real HTTP, real harnesses in pool member mode)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from eventing.harness_api import POOL_TOKEN_ENV
from functions.kube import PERSISTENT_VOLUME_CLAIMS, SECRETS
from functions.runtime import HarnessStartFailed
from functions.runtime.base import PoolShape
from functions.runtime.knative import KnativeBackend
from functions.runtime.knative_objects import SESSION_ANNOTATION, SessionNames
from functions.runtime.knative_pool import MEMBER_COMPONENT, POOL_LABEL, Shape
from tests.runtime.contract import eventually
from tests.runtime.knative_cluster import HARNESS_IMAGE, NAMESPACE, Cluster, knative_cluster
from tests.support import k8s_schema, knative_rules
from tests.support.fake_knative import PVCS, SERVICES
from tests.support.fake_knative import SECRETS as SECRET_KIND
from tests.support.fake_kube_api import Kind

TRIGGER_KIND = Kind("eventing.knative.dev", "v1", "triggers", "Trigger")
READY_S = 60.0
CLI_BINS = Path(__file__).resolve().parents[2] / ".tools" / "clis" / "node_modules" / ".bin"
PRICES = {"input": 3, "cache_read": 0.3, "cache_write": 3.75, "output": 15}
DEFAULT = PoolShape()
BIG = PoolShape(image="registry.example/big-harness:1", cpu="4", memory="8Gi")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with knative_cluster(tmp_path / "cluster") as running:
        yield running


def starts(how: str) -> float:
    """`vwm_harness_starts_total{start=how}` in this process."""
    return REGISTRY.get_sample_value("vwm_harness_starts_total", {"start": how}) or 0.0


def members(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The unclaimed members' Services, by name."""
    return {
        name: service
        for name, service in cluster.api.objects(SERVICES, NAMESPACE).items()
        if service["metadata"]["labels"].get("app.kubernetes.io/component") == MEMBER_COMPONENT
    }


async def warm(cluster: Cluster, backend: KnativeBackend, *shapes: PoolShape) -> list[str]:
    """Fill the pools of `shapes` and wait until every member's pod is ready."""
    await backend.fill_pools(shapes or [DEFAULT])
    names = sorted(members(cluster))
    for name in names:
        cluster.serving.wait_condition(name, "True", NAMESPACE, timeout=READY_S)
    return names


def spec_for(make_spec, session_id: str, **overrides: Any):
    return make_spec(
        session_id,
        worker="reviewer",
        credential_env={"VWM_PROVIDER_API_KEY": "sk-pool-secret"},
        extra_env={"VWM_PRICES": json.dumps(PRICES)},
        **overrides,
    )


async def health(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url + "/healthz", headers=headers)


# -- the members -------------------------------------------------------------------------------


def test_a_member_passes_the_schemas_and_webhook_rules_and_holds_nothing_of_a_session(
    cluster: Cluster,
) -> None:
    backend = cluster.backend()
    shape = Shape.of(BIG, backend.sessions)
    secret, volume, service = backend.pool.member_objects(shape, "vwm-w-0123456789abcdef")

    assert knative_rules.cluster_service_problems(service) == []
    assert k8s_schema.core_problems(secret) == []
    assert k8s_schema.core_problems(volume) == []
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == BIG.image
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    # Generic: the pod's own settings, and the rest from the Secret, which holds the pool
    # token only until a claim.
    assert {var["name"] for var in container["env"]} == {
        "VWM_WORKSPACE",
        "VWM_HARNESS_HOST",
        "VWM_SANDBOX",
    }
    assert container["envFrom"] == [{"secretRef": {"name": "vwm-w-0123456789abcdef-env"}}]
    assert list(secret["stringData"]) == [POOL_TOKEN_ENV]
    assert SESSION_ANNOTATION not in json.dumps([secret, volume, service])
    # One pod at most on its ReadWriteOnce volume, as a session's.
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/max-scale"] == "1"


async def test_fill_makes_each_shapes_pool_and_prunes_shapes_no_runtime_has(
    cluster: Cluster,
) -> None:
    backend = cluster.backend(warm_services=2)
    assert await backend.fill_pools([DEFAULT, BIG]) == 4
    assert await backend.fill_pools([DEFAULT, BIG]) == 0  # full: nothing more
    pools = [s["metadata"]["labels"][POOL_LABEL] for s in members(cluster).values()]
    default_key = Shape.of(DEFAULT, backend.sessions).key
    big_key = Shape.of(BIG, backend.sessions).key
    assert sorted(pools) == sorted([default_key] * 2 + [big_key] * 2)
    big = [n for n, s in members(cluster).items() if s["metadata"]["labels"][POOL_LABEL] == big_key]

    # The big runtime is gone (or changed its image): its members go, with their objects.
    assert await backend.fill_pools([DEFAULT]) == 0
    assert len(members(cluster)) == 2
    for name in big:
        names = SessionNames(name)
        assert names.secret not in cluster.api.objects(SECRET_KIND, NAMESPACE)
        assert names.volume not in cluster.api.objects(PVCS, NAMESPACE)

    # A smaller pool: the newest members past the size go.
    assert await cluster.backend(warm_services=1).fill_pools([DEFAULT]) == 0
    assert len(members(cluster)) == 1


async def test_what_a_member_left_without_its_service_is_removed_after_a_grace(
    cluster: Cluster,
) -> None:
    """A fill cut off between a member's volume and its Service, or a claim cut off before it
    relabelled the volume, leaves objects no Service accounts for: they cost storage."""
    backend = cluster.backend(warm_services=1)
    secret, volume, _ = backend.pool.member_objects(
        Shape.of(DEFAULT, backend.sessions), "vwm-w-left0behind000"
    )
    await backend.api.create(SECRETS, NAMESPACE, secret)
    await backend.api.create(PERSISTENT_VOLUME_CLAIMS, NAMESPACE, volume)
    names = SessionNames("vwm-w-left0behind000")

    await backend.fill_pools([DEFAULT])  # within the grace: a member being made, maybe
    assert names.volume in cluster.api.objects(PVCS, NAMESPACE)
    [member] = members(cluster)

    backend.pool.stray_grace_s = 0
    await backend.fill_pools([DEFAULT])
    assert names.volume not in cluster.api.objects(PVCS, NAMESPACE)
    assert names.secret not in cluster.api.objects(SECRET_KIND, NAMESPACE)
    # The member with its Service keeps its objects.
    assert SessionNames(member).volume in cluster.api.objects(PVCS, NAMESPACE)
    assert SessionNames(member).secret in cluster.api.objects(SECRET_KIND, NAMESPACE)


# -- a claim -----------------------------------------------------------------------------------


async def test_a_session_takes_a_ready_member_and_it_becomes_the_sessions_harness_in_place(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend(warm_services=1)
    [member] = await warm(cluster, backend)
    member_url = cluster.api.get(SERVICES, NAMESPACE, member)["status"]["address"]["url"]
    waiting = await health(member_url)
    assert waiting.json() == {"status": "waiting", "pool_member": True}
    pid = cluster.serving.pid_of(member, NAMESPACE)

    spec = spec_for(make_spec, "s-pooled")
    warm_starts = starts("warm")
    handle = await backend.provision(spec)
    endpoint = await backend.wait_ready(handle, READY_S)
    assert starts("warm") == warm_starts + 1

    names = SessionNames(member)
    assert handle.state["service"] == member and handle.state["volume"] == names.volume
    assert endpoint.url == member_url
    assert endpoint.token == cluster.token_key.token("s-pooled")
    answer = (await health(endpoint.url, endpoint.token)).json()
    assert answer["cli"] == "claude" and answer["status"] == "ok"
    # The same pod, the same revision: the claim changed no template.
    assert cluster.serving.pid_of(member, NAMESPACE) == pid
    assert cluster.serving.revisions_of(member) == 1
    # Its objects are the session's now: the reconciler and the session's end find them.
    service = cluster.api.get(SERVICES, NAMESPACE, member)
    assert service["metadata"]["annotations"][SESSION_ANNOTATION] == "s-pooled"
    assert POOL_LABEL not in service["metadata"]["labels"]
    assert await backend.volumes() == {"s-pooled": names.volume}
    secret = cluster.api.get(SECRET_KIND, NAMESPACE, names.secret)
    assert secret["metadata"]["annotations"][SESSION_ANNOTATION] == "s-pooled"
    trigger = cluster.api.get(TRIGGER_KIND, NAMESPACE, names.trigger)
    assert trigger["spec"]["subscriber"]["ref"]["name"] == member
    assert trigger["spec"]["filters"][0]["exact"]["sessionid"] == "s-pooled"
    # The pool token no longer opens it; the pool is refilled in the background.
    pool_token = cluster.token_key.token(f"pool/{member}")
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(
            endpoint.url + "/v1/jobs",
            json={"prompt": "hi"},
            headers={"Authorization": f"Bearer {pool_token}"},
        )
    assert refused.status_code == 401

    async def pool_size() -> int:
        return len(members(cluster))

    await eventually(pool_size, 1)
    assert member not in members(cluster)

    await backend.teardown(handle)
    for kind, name in (
        (SERVICES, member),
        (SECRET_KIND, names.secret),
        (PVCS, names.volume),
        (TRIGGER_KIND, names.trigger),
    ):
        assert name not in cluster.api.objects(kind, NAMESPACE), (kind, name)


async def test_a_claimed_members_pod_that_restarts_comes_up_as_the_session(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend(warm_services=1)
    [member] = await warm(cluster, backend)
    handle = await backend.provision(spec_for(make_spec, "s-restarted"))
    endpoint = await backend.wait_ready(handle, READY_S)

    killed = cluster.serving.kill_pod(member, NAMESPACE)

    # The new pod reads the Secret the claim wrote: the session's token, CLI and key.
    assert await backend.wait_ready(handle, READY_S) == endpoint
    assert cluster.serving.pid_of(member, NAMESPACE) not in (None, killed)
    assert (await health(endpoint.url, endpoint.token)).json()["cli"] == "claude"
    assert cluster.serving.revisions_of(member) == 1
    await backend.teardown(handle)


async def test_a_claim_whose_pod_is_gone_still_makes_the_session(
    cluster: Cluster, make_spec
) -> None:
    """The member's pod dies just before the claim reaches it (a crash; scaled to zero, the
    same): its next pod starts from the Secret the claim wrote, already the session's."""
    backend = cluster.backend(warm_services=1)
    [member] = await warm(cluster, backend)
    hand_over = backend.pool.hand_over
    taken: list[bool] = []

    async def crash_first(*args: Any) -> bool:
        cluster.serving.kill_pod(member, NAMESPACE)
        taken.append(await hand_over(*args))
        return taken[-1]

    backend.pool.hand_over = crash_first  # type: ignore[method-assign]
    handle = await backend.provision(spec_for(make_spec, "s-missed"))
    endpoint = await backend.wait_ready(handle, READY_S)

    assert taken == [False]
    assert handle.state["service"] == member
    assert endpoint.token == cluster.token_key.token("s-missed")
    assert (await health(endpoint.url, endpoint.token)).json()["cli"] == "claude"
    await backend.teardown(handle)


@pytest.mark.parametrize("cli", ["codex", "gemini", "opencode"])
async def test_one_pool_serves_every_cli_of_a_shape(cluster: Cluster, make_spec, cli: str) -> None:
    """A member knows no CLI until its claim: the same warm Service becomes any CLI's harness."""
    backend = cluster.backend(warm_services=1)
    [member] = await warm(cluster, backend)
    spec = spec_for(make_spec, f"s-{cli}", cli=cli, cli_bin=str(CLI_BINS / cli))
    handle = await backend.provision(spec)
    endpoint = await backend.wait_ready(handle, READY_S)  # answers as `cli`, with its token
    assert handle.state["service"] == member
    assert (await health(endpoint.url, endpoint.token)).json()["cli"] == cli
    await backend.teardown(handle)


async def test_a_claim_the_member_refuses_becomes_a_cold_start_that_fails_as_one(
    cluster: Cluster, make_spec
) -> None:
    """Settings no harness can start with: the member's harness refuses them, its Service is
    replaced by the session's own on the same volume, whose pod fails with its log."""
    backend = cluster.backend(warm_services=1)
    [member] = await warm(cluster, backend)
    warm_starts, cold_starts = starts("warm"), starts("cold")
    handle = await backend.provision(spec_for(make_spec, "s-refused", cli="bogus"))
    assert handle.state["service"] == member
    assert (starts("warm"), starts("cold")) == (warm_starts, cold_starts + 1)
    with pytest.raises(HarnessStartFailed) as failed:
        await backend.wait_ready(handle, READY_S)
    assert "bogus" in failed.value.log_tail
    service = cluster.api.get(SERVICES, NAMESPACE, member)
    assert "envFrom" not in service["spec"]["template"]["spec"]["containers"][0]
    await backend.teardown(handle)


async def test_two_control_planes_never_take_the_same_member(cluster: Cluster, make_spec) -> None:
    first, second = cluster.backend(warm_services=2), cluster.backend(warm_services=2)
    await warm(cluster, first)
    handles = await asyncio.gather(
        first.provision(spec_for(make_spec, "s-one")),
        second.provision(spec_for(make_spec, "s-two")),
    )
    services = {handle.state["service"] for handle in handles}
    assert len(services) == 2 and all(s.startswith("vwm-w-") for s in services)
    for backend, handle in zip((first, second), handles, strict=True):
        endpoint = await backend.wait_ready(handle, READY_S)
        assert endpoint.token == cluster.token_key.token(handle.session_id)
        await backend.teardown(handle)


async def test_without_a_ready_member_a_session_starts_cold(cluster: Cluster, make_spec) -> None:
    backend = cluster.backend(warm_services=1)
    other = await warm(cluster, backend, BIG)  # a pool of another shape only
    cold_starts = starts("cold")
    handle = await backend.provision(spec_for(make_spec, "s-cold"))
    assert starts("cold") == cold_starts + 1
    assert handle.state["service"] == SessionNames.of("s-cold").service
    await backend.wait_ready(handle, READY_S)
    assert sorted(members(cluster)) == other
    await backend.teardown(handle)


async def test_a_claimed_member_is_swept_with_its_session_and_its_volume_found(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend(warm_services=1)
    [member] = await warm(cluster, backend)
    handle = await backend.provision(spec_for(make_spec, "s-orphan"))
    await backend.wait_ready(handle, READY_S)

    async def nobody(session_ids: object) -> set[str]:
        return set()

    assert await backend.sweep(nobody) == ["s-orphan"]

    async def service_left() -> bool:  # deleted in the foreground: gone once its pod is
        return member in cluster.api.objects(SERVICES, NAMESPACE)

    await eventually(service_left, False)
    assert await backend.remove_volumes(["s-orphan"]) == ["s-orphan"]
    assert SessionNames(member).volume not in cluster.api.objects(PVCS, NAMESPACE)
    # An unclaimed member is the pool's, never an orphan of the sweep.
    await warm(cluster, backend)
    assert await backend.sweep(nobody) == []
    assert len(members(cluster)) == 1


def test_the_default_shape_is_the_backends_and_a_pool_token_is_no_session_token(
    cluster: Cluster,
) -> None:
    backend = cluster.backend(cpu="3", memory="5Gi")
    assert Shape.of(DEFAULT, backend.sessions) == Shape(HARNESS_IMAGE, "3", "5Gi")
    assert Shape.of(BIG, backend.sessions) == Shape(BIG.image or "", "4", "8Gi")
    # Derived under "pool/", which no session id has: no member's token opens a session.
    assert cluster.token_key.token("pool/vwm-w-1") != cluster.token_key.token("vwm-w-1")
