"""The fake Kubernetes API (tests/support/fake_kube_api.py) for core kinds, patches, the status
subresource and change callbacks, through the real `kubernetes` client."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.fake_kube_api import Change, FakeKubeApi, Kind, merge_patch
from tests.support_tests.conftest import NAMESPACE, Cluster

PVC = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SECRET = Kind("", "v1", "secrets", "Secret")
SERVICE = Kind("serving.knative.dev", "v1", "services", "Service")
MERGE = "application/merge-patch+json"


def pvc(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


@pytest.fixture
def core(cluster: Cluster) -> client.CoreV1Api:
    cluster.fake.register(PVC, SECRET, SERVICE)
    return cluster.core


def test_core_kinds_create_read_list_replace_patch_delete(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_persistent_volume_claim(NAMESPACE, pvc("work-a", app="vwm"))
    core.create_namespaced_persistent_volume_claim(NAMESPACE, pvc("work-b"))
    with pytest.raises(ApiException) as duplicate:
        core.create_namespaced_persistent_volume_claim(NAMESPACE, pvc("work-a"))
    assert (duplicate.value.status, duplicate.value.reason) == (409, "Conflict")

    assert created.metadata.uid and created.metadata.resource_version
    read = core.read_namespaced_persistent_volume_claim("work-a", NAMESPACE)
    assert read.spec.resources.requests == {"storage": "1Gi"}
    listed = core.list_namespaced_persistent_volume_claim(NAMESPACE, label_selector="app=vwm")
    assert [item.metadata.name for item in listed.items] == ["work-a"]

    body = core.api_client.sanitize_for_serialization(read)
    body["spec"]["resources"]["requests"]["storage"] = "2Gi"
    replaced = core.replace_namespaced_persistent_volume_claim("work-a", NAMESPACE, body)
    assert replaced.metadata.resource_version != read.metadata.resource_version
    assert replaced.metadata.generation == 2
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_persistent_volume_claim("work-a", NAMESPACE, body)
    assert stale.value.status == 409

    patch = {"metadata": {"labels": {"app": None, "tier": "hot"}}}
    patched = core.patch_namespaced_persistent_volume_claim(
        "work-a", NAMESPACE, patch, _content_type=MERGE
    )
    assert patched.metadata.labels == {"tier": "hot"}
    json_patched = core.patch_namespaced_persistent_volume_claim(
        "work-a", NAMESPACE, [{"op": "replace", "path": "/metadata/labels/tier", "value": "cold"}]
    )
    assert json_patched.metadata.labels == {"tier": "cold"}
    strategic = core.patch_namespaced_persistent_volume_claim(  # the client's default for a map
        "work-a", NAMESPACE, {"metadata": {"labels": {"tier": "warm"}}}
    )
    assert strategic.metadata.labels == {"tier": "warm"}

    options = client.V1DeleteOptions(propagation_policy="Foreground")
    deleted = core.delete_namespaced_persistent_volume_claim("work-a", NAMESPACE, body=options)
    assert deleted.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_persistent_volume_claim("work-a", NAMESPACE)
    assert gone.value.status == 404
    with pytest.raises(ApiException) as wrong_version:
        core.create_namespaced_persistent_volume_claim(
            NAMESPACE, {**pvc("work-c"), "apiVersion": "core/v1"}
        )
    assert wrong_version.value.status == 400


def test_a_secrets_string_data_is_stored_as_base64_data(
    core: client.CoreV1Api, cluster: Cluster
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "keys"},
        "data": {"old": base64.b64encode(b"kept").decode()},
        "stringData": {"api-key": "s3cret"},
    }
    created = core.create_namespaced_secret(NAMESPACE, body)

    assert created.data == {"old": "a2VwdA==", "api-key": base64.b64encode(b"s3cret").decode()}
    assert created.string_data is None and created.type == "Opaque"
    stored = cluster.fake.get(SECRET, NAMESPACE, "keys") or {}
    assert "stringData" not in stored
    patched = core.patch_namespaced_secret(
        "keys", NAMESPACE, {"stringData": {"api-key": "rotated"}}, _content_type=MERGE
    )
    assert base64.b64decode(patched.data["api-key"]) == b"rotated"
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_secret(
            NAMESPACE, {**body, "metadata": {"name": "bad"}, "data": {"k": "%%%"}}
        )
    assert invalid.value.status == 422


def test_the_status_subresource_is_written_apart_from_the_object(
    core: client.CoreV1Api, cluster: Cluster
) -> None:
    custom = cluster.custom
    args = ("serving.knative.dev", "v1", NAMESPACE, "services")
    service = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "s-1"},
        "spec": {"template": {}},
        "status": {"url": "http://ignored"},
    }
    created = custom.create_namespaced_custom_object(*args, service)
    created["status"] = {"url": "http://127.0.0.1:1"}
    written = custom.replace_namespaced_custom_object_status(*args, "s-1", created)
    assert written["status"] == {"url": "http://127.0.0.1:1"}

    written["status"] = {"url": "http://changed"}
    written["metadata"]["labels"] = {"a": "b"}
    replaced = custom.replace_namespaced_custom_object(*args, "s-1", written)
    assert replaced["status"] == {"url": "http://127.0.0.1:1"}  # a PUT of the object keeps it
    with pytest.raises(ApiException) as strategic:  # custom kinds take no strategic merge
        custom.patch_namespaced_custom_object(
            *args, "s-1", {"metadata": {"labels": {"a": "c"}}},
            _content_type="application/strategic-merge-patch+json",
        )  # fmt: skip
    assert strategic.value.status == 415
    patched = custom.patch_namespaced_custom_object_status(
        *args, "s-1", {"status": {"observedGeneration": 1}}
    )
    assert patched["status"] == {"url": "http://127.0.0.1:1", "observedGeneration": 1}
    assert patched["metadata"]["labels"] == {"a": "b"}
    cluster.fake.set_status(SERVICE, NAMESPACE, "s-1", {"url": "http://set"})
    assert custom.get_namespaced_custom_object(*args, "s-1")["status"] == {"url": "http://set"}


def test_change_callbacks_see_every_write_in_order_and_may_write_back(
    core: client.CoreV1Api, cluster: Cluster
) -> None:
    seen: list[tuple[str, str, str]] = []

    def controller(change: Change) -> None:
        seen.append((change.verb, change.kind.kind, change.name))
        if change.kind == PVC and change.verb == "create":  # a controller binding the claim
            cluster.fake.set_status(PVC, change.namespace, change.name, {"phase": "Bound"})

    def broken(change: Change) -> None:
        raise RuntimeError("an observer with a bug")

    cluster.fake.on_change(broken)
    cluster.fake.on_change(controller)
    core.create_namespaced_persistent_volume_claim(NAMESPACE, pvc("work-a"))
    core.patch_namespaced_persistent_volume_claim(
        "work-a", NAMESPACE, {"metadata": {"labels": {"x": "y"}}}, _content_type=MERGE
    )
    core.delete_namespaced_persistent_volume_claim("work-a", NAMESPACE)

    assert seen == [
        ("create", "PersistentVolumeClaim", "work-a"),
        ("status", "PersistentVolumeClaim", "work-a"),
        ("patch", "PersistentVolumeClaim", "work-a"),
        ("delete", "PersistentVolumeClaim", "work-a"),
    ]
    with pytest.raises(ApiException):
        core.read_namespaced_persistent_volume_claim("work-a", NAMESPACE)


def test_a_failed_write_is_no_change(core: client.CoreV1Api, cluster: Cluster) -> None:
    seen: list[Change] = []
    cluster.fake.on_change(seen.append)
    cluster.fake.faults.append(503)
    with pytest.raises(ApiException):
        core.create_namespaced_persistent_volume_claim(NAMESPACE, pvc("work-a"))
    with pytest.raises(ApiException):
        core.delete_namespaced_persistent_volume_claim("work-a", NAMESPACE)
    assert seen == []


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": None, "y": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"y": 1}}
    assert FakeKubeApi().find_kind("", "v1", "secrets") is None


def knative_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name}}


def test_a_foreground_deletion_holds_an_owner_until_its_controller_finishes_it(
    core: client.CoreV1Api, cluster: Cluster
) -> None:
    cluster.fake.owners.add(SERVICE.resource)
    seen: list[str] = []
    cluster.fake.on_change(lambda change: seen.append(change.verb))
    custom = cluster.custom
    args = ("serving.knative.dev", "v1", NAMESPACE, "services")
    created = custom.create_namespaced_custom_object(*args, knative_service("held"))
    uid = created["metadata"]["uid"]

    answer = custom.delete_namespaced_custom_object(
        *args, "held", body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    assert answer["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in answer["metadata"]["finalizers"]
    terminating = custom.get_namespaced_custom_object(*args, "held")
    assert terminating["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as taken:  # the name is not free while it terminates
        custom.create_namespaced_custom_object(*args, knative_service("held"))
    assert taken.value.status == 409
    again = custom.delete_namespaced_custom_object(  # deleting again changes nothing
        *args, "held", body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    assert again["metadata"]["resourceVersion"] == answer["metadata"]["resourceVersion"]

    cluster.fake.finish_deletion(SERVICE, NAMESPACE, "held", "another-uid")  # not that object
    assert cluster.fake.get(SERVICE, NAMESPACE, "held") is not None
    cluster.fake.finish_deletion(SERVICE, NAMESPACE, "held", uid)
    assert cluster.fake.get(SERVICE, NAMESPACE, "held") is None
    assert seen == ["create", "terminating", "delete"]


def test_a_background_deletion_or_one_of_a_kind_without_dependents_is_at_once(
    core: client.CoreV1Api, cluster: Cluster
) -> None:
    custom = cluster.custom
    args = ("serving.knative.dev", "v1", NAMESPACE, "services")
    custom.create_namespaced_custom_object(*args, knative_service("quick"))
    # Services are not in `owners` here: no controller would ever finish a foreground deletion.
    custom.delete_namespaced_custom_object(
        *args, "quick", body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    assert cluster.fake.get(SERVICE, NAMESPACE, "quick") is None

    cluster.fake.owners.add(SERVICE.resource)
    custom.create_namespaced_custom_object(*args, knative_service("quick"))
    custom.delete_namespaced_custom_object(
        *args, "quick", body=client.V1DeleteOptions(propagation_policy="Background")
    )
    assert cluster.fake.get(SERVICE, NAMESPACE, "quick") is None
