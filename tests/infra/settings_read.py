"""Which ``VWM_*`` variables a function's process reads, found by running the readers it runs at
start over an environment that notes every name looked up in it: the control plane's settings,
the outbox relay's (and its publisher's), and where the Kubernetes API is. Each reader raises
on a value that cannot work, so reading an environment also checks its values."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from functions.kube import KubernetesUnavailable, load_configuration
from functions.outbox_relay import OutboxRelaySettings
from functions.settings import ControlPlaneSettings


class RecordingEnv(dict[str, str]):
    """A copy of an environment that notes every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def read_by_a_function(env: Mapping[str, str]) -> set[str]:
    """The names a function's start-up readers look up in `env` (a pod's environment: the
    API server is found from inside the cluster). Raises what they raise on a bad value."""
    recording = RecordingEnv({"KUBERNETES_SERVICE_HOST": "10.0.0.1", **env})
    ControlPlaneSettings.from_env(recording)
    OutboxRelaySettings.from_env(recording)
    # No service account token is mounted here, so finding the API server fails after it
    # looked at its variables, which is all this wants.
    with contextlib.suppress(KubernetesUnavailable):
        load_configuration(recording)
    return recording.read
