"""The Kubernetes objects of one session on Knative, built from its `HarnessSpec`: a Secret, a
PVC, a Knative Service running the harness on that PVC, and a Trigger that delivers the
session's prompt requests to it. The runtime backend (`functions.runtime.knative`) applies
them; ``python -m functions.runtime.knative_example`` prints them for an example session
(infra/knative/examples/session.yaml), so what an operator reads is what runs.

Every name is a DNS-1035 label derived from the session id (`SessionNames`), short enough for
the names Knative derives from it (``<service>-00001`` revisions). Every object carries the
labels `MANAGED_BY_LABEL`/`COMPONENT_LABEL`/`SESSION_LABEL` (so the reconciler can list what it
owns) and the annotation `SESSION_ANNOTATION` with the exact session id.

What the Service template holds is fixed at creation: a running session's template is never
patched (each change is a new revision, and a second pod on a ReadWriteOnce volume hangs), so
nothing in it may need to change while the session lives. Values that do change (the provider
key) live in the Secret, read by the pod when it starts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from functions.kube import KNATIVE_SERVICES, PERSISTENT_VOLUME_CLAIMS, SECRETS, TRIGGERS
from functions.runtime.base import HarnessSpec, spec_env
from functions.settings import KnativeSessionSettings

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "vwm"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "session"
SESSION_LABEL = "vwm.dev/session"
WORKER_LABEL = "vwm.dev/worker"
SESSION_ANNOTATION = "vwm.dev/session-id"
WORKER_ANNOTATION = "vwm.dev/worker-name"
# Session objects of this control plane, whatever the session: what the reconciler lists.
SESSION_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT}"

WORKSPACE = "/workspace"
HARNESS_PORT = 8080
# What every harness pod is told whatever its session (a warm pool member's, before any).
POD_ENV = {
    "VWM_WORKSPACE": WORKSPACE,
    "VWM_HARNESS_HOST": "0.0.0.0",
    # The pod is the sandbox: it runs nothing else, as a user with no API access.
    "VWM_SANDBOX": "none",
}
TOKEN_ENV = "VWM_SESSION_TOKEN"  # noqa: S105 (the variable's name, not a secret)
PROMPT_REQUESTED = "dev.vwm.prompt.requested"
# Signed prompt requests only (`eventing.signatures`): the Trigger carries no credential, so
# the harness checks the signature; unsigned requests would only be refused there.
SIGNATURE_EXTENSION = "vwmauth"
SIGNATURE_PREFIX = "v1."

_PREFIX = "vwm-s-"
# Knative names revisions "<service>-00001" and their Kubernetes Services after them; 63 is the
# limit of each, so the Service keeps room for the longest suffix Knative adds.
_MAX_SERVICE_NAME = 48
_HASH_CHARS = 12
_PLAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


@dataclass(frozen=True)
class SessionNames:
    """The names of a session's objects. ``vwm-s-<session id>`` when the id is lower-case
    letters, digits and ``-`` and fits (every id VWM makes: 32 hex digits); otherwise the id
    lower-cased, other characters replaced, cut to fit, and a hash of the exact id added, so
    two sessions never share a name."""

    service: str

    @classmethod
    def of(cls, session_id: str) -> SessionNames:
        plain = _PREFIX + session_id
        if len(plain) <= _MAX_SERVICE_NAME and _PLAIN.fullmatch(session_id):
            return cls(plain)
        suffix = "-" + hashlib.sha256(session_id.encode()).hexdigest()[:_HASH_CHARS]
        stem = _INVALID.sub("-", session_id.lower())
        stem = stem[: _MAX_SERVICE_NAME - len(_PREFIX) - len(suffix)].strip("-")
        return cls(f"{_PREFIX}{stem}{suffix}" if stem else f"{_PREFIX.rstrip('-')}{suffix}")

    @property
    def volume(self) -> str:
        return f"{self.service}-workspace"

    @property
    def secret(self) -> str:
        return f"{self.service}-env"

    @property
    def trigger(self) -> str:
        return f"{self.service}-prompts"


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else ``h-`` and a hash of it."""
    if _LABEL_VALUE.fullmatch(value) and len(value) <= 63:
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SessionObjects:
    """What `build` makes; `all` in the order to create them (the Service's Secret and volume
    first, its Trigger last)."""

    secret: dict[str, Any]
    volume: dict[str, Any]
    service: dict[str, Any]
    trigger: dict[str, Any]

    @property
    def all(self) -> list[dict[str, Any]]:
        return [self.secret, self.volume, self.service, self.trigger]


def build(
    spec: HarnessSpec,
    *,
    token: str,
    namespace: str,
    broker: str,
    sessions: KnativeSessionSettings,
    names: SessionNames | None = None,
) -> SessionObjects:
    """`names`: the session's own (None: derived from its id), or a warm pool member's it
    claimed (`functions.runtime.knative_pool`)."""
    names = names or SessionNames.of(spec.session_id)
    return SessionObjects(
        secret=secret(spec, names, namespace, token),
        volume=volume_claim(spec, names, namespace, sessions),
        service=service(spec, names, namespace, sessions),
        trigger=trigger(spec, names, namespace, broker, sessions),
    )


def metadata(spec: HarnessSpec, name: str, namespace: str) -> dict[str, Any]:
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
        SESSION_LABEL: label_value(spec.session_id),
    }
    annotations = {SESSION_ANNOTATION: spec.session_id}
    if spec.worker:
        labels[WORKER_LABEL] = label_value(spec.worker)
        annotations[WORKER_ANNOTATION] = spec.worker
    return {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}


