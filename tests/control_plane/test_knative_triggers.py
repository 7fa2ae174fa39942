"""User subscriptions as Knative Triggers (`functions.broker.knative_triggers`) over
`functions.kube`, with the real `kubernetes` client against a fake API server on a socket
(tests/support/fake_kube_api.py). Every Trigger stored is checked against Knative Eventing
v1.22.2's Trigger schema, made strict, and its webhook's required fields."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.client import Configuration

from functions.broker.knative_triggers import (
    MANAGED_BY_LABEL,
    SUBSCRIPTION_ANNOTATION,
    SUBSCRIPTION_LABEL,
    TRIGGERS,
    SubscriptionTriggers,
    subscription_label,
    trigger_name,
)
from functions.kube import (
    KubeApi,
    KubeConflict,
    KubeNotFound,
    KubernetesRefused,
    KubernetesUnavailable,
    load_configuration,
)
from tests.support.fake_kube_api import FakeKubeApi, Kind, serving, unused_url
from tests.support.k8s_schema import trigger_problems
from tests.support.raw_server import raw_server

TRIGGER = Kind("eventing.knative.dev", "v1", "triggers", "Trigger", validate=trigger_problems)
NAMESPACE = "vwm"
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@dataclass(frozen=True)
class Sub:
    name: str
    filters: list[Any]
    sink: str
    delivery: dict[str, Any] | None = None


@dataclass
class Cluster:
    fake: FakeKubeApi
    url: str

    def api(self, **options: Any) -> KubeApi:
        return KubeApi(Configuration(host=self.url), **{"first_delay_s": 0.01, **options})

    def triggers(self, **options: Any) -> SubscriptionTriggers:
        return SubscriptionTriggers(self.api(**options), NAMESPACE, "events")

    def stored(self) -> dict[str, dict[str, Any]]:
        return self.fake.objects(TRIGGER, NAMESPACE)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    fake = FakeKubeApi(kinds=[TRIGGER], namespaces={"default", NAMESPACE})
    with serving(fake) as url:
        yield Cluster(fake, url)


WATCHER = Sub(
    "watcher",
    [{"exact": {"type": "dev.vwm.job.output"}}, {"prefix": {"sessionid": "s-"}}],
    "https://hooks.example.com/vwm",
    {
        "retry": 3,
        "backoffPolicy": "exponential",
        "backoffDelay": "PT0.5S",
        "timeout": "PT10S",
        "deadLetterSink": "https://hooks.example.com/dead",
    },
)


# Names


def test_a_plain_name_keeps_its_readable_form() -> None:
    assert trigger_name("watcher") == "vwm-sub-watcher"
    assert trigger_name("ci-watch-2") == "vwm-sub-ci-watch-2"
    assert subscription_label("watcher") == "watcher"


ODD_NAMES = [
    "x" * 55,
    "x" * 56,
    "x" * 63,
    "x" * 300,
    "x" * 56 + "a",
    "x" * 56 + "b",
    "Watcher",
    "watcher_",
    "WATCHER",
    "wätcher",
    "a.b",
    "a_b",
    "a-b",
    "a--b",
    "-",
    "--",
    "",
    "0",
    "9lives",
    "trailing-",
    "ünïcödé",
    "...",
    "a" * 40 + "-0123456789abcdef",
    "vwm-sub-x",
]


def test_odd_and_long_names_give_valid_distinct_trigger_names() -> None:
    names = [trigger_name(name) for name in ODD_NAMES]
    for original, name in zip(ODD_NAMES, names, strict=True):
        assert len(name) <= 63, (original, name)
        assert DNS_1035.fullmatch(name), (original, name)
        assert name.startswith("vwm-sub"), (original, name)
    assert len(set(names)) == len(names), names
    labels = [subscription_label(name) for name in ODD_NAMES]
    for label in labels:
        assert len(label) <= 63 and LABEL_VALUE.fullmatch(label), label


def test_a_plain_name_never_equals_another_names_hashed_form() -> None:
    """A long name is cut and hashed; a short name written to look like that result is
    hashed as well, so it cannot take over the long name's Trigger."""
    long_name = "a" * 60
    hashed = trigger_name(long_name)
    assert hashed != f"vwm-sub-{long_name}"
    look_alike = hashed.removeprefix("vwm-sub-")
    assert len(look_alike) <= 63
    assert trigger_name(look_alike) != hashed
    assert trigger_name("Watcher") != trigger_name("watcher")


