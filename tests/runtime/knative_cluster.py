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
from functions.runtime.base import HarnessSpec
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

    def backend(self, warm_services: int = 0, **settings: object) -> KnativeBackend:
        """A control plane's backend: `settings` are `KnativeSessionSettings` fields."""
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
            warm_services=warm_services,
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


def control_plane_env(cluster: Cluster) -> dict[str, str]:
    """What a `vwm up` on this cluster is given: the Knative backend on the fake API server,
    local repositories allowed, and a reconciler that ticks every second and leaves alone for
    3 s what just changed (a prompt's job takes about one)."""
    return {
        "VWM_RUNTIME_BACKEND": "knative",
        "VWM_KUBE_API_URL": cluster.url,
        "VWM_HARNESS_IMAGE": HARNESS_IMAGE,
        "VWM_KNATIVE_NAMESPACE": NAMESPACE,
        "VWM_KNATIVE_BROKER": BROKER,
        "VWM_ALLOW_LOCAL_REPOS": "1",
        "VWM_TICK_S": "1",
        "VWM_RECONCILE_GRACE_S": "3",
    }


def claude_spec(session_id: str) -> HarnessSpec:
    """A Claude Code session with a provider key: what the Knative tests and benchmarks start."""
    return HarnessSpec(
        session_id=session_id,
        cli="claude",
        cli_bin=None,
        model=None,
        provider_base_url=None,
        credential_env={"VWM_PROVIDER_API_KEY": "sk-test"},
        job_timeout_s=None,
        worker="reviewer",
    )
