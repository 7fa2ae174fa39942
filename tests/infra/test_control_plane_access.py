"""The control plane's Role (infra/knative/control-plane-rbac.yaml) grants exactly what its code
asks of the API server: every public operation of the Knative runtime backend and of the
subscription Triggers is run against the fake Kubernetes API, each request it serves is turned
into the RBAC verb the API server would check (``POST`` create, ``GET`` get or list, ``PUT``
update, ``PATCH`` patch, ``DELETE`` delete), and the set must equal what the Role grants. A verb
the code starts to use fails here before a cluster answers 403; one it stops using fails too,
so the Role never keeps a permission nobody needs."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes.client import Configuration

from functions.broker.knative_triggers import SubscriptionTriggers
from functions.kube import KNATIVE_SERVICES, KubeApi
from functions.runtime import HarnessNotReady, SessionExists
from functions.runtime.base import PoolShape
from functions.runtime.knative import KnativeBackend
from functions.runtime.tokens import TokenKey
from functions.settings import KnativeSessionSettings
from tests.infra.manifests import TEMPLATE_VARIABLES, one
from tests.runtime.contract import owned_among
from tests.runtime.knative_cluster import claude_spec
from tests.support.fake_knative import PVCS, SECRETS, SERVICES
from tests.support.fake_kube_api import FakeKubeApi, Kind, serving

NAMESPACE = TEMPLATE_VARIABLES["namespace"]
TRIGGERS = Kind("eventing.knative.dev", "v1", "triggers", "Trigger")
Permission = tuple[str, str, str]  # (API group, resource, verb)


def permission(method: str, path: str) -> Permission:
    """The RBAC check kube-apiserver makes for a request to a namespaced object (or its
    collection): ``/api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]]`` or
    ``/apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME[/SUB]]``."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[4:]
    else:
        group, rest = parts[1], parts[5:]
    resource, named = rest[0], len(rest) > 1
    if len(rest) > 2:
        resource += "/" + rest[2]
    verb = {
        "POST": "create",
        "GET": "get" if named else "list",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return group, resource, verb


@dataclass(frozen=True)
class Subscription:
    name: str
    filters: list[dict[str, dict[str, str]]]
    sink: str
    delivery: dict[str, object] | None = None


@contextlib.contextmanager
def api_server() -> Iterator[tuple[FakeKubeApi, KubeApi]]:
    fake = FakeKubeApi(kinds=[SERVICES, PVCS, SECRETS, TRIGGERS], namespaces={NAMESPACE})
    with serving(fake) as url:
        yield fake, KubeApi(Configuration(host=url), attempts=1)


def backend_on(api: KubeApi, warm_services: int = 0) -> KnativeBackend:
    return KnativeBackend(
        api,
        namespace=NAMESPACE,
        broker="vwm",
        sessions=KnativeSessionSettings(harness_image=TEMPLATE_VARIABLES["harness_image"]),
        token_key=TokenKey(secrets.token_bytes(32), "test"),
        probe_timeout_s=0.2,
        startup_grace_s=0.2,
        delete_wait_s=5.0,
        warm_services=warm_services,
    )


async def use_everything(fake: FakeKubeApi, api: KubeApi) -> None:
    """Every operation the functions run against the API server, including the paths taken
    when an object exists already, failed, or is gone."""
    backend = backend_on(api)
    spec = claude_spec("0123456789abcdef0123456789abcdef")
    handle = await backend.provision(spec)
    await claim_from_the_pool(fake, api)
    with pytest.raises(SessionExists):
        await backend.provision(spec)
    with pytest.raises(HarnessNotReady):
        await backend.wait_ready(handle, 0.3)
    assert await backend.status(handle) == "running"
    # A failed Service is replaced (deleted, waited for, created again) and the Secret and
    # Trigger of the session, which exist, are replaced at their current version.
    service = handle.state["service"]
    generation = fake.get(SERVICES, NAMESPACE, service)["metadata"].get("generation", 1)
    failed = {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "x"}
    fake.set_status(
        SERVICES, NAMESPACE, service, {"observedGeneration": generation, "conditions": [failed]}
    )
    handle = await backend.ensure_running(handle, spec)
    await backend.volumes()
    await backend.sweep(
        owned_among(set())
    )  # the session's Service, Trigger and Secret are orphans now
    await backend.teardown(handle, keep_workspace=True)
    assert await backend.status(handle) == "stopped"
    assert await backend.remove_volumes([spec.session_id]) == [spec.session_id]
    await backend.teardown(handle)  # what is gone already is skipped
    assert await backend.status(handle) == "missing"

    triggers = SubscriptionTriggers(api, NAMESPACE, "vwm")
    subscription = Subscription("ci", [{"exact": {"type": "dev.vwm.job.completed"}}], "https://x")
    await triggers.apply(subscription)
    await triggers.apply(subscription)  # exists: replaced
    await triggers.list()
    await triggers.delete(subscription.name)
    await triggers.delete(subscription.name)  # gone already: fine


async def claim_from_the_pool(fake: FakeKubeApi, api: KubeApi) -> None:
    """The warm pool: members made, one taken (relabelled, its Secret and PVC the session's),
    the rest pruned, and what a member left without its Service removed."""
    backend = backend_on(api, warm_services=1)
    assert await backend.fill_pools([PoolShape()]) == 1
    [member] = [name for name in fake.objects(SERVICES, NAMESPACE) if name.startswith("vwm-w-")]
    ready = {"type": "Ready", "status": "True"}
    address = {"url": "http://127.0.0.1:9"}  # nobody listens: the claim's post fails, logged
    generation = fake.get(SERVICES, NAMESPACE, member)["metadata"].get("generation", 1)  # type: ignore[index]
    status = {"observedGeneration": generation, "conditions": [ready], "address": address}
    fake.set_status(SERVICES, NAMESPACE, member, status)
    handle = await backend.provision(claude_spec("fedcba9876543210fedcba9876543210"))
    assert handle.state["service"] == member
    await asyncio.gather(*backend.pool._refills)
    backend.pool.stray_grace_s = 0
    await api.delete(KNATIVE_SERVICES, NAMESPACE, member)  # the session's end, in short
    await backend.fill_pools([])  # no runtime: the new member goes, and the strays


def granted() -> set[Permission]:
    role = one("Role", "vwm-control-plane")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


async def test_the_role_grants_exactly_what_the_control_plane_asks_of_the_api_server() -> None:
    with api_server() as (fake, api):
        await use_everything(fake, api)
    used = {permission(method, path) for method, path in fake.requests}
    assert granted() == used, (
        f"granted but never used: {sorted(granted() - used)}; "
        f"used but not granted: {sorted(used - granted())}"
    )


def test_services_and_volumes_are_never_changed_but_in_their_labels() -> None:
    """A Service's template is never changed (a new revision would wait for the volume the old
    pod holds), and a volume is never resized: the Role grants no update of either, and the
    only patches, the warm pool's claim relabelling a member, touch labels and annotations."""
    for group, resource, verb in granted():
        if resource in ("services", "persistentvolumeclaims"):
            assert verb != "update", (group, resource, verb)
    with api_server() as (fake, api):
        asyncio.run(use_everything(fake, api))
    assert {path.split("/")[-2] for path, _ in fake.patches} == {
        "services",
        "persistentvolumeclaims",
    }
    for path, body in fake.patches:
        assert set(body) == {"metadata"}, path
        assert set(body["metadata"]) <= {"labels", "annotations", "resourceVersion"}, path


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/v1/namespaces/vwm/secrets", ("", "secrets", "create")),
        ("GET", "/api/v1/namespaces/vwm/secrets", ("", "secrets", "list")),
        ("GET", "/api/v1/namespaces/vwm/secrets/s", ("", "secrets", "get")),
        (
            "PUT",
            "/apis/eventing.knative.dev/v1/namespaces/vwm/triggers/t",
            ("eventing.knative.dev", "triggers", "update"),
        ),
        (
            "PATCH",
            "/apis/serving.knative.dev/v1/namespaces/vwm/services/s/status",
            ("serving.knative.dev", "services/status", "patch"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/vwm/persistentvolumeclaims",
            ("", "persistentvolumeclaims", "deletecollection"),
        ),
    ],
)
def test_a_request_maps_to_the_permission_the_api_server_checks(
    method: str, path: str, expected: Permission
) -> None:
    assert permission(method, path) == expected