# Trigger bodies, against the fake API server


async def test_apply_creates_a_schema_valid_trigger_with_the_subscriptions_spec(
    cluster: Cluster,
) -> None:
    await cluster.triggers().apply(WATCHER)
    stored = cluster.stored()
    assert list(stored) == ["vwm-sub-watcher"]
    trigger = stored["vwm-sub-watcher"]
    assert trigger_problems(trigger) == []
    assert trigger["apiVersion"] == "eventing.knative.dev/v1"
    assert trigger["kind"] == "Trigger"
    assert trigger["metadata"]["labels"] == {
        MANAGED_BY_LABEL: "vwm",
        SUBSCRIPTION_LABEL: "watcher",
    }
    assert trigger["metadata"]["annotations"] == {SUBSCRIPTION_ANNOTATION: "watcher"}
    assert trigger["spec"] == {
        "broker": "events",
        "filters": WATCHER.filters,
        "subscriber": {"uri": WATCHER.sink},
        "delivery": {
            **(WATCHER.delivery or {}),
            "deadLetterSink": {"uri": "https://hooks.example.com/dead"},
        },
    }


async def test_no_delivery_spec_leaves_the_brokers(cluster: Cluster) -> None:
    await cluster.triggers().apply(Sub("plain", [], "https://example.com/"))
    trigger = cluster.stored()["vwm-sub-plain"]
    assert trigger_problems(trigger) == []
    assert "delivery" not in trigger["spec"]
    assert trigger["spec"]["filters"] == []


async def test_apply_replaces_a_trigger_left_with_the_same_name(cluster: Cluster) -> None:
    triggers = cluster.triggers()
    await triggers.apply(Sub("watcher", [], "https://old.example.com/"))
    before = cluster.stored()["vwm-sub-watcher"]
    await triggers.apply(WATCHER)
    after = cluster.stored()["vwm-sub-watcher"]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] == 2
    assert after["spec"]["subscriber"] == {"uri": WATCHER.sink}
    assert trigger_problems(after) == []


async def test_long_and_odd_names_make_triggers_the_api_server_accepts(cluster: Cluster) -> None:
    triggers = cluster.triggers()
    for name in ("x" * 63, "Watcher", "watcher", "a_b.c", "x" * 56 + "a", "x" * 56 + "b"):
        await triggers.apply(Sub(name, [], "https://example.com/"))
    stored = cluster.stored()
    assert len(stored) == 6
    annotated = {t["metadata"]["annotations"][SUBSCRIPTION_ANNOTATION] for t in stored.values()}
    assert annotated == {"x" * 63, "Watcher", "watcher", "a_b.c", "x" * 56 + "a", "x" * 56 + "b"}
    for trigger in stored.values():
        assert trigger_problems(trigger) == []


async def test_delete_removes_the_trigger_and_a_second_delete_is_fine(cluster: Cluster) -> None:
    triggers = cluster.triggers()
    await triggers.apply(WATCHER)
    await triggers.delete("watcher")
    assert cluster.stored() == {}
    await triggers.delete("watcher")
    await triggers.delete("never-made")


async def test_list_returns_only_the_triggers_vwm_made(cluster: Cluster) -> None:
    triggers = cluster.triggers()
    await triggers.apply(WATCHER)
    await triggers.apply(Sub("other", [], "https://example.com/"))
    cluster.fake.put(
        TRIGGER,
        NAMESPACE,
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": {"name": "someone-elses", "labels": {MANAGED_BY_LABEL: "helm"}},
            "spec": {"broker": "events", "subscriber": {"uri": "https://example.com/"}},
        },
    )
    names = sorted(t["metadata"]["name"] for t in await triggers.list())
    assert names == ["vwm-sub-other", "vwm-sub-watcher"]


# The API server failing


async def test_5xx_and_429_for_a_while_are_retried_then_succeed(cluster: Cluster) -> None:
    cluster.fake.faults.extend([503, 500, 429])
    await cluster.triggers(attempts=4).apply(WATCHER)
    assert "vwm-sub-watcher" in cluster.stored()
    posts = [path for method, path in cluster.fake.requests if method == "POST"]
    assert len(posts) == 4


