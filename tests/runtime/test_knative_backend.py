"""What the Knative backend does beyond the contract: the objects it makes (valid for the API
server and Knative's webhooks), how it meets the API server's answers (409, 404, 5xx), Ready
that fails or never comes, templates never patched, volume retention and the sweep of orphans.
Against the fake cluster of tests/runtime/knative_cluster (real client, real HTTP, real
harnesses)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.kube import KNATIVE_SERVICES, SECRETS
from functions.runtime import (
    HarnessNotReady,
    HarnessSpec,
    HarnessStartFailed,
    RuntimeBackendError,
    SessionExists,
)
from functions.runtime.knative_objects import SessionNames, build
from functions.settings import KnativeSessionSettings
from tests.runtime.contract import eventually, owned_among
from tests.runtime.knative_cluster import HARNESS_IMAGE, NAMESPACE, Cluster, knative_cluster
from tests.support import k8s_schema, knative_rules
from tests.support.fake_knative import PVCS, SERVICES
from tests.support.fake_knative import SECRETS as SECRET_KIND
from tests.support.fake_kube_api import Kind

TRIGGER_KIND = Kind("eventing.knative.dev", "v1", "triggers", "Trigger")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
READY_S = 60.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with knative_cluster(tmp_path / "cluster") as running:
        yield running


def spec_for(make_spec, session_id: str, **overrides) -> HarnessSpec:
    return make_spec(session_id, worker="reviewer", **overrides)


# -- the objects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "session_id",
    [
        "0123456789abcdef0123456789abcdef",  # what VWM makes
        "Mixed_Case.Session-ID",
        "9-starts-with-a-digit",
        "x" * 128,
        "a..b__c",
    ],
)
def test_every_name_is_a_dns_1035_label_that_leaves_room_for_revisions(session_id: str) -> None:
    names = SessionNames.of(session_id)
    for name in (names.service, names.volume, names.secret, names.trigger):
        assert DNS_1035.fullmatch(name), name
        assert len(name) <= 63, name
    assert len(f"{names.service}-00001") <= 63  # the name Knative gives its first revision


def test_names_never_collide_for_ids_that_differ_only_in_case_or_punctuation() -> None:
    ids = ["Session.A", "session.a", "session-a", "session_a", "SESSION-A"]
    assert len({SessionNames.of(session_id).service for session_id in ids}) == len(ids)


def test_the_objects_pass_the_schemas_and_the_knative_webhook_rules(make_spec) -> None:
    spec = spec_for(
        make_spec,
        "0123456789abcdef0123456789abcdef",
        credential_env={"VWM_PROVIDER_API_KEY": "sk-secret-value"},
        extra_env={"VWM_PRICES": json.dumps({"input": 3})},
        job_timeout_s=900.0,
        cpu="2",
        memory="4Gi",
    )
    objects = build(
        spec,
        token="token-value",
        namespace=NAMESPACE,
        broker="vwm",
        sessions=KnativeSessionSettings(harness_image=HARNESS_IMAGE, storage_class="fast-ssd"),
    )

    assert knative_rules.cluster_service_problems(objects.service) == []
    assert knative_rules.trigger_problems(objects.trigger) == []
    assert k8s_schema.core_problems(objects.secret) == []
    assert k8s_schema.core_problems(objects.volume) == []
    # Secrets only in the Secret, never in the Service (readable by more people).
    service_text = json.dumps(objects.service)
    assert "sk-secret-value" not in service_text
    assert "token-value" not in service_text
    assert objects.secret["stringData"]["VWM_PROVIDER_API_KEY"] == "sk-secret-value"


def test_the_service_runs_one_pod_on_its_volume_and_scales_to_zero(make_spec) -> None:
    sessions = KnativeSessionSettings(
        harness_image=HARNESS_IMAGE, request_timeout_s=7200, idle_pod_s=120, cpu="3"
    )
    objects = build(
        spec_for(make_spec, "s-shape", image="registry.example/custom-harness:2"),
        token="t",
        namespace=NAMESPACE,
        broker="vwm",
        sessions=sessions,
    )
    template = objects.service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/max-scale"] == "1"
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "120s"
    assert template["spec"]["timeoutSeconds"] == 7200
    container = template["spec"]["containers"][0]
    assert container["image"] == "registry.example/custom-harness:2"  # the runtime's image
    assert container["resources"]["limits"]["cpu"] == "3"
    assert container["volumeMounts"] == [{"name": "workspace", "mountPath": "/workspace"}]
    claim = template["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == objects.volume["metadata"]["name"]
    assert objects.volume["spec"]["accessModes"] == ["ReadWriteOnce"]
    labels = objects.service["metadata"]["labels"]
    assert labels["vwm.dev/session"] == "s-shape"
    assert labels["vwm.dev/worker"] == "reviewer"
    assert labels["networking.knative.dev/visibility"] == "cluster-local"
    filters = objects.trigger["spec"]["filters"]
    assert {"exact": {"type": "dev.vwm.prompt.requested", "sessionid": "s-shape"}} in filters
    assert objects.trigger["spec"]["delivery"]["timeout"] == "PT7200S"


# -- provision, ready, endpoint ----------------------------------------------------------------


async def test_provision_makes_the_four_objects_and_the_endpoint_is_the_status_address(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    spec = spec_for(make_spec, "s-objects", credential_env={"VWM_PROVIDER_API_KEY": "sk-x"})
    handle = await backend.provision(spec)
    endpoint = await backend.wait_ready(handle, READY_S)

    names = SessionNames.of("s-objects")
    service = cluster.api.objects(SERVICES, NAMESPACE)[names.service]
    assert endpoint.url == service["status"]["address"]["url"]
    assert backend.endpoint(handle) == endpoint
    assert names.volume in cluster.api.objects(PVCS, NAMESPACE)
    assert names.secret in cluster.api.objects(SECRET_KIND, NAMESPACE)
    assert names.trigger in cluster.api.objects(TRIGGER_KIND, NAMESPACE)
    # The harness got its token and the key from the Secret.
    assert endpoint.token == cluster.token_key.token("s-objects")
    await backend.teardown(handle)


async def test_a_leftover_service_of_the_same_name_is_replaced_not_patched(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    names = SessionNames.of("s-leftover")
    leftover = build(
        spec_for(make_spec, "s-leftover", cli="bogus"),
        token="t",
        namespace=NAMESPACE,
        broker="vwm",
        sessions=backend.sessions,
    ).service
    await backend.api.create(KNATIVE_SERVICES, NAMESPACE, leftover)

    handle = await backend.provision(spec_for(make_spec, "s-leftover"))
    await backend.wait_ready(handle, READY_S)

    service_puts = [
        path
        for method, path in cluster.api.requests
        if method in ("PUT", "PATCH") and "/services/" in path
    ]
    assert service_puts == []
    assert cluster.serving.revisions_of(names.service) == 2  # deleted, then created anew
    assert cluster.serving.overlaps == []
    await backend.teardown(handle)


async def test_a_session_whose_volume_exists_is_not_provisioned_again(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    handle = await backend.provision(spec_for(make_spec, "s-twice"))
    with pytest.raises(SessionExists):
        await backend.provision(spec_for(make_spec, "s-twice"))
    await backend.teardown(handle)


async def test_an_api_server_error_is_retried(cluster: Cluster, make_spec) -> None:
    backend = cluster.backend()
    cluster.api.faults.extend([500, 503])  # the next two requests fail

    handle = await backend.provision(spec_for(make_spec, "s-flaky"))

    assert await backend.status(handle) == "running"
    await backend.teardown(handle)


async def test_an_api_server_that_keeps_failing_is_a_retryable_error(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    cluster.api.faults.extend([503] * 10)

    with pytest.raises(RuntimeBackendError) as caught:
        await backend.provision(spec_for(make_spec, "s-down"))

    assert caught.value.retryable
    assert caught.value.status == 503
    assert "kubernetes" in str(caught.value).lower()
    cluster.api.faults.clear()


async def test_ready_that_never_comes_times_out_with_the_last_reason(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    names = SessionNames.of("s-held")
    cluster.serving.hold(names.service)
    handle = await backend.provision(spec_for(make_spec, "s-held"))

    started = time.monotonic()
    with pytest.raises(HarnessNotReady) as caught:
        await backend.wait_ready(handle, 2.0)

    assert time.monotonic() - started < 10
    assert "RevisionMissing" in str(caught.value)
    assert caught.value.retryable
    await backend.teardown(handle)


async def test_a_failed_service_reports_its_condition_reason_and_message(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    names = SessionNames.of("s-refused")
    cluster.serving.refuse(names.service, "ContainerMissing", "Unable to fetch image")
    handle = await backend.provision(spec_for(make_spec, "s-refused"))

    with pytest.raises(HarnessStartFailed) as caught:
        await backend.wait_ready(handle, READY_S)

    assert "ContainerMissing" in str(caught.value)
    assert "Unable to fetch image" in str(caught.value)
    assert await backend.status(handle) == "stopped"
    await backend.teardown(handle)


# -- never patched -----------------------------------------------------------------------------


async def test_a_running_session_template_is_never_changed(cluster: Cluster, make_spec) -> None:
    backend = cluster.backend()
    spec = spec_for(make_spec, "s-stable")
    handle = await backend.provision(spec)
    await backend.wait_ready(handle, READY_S)

    # A prompt's relaunch check, a restarted control plane, a changed setting: no new revision.
    await backend.ensure_running(handle, spec)
    changed = spec_for(make_spec, "s-stable", extra_env={"VWM_PRICES": "{}"})
    await cluster.backend(cpu="4").ensure_running(handle, changed)

    names = SessionNames.of("s-stable")
    assert cluster.serving.revisions_of(names.service) == 1
    assert cluster.serving.pods_of(names.service) == 1
    await backend.teardown(handle)


async def test_a_pod_crash_is_knatives_to_restart_on_the_same_address(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    handle = await backend.provision(spec_for(make_spec, "s-pod"))
    endpoint = await backend.wait_ready(handle, READY_S)
    names = SessionNames.of("s-pod")

    cluster.serving.kill_pod(names.service)

    assert await backend.status(handle) == "running"  # the Service is there: not ours to fix
    assert await backend.wait_ready(handle, READY_S) == endpoint
    assert cluster.serving.revisions_of(names.service) == 1
    await backend.teardown(handle)


# -- teardown and retention --------------------------------------------------------------------


@pytest.mark.parametrize(("retention", "kept"), [("delete", False), ("keep", True)])
async def test_teardown_keeps_the_volume_only_when_retention_says_so(
    cluster: Cluster, make_spec, retention: str, kept: bool
) -> None:
    backend = cluster.backend(volume_retention=retention)
    handle = await backend.provision(spec_for(make_spec, f"s-{retention}"))
    await backend.wait_ready(handle, READY_S)
    names = SessionNames.of(f"s-{retention}")

    await backend.teardown(handle)
    await backend.teardown(handle)  # idempotent

    assert (names.volume in cluster.api.objects(PVCS, NAMESPACE)) is kept
    assert names.service not in cluster.api.objects(SERVICES, NAMESPACE)
    assert names.secret not in cluster.api.objects(SECRET_KIND, NAMESPACE)
    assert names.trigger not in cluster.api.objects(TRIGGER_KIND, NAMESPACE)


async def test_teardown_returns_once_the_pod_is_gone_so_a_relaunch_never_shares_the_volume(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    spec = spec_for(make_spec, "s-handover")
    handle = await backend.provision(spec)
    await backend.wait_ready(handle, READY_S)
    names = SessionNames.of("s-handover")
    pid = cluster.serving.pid_of(names.service, NAMESPACE)
    assert pid is not None

    await backend.teardown(handle, keep_workspace=True)

    # Deleted in the foreground and waited for: the pod has stopped, not merely been told to.
    assert cluster.serving.pid_of(names.service, NAMESPACE) is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert names.service not in cluster.api.objects(SERVICES, NAMESPACE)
    handle = await backend.ensure_running(handle, spec)
    await backend.wait_ready(handle, READY_S)
    assert cluster.serving.overlaps == []  # never two pods on the ReadWriteOnce claim
    await backend.teardown(handle)


# -- sweep -------------------------------------------------------------------------------------


async def test_sweep_removes_what_no_live_session_owns_and_leaves_volumes(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    live = await backend.provision(spec_for(make_spec, "s-live"))
    orphan = await backend.provision(spec_for(make_spec, "s-orphan"))
    # Something that is not ours, in the same namespace, is never touched.
    await backend.api.create(
        SECRETS,
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-ours"}},
    )

    stopped = await backend.sweep(owned_among({"s-live"}))

    assert stopped == ["s-orphan"]
    orphan_names, live_names = SessionNames.of("s-orphan"), SessionNames.of("s-live")

    # Deleted in the foreground: gone once its pod has stopped.
    async def orphan_service_exists() -> bool:
        return orphan_names.service in cluster.api.objects(SERVICES, NAMESPACE)

    await eventually(orphan_service_exists, False)
    assert cluster.serving.pid_of(orphan_names.service, NAMESPACE) is None
    assert live_names.service in cluster.api.objects(SERVICES, NAMESPACE)
    assert orphan_names.trigger not in cluster.api.objects(TRIGGER_KIND, NAMESPACE)
    assert orphan_names.secret not in cluster.api.objects(SECRET_KIND, NAMESPACE)
    assert "not-ours" in cluster.api.objects(SECRET_KIND, NAMESPACE)
    assert orphan_names.volume in cluster.api.objects(PVCS, NAMESPACE)
    assert await backend.volumes() == {
        "s-live": live_names.volume,
        "s-orphan": orphan_names.volume,
    }
    assert await backend.sweep(owned_among({"s-live"})) == []  # nothing left to do
    await backend.teardown(live)
    await backend.teardown(orphan)


@pytest.mark.parametrize(("retention", "removed"), [("delete", True), ("keep", False)])
async def test_volumes_are_listed_and_removed_as_the_retention_allows(
    cluster: Cluster, make_spec, retention: str, removed: bool
) -> None:
    backend = cluster.backend(volume_retention=retention)
    ended = await backend.provision(spec_for(make_spec, f"s-ended-{retention}"))
    await backend.teardown(ended, keep_workspace=True)  # an end cut short: its volume is left
    live = await backend.provision(spec_for(make_spec, f"s-live-{retention}"))
    volumes = await backend.volumes()
    assert set(volumes) == {f"s-ended-{retention}", f"s-live-{retention}"}

    gone = await backend.remove_volumes([f"s-ended-{retention}"])

    assert gone == ([f"s-ended-{retention}"] if removed else [])
    left = cluster.api.objects(PVCS, NAMESPACE)
    assert (SessionNames.of(f"s-ended-{retention}").volume not in left) is removed
    assert SessionNames.of(f"s-live-{retention}").volume in left  # not asked: never touched
    assert await backend.remove_volumes([f"s-ended-{retention}"]) == gone  # idempotent
    await backend.teardown(live)
