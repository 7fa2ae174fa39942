"""A cluster for the Knative backend's tests: the fake Kubernetes API server over HTTP, with
`FakeServing` running each session's Service as a real local harness on a folder that stands in
for its PVC. The backend talks to it with the real `kubernetes` client."""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client import Configuration

from functions.kube import KubeApi
from functions.runtime.knative import KnativeBackend
from functions.runtime.tokens import TokenKey
from functions.settings import KnativeSessionSettings
from tests.support.fake_knative import FakeServing
from tests.support.fake_kube_api import FakeKubeApi, Kind, serving

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "vwm-sessions"
BROKER = "vwm"
TRIGGERS = Kind("eventing.knative.dev", "v1", "triggers", "Trigger")
HARNESS_IMAGE = "registry.example/vwm-harness:test"


@dataclass
class Cluster:
    api: FakeKubeApi
    serving: FakeServing
    url: str
    token_key: TokenKey

    def backend(self, **settings: object) -> KnativeBackend:
        sessions = KnativeSessionSettings(harness_image=HARNESS_IMAGE, **settings)  # type: ignore[arg-type]
        return KnativeBackend(
            KubeApi(Configuration(host=self.url), attempts=3, first_delay_s=0.01),
            namespace=NAMESPACE,
            broker=BROKER,
            sessions=sessions,
            token_key=self.token_key,
            probe_timeout_s=2.0,
            startup_grace_s=3.0,
            delete_wait_s=15.0,
        )


@contextlib.contextmanager
def knative_cluster(root: Path, **serving_env: str) -> Iterator[Cluster]:
    """The fake cluster for the block; every pod is stopped at its end."""
    api = FakeKubeApi(kinds=[TRIGGERS], namespaces={"default", NAMESPACE})
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **serving_env}
    with (
        serving(api) as url,
        FakeServing(
            api, root, default_command=[sys.executable, "-m", "harness"], env=env
        ) as knative,
    ):
        yield Cluster(api, knative, url, TokenKey(secrets.token_bytes(32), "test"))
