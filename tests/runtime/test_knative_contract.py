"""The Knative backend passes the runtime backend contract (tests/runtime/contract.py) against a
fake cluster: the real `kubernetes` client, a fake API server over HTTP, and each session's
Service run as a real harness on a folder standing in for its PVC (tests/runtime/knative_cluster).

A "crash" here is the Service vanishing (deleted by someone, or lost with its namespace's
controller state): a pod that dies is Knative's to restart, the Service is the backend's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.kube import KNATIVE_SERVICES
from functions.runtime import RuntimeHandle
from functions.runtime.base import PoolShape
from functions.runtime.knative import KnativeBackend
from tests.runtime.contract import RuntimeBackendContract
from tests.runtime.knative_cluster import NAMESPACE, Cluster, knative_cluster
from tests.support.fake_knative import SERVICES


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with knative_cluster(tmp_path / "cluster") as running:
        yield running


class TestKnativeBackendContract(RuntimeBackendContract):
    @pytest.fixture
    def backend(self, cluster: Cluster) -> KnativeBackend:
        return cluster.backend()

    @pytest.fixture
    def restarted(self, cluster: Cluster):
        return cluster.backend

    @pytest.fixture
    def crash(self, cluster: Cluster):
        async def delete_service(handle: RuntimeHandle) -> None:
            api = cluster.backend().api
            await api.delete(KNATIVE_SERVICES, NAMESPACE, handle.state["service"])

        return delete_service


class TestKnativeBackendFromTheWarmPoolContract(TestKnativeBackendContract):
    """The same contract for sessions made of warm pool members (functions.runtime.knative_pool):
    three members ready before each test, so its sessions are claimed, not started cold; a
    restarted control plane finds them by their handles, which name the members' objects."""

    @pytest.fixture
    async def backend(self, cluster: Cluster) -> KnativeBackend:
        pooled = cluster.backend(warm_services=3)
        await pooled.fill_pools([PoolShape()])
        for name in cluster.api.objects(SERVICES, NAMESPACE):
            cluster.serving.wait_condition(name, "True", NAMESPACE, timeout=60)
        return pooled