def secret(spec: HarnessSpec, names: SessionNames, namespace: str, token: str) -> dict[str, Any]:
    """The harness token and the CLI's credentials: the only secrets a session pod gets."""
    return {
        "apiVersion": SECRETS.api_version,
        "kind": SECRETS.kind,
        "metadata": metadata(spec, names.secret, namespace),
        "type": "Opaque",
        "stringData": {TOKEN_ENV: token, **spec.credential_env},
    }


def volume_claim(
    spec: HarnessSpec, names: SessionNames, namespace: str, sessions: KnativeSessionSettings
) -> dict[str, Any]:
    return volume_claim_of(metadata(spec, names.volume, namespace), sessions)


def volume_claim_of(meta: dict[str, Any], sessions: KnativeSessionSettings) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": sessions.volume_size}},
    }
    if sessions.storage_class:
        claim["storageClassName"] = sessions.storage_class
    return {
        "apiVersion": PERSISTENT_VOLUME_CLAIMS.api_version,
        "kind": PERSISTENT_VOLUME_CLAIMS.kind,
        "metadata": meta,
        "spec": claim,
    }


def harness_env(spec: HarnessSpec, names: SessionNames) -> list[dict[str, Any]]:
    """The harness's environment: plain values, and references into the session's Secret for
    the token and credentials (never their values: the Service is readable more widely)."""
    plain = {**spec_env(spec), **POD_ENV}
    env: list[dict[str, Any]] = [{"name": name, "value": plain[name]} for name in sorted(plain)]
    for key in sorted({TOKEN_ENV, *spec.credential_env}):
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": names.secret, "key": key}}})
    return env


def service(
    spec: HarnessSpec, names: SessionNames, namespace: str, sessions: KnativeSessionSettings
) -> dict[str, Any]:
    resources = {"cpu": spec.cpu or sessions.cpu, "memory": spec.memory or sessions.memory}
    container = {"image": spec.image or sessions.harness_image, "env": harness_env(spec, names)}
    return service_of(
        metadata(spec, names.service, namespace), names, container, resources, sessions
    )


def service_of(
    meta: dict[str, Any],
    names: SessionNames,
    container: dict[str, Any],
    resources: dict[str, str],
    sessions: KnativeSessionSettings,
) -> dict[str, Any]:
    """A harness's Service: `container` gives its image and environment (``env``, and
    ``envFrom`` for a pool member), the rest is every harness's."""
    # Reached through the cluster only: the control plane and the Broker call it.
    meta["labels"]["networking.knative.dev/visibility"] = "cluster-local"
    return {
        "apiVersion": KNATIVE_SERVICES.api_version,
        "kind": KNATIVE_SERVICES.kind,
        "metadata": meta,
        "spec": {
            "template": {
                "metadata": {
                    "labels": dict(meta["labels"]),
                    "annotations": {
                        # One pod per volume, ever (ReadWriteOnce), and none while idle.
                        "autoscaling.knative.dev/min-scale": "0",
                        "autoscaling.knative.dev/max-scale": "1",
                        "autoscaling.knative.dev/initial-scale": "1",
                        "autoscaling.knative.dev/scale-to-zero-pod-retention-period": (
                            f"{sessions.idle_pod_s}s"
                        ),
                    },
                },
                "spec": {
                    "serviceAccountName": sessions.service_account,
                    # A job streams for as long as it runs: the request must outlive it.
                    "timeoutSeconds": sessions.request_timeout_s,
                    # The harness takes many requests at once (a job's stream, files, health).
                    "containerConcurrency": 0,
                    "securityContext": {
                        "runAsUser": sessions.run_as_user,
                        "runAsGroup": sessions.run_as_user,
                        "runAsNonRoot": True,
                    },
                    "containers": [
                        {
                            "name": "harness",
                            **container,
                            "ports": [{"name": "http1", "containerPort": HARNESS_PORT}],
                            "resources": {"requests": resources, "limits": resources},
                            "readinessProbe": {"httpGet": {"path": "/healthz"}},
                            "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                        }
                    ],
                    "volumes": [
                        {
                            "name": "workspace",
                            "persistentVolumeClaim": {"claimName": names.volume},
                        }
                    ],
                },
            }
        },
    }


def trigger(
    spec: HarnessSpec,
    names: SessionNames,
    namespace: str,
    broker: str,
    sessions: KnativeSessionSettings,
) -> dict[str, Any]:
    """The session's signed prompt requests, delivered to its harness's ``POST /v1/events``.
    A delivery is held open while the job runs, so its timeout is the Service's. No dead-letter
    sink: a request never delivered stays queued until the reconciler fails it (its job's
    dispatch bound, `functions.reconcile`), with the same `harness_unavailable`."""
    delivery: dict[str, Any] = {
        "retry": 5,
        "backoffPolicy": "exponential",
        "backoffDelay": "PT1S",
        "timeout": f"PT{sessions.request_timeout_s}S",
    }
    return {
        "apiVersion": TRIGGERS.api_version,
        "kind": TRIGGERS.kind,
        "metadata": metadata(spec, names.trigger, namespace),
        "spec": {
            "broker": broker,
            "filters": [
                {"exact": {"type": PROMPT_REQUESTED, "sessionid": spec.session_id}},
                {"prefix": {SIGNATURE_EXTENSION: SIGNATURE_PREFIX}},
            ],
            "subscriber": {
                "ref": {
                    "apiVersion": KNATIVE_SERVICES.api_version,
                    "kind": KNATIVE_SERVICES.kind,
                    "name": names.service,
                    "namespace": namespace,
                },
                "uri": "/v1/events",
            },
            "delivery": delivery,
        },
    }


def session_id_of(obj: Mapping[str, Any]) -> str | None:
    """The session an object of ours belongs to (its annotation), or None."""
    meta = obj.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(SESSION_ANNOTATION)
    return value if isinstance(value, str) and value else None