async def test_5xx_through_every_attempt_is_kubernetes_unavailable(cluster: Cluster) -> None:
    cluster.fake.faults.extend([503] * 3)
    with pytest.raises(KubernetesUnavailable) as caught:
        await cluster.triggers(attempts=3).apply(WATCHER)
    error = caught.value
    assert (error.code, error.status, error.retryable) == ("kubernetes_unavailable", 503, True)
    assert "503" in error.message and "ServiceUnavailable" in error.message
    assert "check that the API server is up" in error.message
    assert cluster.stored() == {}
    assert len(cluster.fake.requests) == 3


async def test_an_api_server_that_is_down_is_kubernetes_unavailable() -> None:
    url = unused_url()
    api = KubeApi(Configuration(host=url), attempts=2, first_delay_s=0.01)
    with pytest.raises(KubernetesUnavailable) as caught:
        await SubscriptionTriggers(api, NAMESPACE, "events").apply(WATCHER)
    assert url in caught.value.message
    assert "did not answer" in caught.value.message


async def test_a_refusal_is_not_retried_and_says_what_to_check(cluster: Cluster) -> None:
    cluster.fake.faults.append(403)
    with pytest.raises(KubernetesRefused) as caught:
        await cluster.triggers().apply(WATCHER)
    assert caught.value.status == 502
    assert "Forbidden" in caught.value.message and "Role" in caught.value.message
    assert len(cluster.fake.requests) == 1


async def test_a_missing_namespace_or_knative_says_so(cluster: Cluster) -> None:
    api = cluster.api()
    with pytest.raises(KubernetesRefused) as caught:
        await SubscriptionTriggers(api, "nowhere", "events").apply(WATCHER)
    assert "'nowhere'" in caught.value.message and "Knative Eventing" in caught.value.message
    cluster.fake.kinds.clear()  # the Trigger CRD is not installed
    with pytest.raises(KubernetesRefused) as caught:
        await cluster.triggers().apply(WATCHER)
    assert "could not find the requested resource" in caught.value.message


# The kube wrapper on its own


async def test_not_found_and_conflict_are_their_own_errors(cluster: Cluster) -> None:
    api = cluster.api()
    body = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t"},
        "spec": {"broker": "events", "subscriber": {"uri": "https://example.com/"}},
    }
    made = await api.create(TRIGGERS, NAMESPACE, body)
    assert made["metadata"]["resourceVersion"]
    with pytest.raises(KubeConflict) as conflict:
        await api.create(TRIGGERS, NAMESPACE, body)
    assert conflict.value.details["reason"] == "AlreadyExists"
    stale = {**body, "metadata": {"name": "t", "resourceVersion": "stale"}}
    with pytest.raises(KubeConflict):
        await api.replace(TRIGGERS, NAMESPACE, "t", stale)
    assert (await api.get(TRIGGERS, NAMESPACE, "t"))["spec"] == body["spec"]
    await api.delete(TRIGGERS, NAMESPACE, "t")
    with pytest.raises(KubeNotFound) as missing:
        await api.get(TRIGGERS, NAMESPACE, "t")
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    with pytest.raises(KubeNotFound):
        await api.delete(TRIGGERS, NAMESPACE, "t")


async def test_a_slow_api_server_does_not_block_the_event_loop() -> None:
    """The blocking client runs in a thread: the loop keeps ticking while a call waits on an
    API server that accepted the connection and never answers."""

    def stall(conn: Any, _: bytearray) -> None:
        conn.recv(1)  # returns when the client gives up and closes

    with raw_server(stall) as server:
        api = KubeApi(Configuration(host=server.url), attempts=1, timeout_s=1.0)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        with pytest.raises(KubernetesUnavailable) as caught:
            await api.get(TRIGGERS, NAMESPACE, "t")
        ticker.cancel()
    assert "ReadTimeoutError" in caught.value.message
    assert ticks >= 20  # the loop ran throughout the one-second wait


def test_the_api_url_setting_wins_over_cluster_and_kubeconfig(tmp_path: Any) -> None:
    configuration = load_configuration(
        {"VWM_KUBE_API_URL": "http://127.0.0.1:8001/", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )
    assert configuration.host == "http://127.0.0.1:8001"
    nothing = {"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    with pytest.raises(KubernetesUnavailable) as caught:
        load_configuration(nothing)
    assert "VWM_KUBE_API_URL" in caught.value.message
