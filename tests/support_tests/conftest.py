"""Fixtures for the tests of the fakes in tests/support: a fake Kubernetes API on a socket and
the real `kubernetes` client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client

from tests.support.fake_kube_api import FakeKubeApi, serving

NAMESPACE = "vwm"


@dataclass
class Cluster:
    fake: FakeKubeApi
    url: str
    api_client: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    fake = FakeKubeApi(namespaces={"default", NAMESPACE})
    with serving(fake) as url, client.ApiClient(client.Configuration(host=url)) as api_client:
        yield Cluster(fake, url, api_client)
