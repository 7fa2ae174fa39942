"""`/v1/subscriptions` with ``VWM_EVENTING=knative``: a real control plane (`vwm up`'s process)
whose `functions.kube` talks to a fake Kubernetes API server (``VWM_KUBE_API_URL``). Creating
a subscription makes its Trigger, deleting removes it, and when the API server fails the
subscription is not kept and the client gets the error body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.control_plane import ControlPlane
from tests.support.fake_kube_api import FakeKubeApi, Kind, serving, unused_url
from tests.support.k8s_schema import trigger_problems

TRIGGER = Kind("eventing.knative.dev", "v1", "triggers", "Trigger", validate=trigger_problems)
NAMESPACE = "vwm-events"
BODY = {
    "name": "watcher",
    "filters": [{"exact": {"type": "dev.vwm.job.output"}}],
    "sink": "https://hooks.example.com/vwm",
    "delivery": {"retry": 3, "deadLetterSink": "https://hooks.example.com/dead"},
}


def knative_plane(data: Path, api_url: str) -> ControlPlane:
    return ControlPlane(
        data,
        {
            "VWM_EVENTING": "knative",
            "VWM_KNATIVE_NAMESPACE": NAMESPACE,
            "VWM_KNATIVE_BROKER": "vwm",
            "VWM_KUBE_API_URL": api_url,
        },
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeKubeApi, str]]:
    api = FakeKubeApi(kinds=[TRIGGER], namespaces={NAMESPACE})
    with serving(api) as url:
        yield api, url


@pytest.fixture(scope="module")
def plane(
    fake: tuple[FakeKubeApi, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    plane = knative_plane(tmp_path_factory.mktemp("knative") / "data", fake[1])
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture
def client(plane: ControlPlane, fake: tuple[FakeKubeApi, str]) -> Iterator[httpx.Client]:
    with plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "subscriber", "scope": "client"})
        assert created.status_code == 201, created.text
    with plane.client(created.json()["key"]) as client:
        yield client
        for item in client.get("/v1/subscriptions").json()["items"]:
            client.delete(f"/v1/subscriptions/{item['name']}")
    fake[0].faults.clear()


def triggers(fake: tuple[FakeKubeApi, str]) -> dict[str, dict[str, Any]]:
    return fake[0].objects(TRIGGER, NAMESPACE)


def names(client: httpx.Client) -> list[str]:
    return [item["name"] for item in client.get("/v1/subscriptions").json()["items"]]


def test_create_makes_the_trigger_and_delete_removes_it(
    client: httpx.Client, fake: tuple[FakeKubeApi, str]
) -> None:
    created = client.post("/v1/subscriptions", json=BODY)
    assert created.status_code == 201, created.text
    trigger = triggers(fake)["vwm-sub-watcher"]
    assert trigger_problems(trigger) == []
    assert trigger["metadata"]["labels"]["vwm.dev/subscription"] == "watcher"
    assert trigger["spec"] == {
        "broker": "vwm",
        "filters": BODY["filters"],
        "subscriber": {"uri": BODY["sink"]},
        "delivery": {"retry": 3, "deadLetterSink": {"uri": "https://hooks.example.com/dead"}},
    }
    assert client.post("/v1/subscriptions", json=BODY).status_code == 409
    assert len(triggers(fake)) == 1

    assert client.delete("/v1/subscriptions/watcher").status_code == 204
    assert triggers(fake) == {}
    assert names(client) == []
    assert client.delete("/v1/subscriptions/watcher").status_code == 404


def test_a_trigger_already_gone_does_not_stop_a_delete(
    client: httpx.Client, fake: tuple[FakeKubeApi, str]
) -> None:
    assert client.post("/v1/subscriptions", json=BODY).status_code == 201
    with httpx.Client(base_url=fake[1]) as kube:
        gone = kube.delete(
            f"/apis/eventing.knative.dev/v1/namespaces/{NAMESPACE}/triggers/vwm-sub-watcher"
        )
        assert gone.status_code == 200
    assert client.delete("/v1/subscriptions/watcher").status_code == 204
    assert names(client) == []


def test_an_api_server_failing_for_a_while_is_retried(
    client: httpx.Client, fake: tuple[FakeKubeApi, str]
) -> None:
    fake[0].faults.extend([503, 500])
    created = client.post("/v1/subscriptions", json=BODY)
    assert created.status_code == 201, created.text
    assert "vwm-sub-watcher" in triggers(fake)


def test_an_api_server_failing_throughout_leaves_no_subscription(
    client: httpx.Client, fake: tuple[FakeKubeApi, str]
) -> None:
    fake[0].faults.extend([503] * 20)
    refused = client.post("/v1/subscriptions", json=BODY)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "kubernetes_unavailable"
    assert "Traceback" not in refused.text
    fake[0].faults.clear()
    assert names(client) == []
    assert triggers(fake) == {}
    # The name is free again: the same call succeeds once the API server is back.
    assert client.post("/v1/subscriptions", json=BODY).status_code == 201


def test_a_delete_the_api_server_refuses_keeps_the_subscription(
    client: httpx.Client, fake: tuple[FakeKubeApi, str]
) -> None:
    assert client.post("/v1/subscriptions", json=BODY).status_code == 201
    fake[0].faults.extend([503] * 20)
    refused = client.delete("/v1/subscriptions/watcher")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "kubernetes_unavailable"
    fake[0].faults.clear()
    assert names(client) == ["watcher"]
    assert "vwm-sub-watcher" in triggers(fake)


def test_an_api_server_that_is_down_gives_503_and_keeps_nothing(tmp_path: Path) -> None:
    plane = knative_plane(tmp_path / "data", unused_url())
    plane.start()
    try:
        with plane.client() as admin:
            refused = admin.post("/v1/subscriptions", json=BODY)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "kubernetes_unavailable"
            assert "did not answer" in error["message"]
            assert admin.get("/v1/subscriptions").json()["items"] == []
    finally:
        plane.stop()


def test_a_failed_create_deletes_a_trigger_it_may_have_made(
    client: httpx.Client, fake: tuple[FakeKubeApi, str]
) -> None:
    """A Trigger of the name is there (as when a create's answer was lost) and every try of
    the create fails: the undo deletes it with the row, so nothing delivers for a subscription
    that does not exist."""
    fake[0].put(
        TRIGGER,
        NAMESPACE,
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": "vwm-sub-watcher"},
            "spec": {"broker": "vwm", "subscriber": {"uri": BODY["sink"]}},
        },
    )
    fake[0].faults.extend([503] * 4)  # every try of the create; the undo's delete gets through
    refused = client.post("/v1/subscriptions", json=BODY)
    assert refused.status_code == 503, refused.text
    assert names(client) == []
    assert triggers(fake) == {}
