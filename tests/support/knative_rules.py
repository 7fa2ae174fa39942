"""The rules Knative's admission webhooks add to what the CRD schemas show, written as checks, so a
manifest that the API server would refuse fails a test here first. For any Knative Service: the
static ones of infra/knative and the per-session ones the runtime backend builds.

`service_problems(ksvc, features, max_revision_timeout_s)` checks one Service against a cluster's
flags; `cluster_service_problems(ksvc)` checks it against the cluster infra/knative/cluster
configures (schema included). After knative/serving ``knative-v1.23.0``:
``pkg/apis/serving/k8s_validation.go`` (mounts, env, ports, volumes, feature flags),
``pkg/apis/serving/v1/revision_validation.go`` (timeouts), ``pkg/apis/autoscaling/
annotation_validation.go`` (scaling annotations). Broker, Trigger and PingSource checks cover the
``delivery`` block, which their schemas leave open. Each problem is ``path: message``.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support import k8s_schema

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SERVING = REPO / "infra" / "knative" / "cluster" / "knative-serving.yaml"
_SERVING_CONFIG = k8s_schema.SCHEMAS / "serving-v1.23.0"

RESERVED_MOUNT_PATHS = frozenset({"/", "/dev", "/dev/log"})
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})
RESERVED_CONTAINER_NAMES = frozenset({"queue-proxy"})
# What the pod securityContext keeps with kubernetes.podspec-securitycontext on (fieldmask.go).
POD_SECURITY_CONTEXT_FIELDS = frozenset(
    {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile"}
)
READ_ONLY_VOLUME_KINDS = ("secret", "configMap", "projected")

PVC_FLAG = "kubernetes.podspec-persistent-volume-claim"
PVC_WRITE_FLAG = "kubernetes.podspec-persistent-volume-write"
SECURITY_CONTEXT_FLAG = "kubernetes.podspec-securitycontext"
INIT_CONTAINERS_FLAG = "kubernetes.podspec-init-containers"
FIELDREF_FLAG = "kubernetes.podspec-fieldref"
EMPTYDIR_FLAG = "kubernetes.podspec-volumes-emptydir"

SCALING = "autoscaling.knative.dev/"
SCALING_ANNOTATIONS = frozenset(
    SCALING + name
    for name in (
        "min-scale",
        "max-scale",
        "initial-scale",
        "activation-scale",
        "scale-down-delay",
        "scale-to-zero-pod-retention-period",
        "target-burst-capacity",
        "window",
        "panic-window-percentage",
        "panic-threshold-percentage",
        "target",
        "target-utilization-percentage",
        "metric",
        "metric-aggregation-algorithm",
        "class",
    )
)
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_NANOS["h"] = 3600 * 10**9
_ISO_DURATION = re.compile(
    r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?"
)
_CRON_FIELD = re.compile(r"[0-9*,/\-A-Za-z?LW#]+")


# -- the cluster's settings --------------------------------------------------------------------


@dataclass(frozen=True)
class ServingSettings:
    """What a cluster's Knative Serving admits: config-features (defaults merged), the largest
    ``timeoutSeconds`` and whether a Service may start with no pod."""

    features: Mapping[str, str]
    max_revision_timeout_s: int
    allow_zero_initial_scale: bool


def _documented_defaults(name: str) -> dict[str, str]:
    """The defaults a Knative config map documents in its ``_example`` block."""
    config_map = yaml.safe_load((_SERVING_CONFIG / f"config-{name}.yaml").read_text())
    return {k: str(v) for k, v in yaml.safe_load(config_map["data"]["_example"]).items()}


@cache
def default_features() -> dict[str, str]:
    return _documented_defaults("features")


@cache
def cluster_settings(path: Path = CLUSTER_SERVING) -> ServingSettings:
    """The settings of the KnativeServing in `path` (infra/knative/cluster), over the defaults."""
    config = yaml.safe_load(path.read_text())["spec"].get("config", {})
    defaults = {**_documented_defaults("defaults"), **config.get("defaults", {})}
    autoscaler = {**_documented_defaults("autoscaler"), **config.get("autoscaler", {})}
    return ServingSettings(
        features={**default_features(), **config.get("features", {})},
        max_revision_timeout_s=int(defaults["max-revision-timeout-seconds"]),
        allow_zero_initial_scale=autoscaler["allow-zero-initial-scale"] == "true",
    )


def cluster_service_problems(ksvc: Any, settings: ServingSettings | None = None) -> list[str]:
    """A Service's schema problems and webhook problems on the cluster infra/knative configures."""
    settings = settings or cluster_settings()
    found = k8s_schema.problems(k8s_schema.SERVICE_SCHEMA, ksvc)
    return found + service_problems(
        ksvc,
        settings.features,
        settings.max_revision_timeout_s,
        allow_zero_initial_scale=settings.allow_zero_initial_scale,
    )


# -- a Knative Service -------------------------------------------------------------------------


def service_problems(
    ksvc: Mapping[str, Any],
    features: Mapping[str, str],
    max_revision_timeout_s: int,
    *,
    allow_zero_initial_scale: bool = False,
) -> list[str]:
    """What the serving webhook refuses in `ksvc` on a cluster with these config-features
    (flags not given take their Knative defaults) and this max-revision-timeout-seconds."""
    flags = {**default_features(), **features}
    found = list(_name_problems("metadata.name", ksvc.get("metadata", {}).get("name")))
    template = ksvc.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations", {})
    found += _scaling_problems(annotations, allow_zero_initial_scale)
    spec = template.get("spec", {})
    found += _timeout_problems(spec, max_revision_timeout_s)
    found += _pod_security_problems(spec.get("securityContext"), flags)
    volumes = {volume.get("name"): volume for volume in spec.get("volumes", [])}
    found += _volume_problems(spec, volumes, flags)
    init = spec.get("initContainers", [])
    if init and flags.get(INIT_CONTAINERS_FLAG) != "enabled":
        found.append(f"spec.template.spec.initContainers: needs {INIT_CONTAINERS_FLAG}: enabled")
    containers = spec.get("containers", [])
    ports = [port for container in containers for port in container.get("ports", [])]
    if len(ports) > 1:
        found.append("spec.template.spec.containers: more than one container port is set")
    for kind, group in (("containers", containers), ("initContainers", init)):
        for index, container in enumerate(group):
            where = f"spec.template.spec.{kind}[{index}]"
            serving = kind == "containers" and (len(containers) == 1 or container.get("ports"))
            found += _container_problems(where, container, volumes, flags, serving=bool(serving))
    return found


def _name_problems(where: str, name: Any) -> Iterator[str]:
    if not isinstance(name, str) or not name:
        yield f"{where}: Required value"
    elif len(name) > 63 or not _DNS1035.fullmatch(name):
        yield f"{where}: {name!r} is not a DNS-1035 label of at most 63 characters"


def _timeout_problems(spec: Mapping[str, Any], max_s: int) -> Iterator[str]:
    timeout = spec.get("timeoutSeconds")
    for field in ("timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        value = spec.get(field)
        if value is not None and not 0 <= value <= max_s:
            yield (
                f"spec.template.spec.{field}: {value} is outside 0..{max_s} "
                "(max-revision-timeout-seconds)"
            )
    start = spec.get("responseStartTimeoutSeconds")
    if start is not None and timeout is not None and start > timeout:
        yield (
            f"spec.template.spec.responseStartTimeoutSeconds: {start} is more than "
            f"timeoutSeconds ({timeout})"
        )


def _pod_security_problems(context: Any, flags: Mapping[str, str]) -> Iterator[str]:
    if not context:
        return
    if flags.get(SECURITY_CONTEXT_FLAG) == "disabled":
        yield f"spec.template.spec.securityContext: needs {SECURITY_CONTEXT_FLAG}"
        return
    for field in sorted(set(context) - POD_SECURITY_CONTEXT_FIELDS):
        yield f"spec.template.spec.securityContext.{field}: must not set the field"


def _volume_problems(
    spec: Mapping[str, Any], volumes: Mapping[str, Any], flags: Mapping[str, str]
) -> Iterator[str]:
    mounted = {
        mount.get("name")
        for container in (*spec.get("containers", []), *spec.get("initContainers", []))
        for mount in container.get("volumeMounts", [])
    }
    for index, (name, volume) in enumerate(volumes.items()):
        where = f"spec.template.spec.volumes[{index}]"
        if name not in mounted:
            yield f"{where}.name: volume with name {name!r} not mounted"
        claim = volume.get("persistentVolumeClaim")
        if claim is not None:
            if flags.get(PVC_FLAG) != "enabled":
                yield f"{where}: persistent volume claim needs {PVC_FLAG}: enabled"
            if not claim.get("readOnly") and flags.get(PVC_WRITE_FLAG) != "enabled":
                yield f"{where}: a claim that is not read-only needs {PVC_WRITE_FLAG}: enabled"
        if "emptyDir" in volume and flags.get(EMPTYDIR_FLAG) != "enabled":
            yield f"{where}: emptyDir needs {EMPTYDIR_FLAG}: enabled"


def _container_problems(
    where: str,
    container: Mapping[str, Any],
    volumes: Mapping[str, Any],
    flags: Mapping[str, str],
    *,
    serving: bool,
) -> Iterator[str]:
    if container.get("name") in RESERVED_CONTAINER_NAMES:
        yield f"{where}.name: {container['name']!r} is a reserved container name"
    reserved_env = RESERVED_ENV if serving else RESERVED_ENV - {"PORT"}
    for index, env in enumerate(container.get("env", [])):
        if env.get("name") in reserved_env:
            yield f"{where}.env[{index}].name: {env['name']!r} is a reserved environment variable"
        source = env.get("valueFrom", {})
        if ("fieldRef" in source or "resourceFieldRef" in source) and flags.get(
            FIELDREF_FLAG
        ) == "disabled":
            yield f"{where}.env[{index}].valueFrom: fieldRef needs {FIELDREF_FLAG}"
    for index, port in enumerate(container.get("ports", [])):
        if port.get("containerPort") in RESERVED_PORTS:
            yield f"{where}.ports[{index}].containerPort: {port['containerPort']} is a reserved port"
    for index, mount in enumerate(container.get("volumeMounts", [])):
        yield from _mount_problems(f"{where}.volumeMounts[{index}]", mount, volumes)


def _mount_problems(
    where: str, mount: Mapping[str, Any], volumes: Mapping[str, Any]
) -> Iterator[str]:
    path = mount.get("mountPath", "")
    if posixpath.normpath(path) in RESERVED_MOUNT_PATHS or path == "/":
        yield f"{where}.mountPath: mountPath {posixpath.normpath(path)!r} is a reserved path"
    elif not path.startswith("/"):
        yield f"{where}.mountPath: {path!r} is not an absolute path"
    volume = volumes.get(mount.get("name"))
    if volume is None:
        yield f"{where}.name: volumeMount has no matching volume"
        return
    if any(kind in volume for kind in READ_ONLY_VOLUME_KINDS) and not mount.get("readOnly"):
        yield f"{where}.readOnly: volume mount should be readOnly for this type of volume"
    claim = volume.get("persistentVolumeClaim")
    if claim and claim.get("readOnly") and not mount.get("readOnly"):
        yield f"{where}.readOnly: volume is readOnly but volume mount is not"


def _scaling_problems(annotations: Mapping[str, str], allow_zero: bool) -> Iterator[str]:
    where = "spec.template.metadata.annotations"
    scales: dict[str, int] = {}
    for key, value in annotations.items():
        if not key.startswith(SCALING):
            continue
        name = key.removeprefix(SCALING)
        if key not in SCALING_ANNOTATIONS:
            yield f"{where}[{key}]: not an autoscaling annotation Knative knows"
        elif name in ("min-scale", "max-scale", "initial-scale", "activation-scale"):
            if not (isinstance(value, str) and value.isdigit()):
                yield f"{where}[{key}]: {value!r} is not a whole number of at least 0"
            else:
                scales[name] = int(value)
        elif name in ("scale-down-delay", "scale-to-zero-pod-retention-period"):
            yield from _duration_problems(f"{where}[{key}]", value, low_s=0)
        elif name == "window":
            yield from _duration_problems(f"{where}[{key}]", value, low_s=6)
        elif name in ("target", "target-burst-capacity", "target-utilization-percentage"):
            if _number(value) is None:
                yield f"{where}[{key}]: {value!r} is not a number"
        elif name == "metric" and value not in ("concurrency", "rps", "cpu", "memory"):
            yield f"{where}[{key}]: {value!r} is not concurrency, rps, cpu or memory"
        elif name == "class" and value not in (
            "kpa.autoscaling.knative.dev",
            "hpa.autoscaling.knative.dev",
        ):
            yield f"{where}[{key}]: {value!r} is not a known autoscaler class"
    low, high = scales.get("min-scale", 0), scales.get("max-scale", 0)
    if high and low > high:
        yield f"{where}[{SCALING}min-scale]: {low} is more than max-scale ({high})"
    if scales.get("initial-scale") == 0 and not allow_zero:
        yield f"{where}[{SCALING}initial-scale]: 0 needs allow-zero-initial-scale: true"


def _duration_problems(where: str, value: Any, *, low_s: int) -> Iterator[str]:
    nanos = go_duration_ns(value) if isinstance(value, str) else None
    if nanos is None:
        yield f"{where}: {value!r} is not a duration such as 30s or 5m"
    elif nanos % 10**9:
        yield f"{where}: {value!r} must be whole seconds"
    elif not low_s * 10**9 <= nanos <= 3600 * 10**9:
        yield f"{where}: {value!r} is outside {low_s}s..1h"


def go_duration_ns(text: str) -> int | None:
    """A Go duration (``1h30m``, ``45s``, ``0``) in nanoseconds; None when it is not one."""
    if text == "0":
        return 0
    position, total = 0, 0.0
    for match in _GO_DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _NANOS[match.group(2)]
        position = match.end()
    return round(total) if text and position == len(text) else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# -- eventing ----------------------------------------------------------------------------------

DELIVERY_FIELDS = frozenset(
    {
        "retry",
        "backoffPolicy",
        "backoffDelay",
        "deadLetterSink",
        "timeout",
        "retryAfterMax",
        "format",
    }
)


def delivery_problems(where: str, delivery: Any) -> list[str]:
    """A DeliverySpec's problems; the schemas keep unknown fields there, so typos pass them."""
    if delivery is None:
        return []
    if not isinstance(delivery, dict):
        return [f"{where}: must be an object"]
    found = [f"{where}.{key}: unknown field" for key in sorted(set(delivery) - DELIVERY_FIELDS)]
    retry = delivery.get("retry")
    if retry is not None and not (isinstance(retry, int) and retry >= 0):
        found.append(f"{where}.retry: {retry!r} is not a whole number of at least 0")
    if delivery.get("backoffPolicy", "exponential") not in ("linear", "exponential"):
        found.append(f"{where}.backoffPolicy: must be linear or exponential")
    for field in ("backoffDelay", "timeout", "retryAfterMax"):
        value = delivery.get(field)
        if value is not None and not (isinstance(value, str) and _ISO_DURATION.fullmatch(value)):
            found.append(f"{where}.{field}: {value!r} is not an ISO 8601 duration such as PT1S")
    if "deadLetterSink" in delivery:
        found += destination_problems(f"{where}.deadLetterSink", delivery["deadLetterSink"])
    return found


def destination_problems(where: str, destination: Any) -> list[str]:
    """A Destination needs a ``ref`` (with apiVersion, kind, name) or a ``uri``."""
    if not isinstance(destination, dict) or not (destination.get("ref") or destination.get("uri")):
        return [f"{where}: expected at least one, got neither: ref, uri"]
    ref = destination.get("ref")
    if isinstance(ref, dict):
        missing = [key for key in ("apiVersion", "kind", "name") if not ref.get(key)]
        return [f"{where}.ref.{key}: Required value" for key in missing]
    return []


def broker_problems(broker: Any) -> list[str]:
    found = k8s_schema.problems(k8s_schema.BROKER_SCHEMA, broker)
    return found + delivery_problems("spec.delivery", broker.get("spec", {}).get("delivery"))


def trigger_problems(trigger: Any) -> list[str]:
    """`k8s_schema.trigger_problems` plus the delivery checks."""
    found = k8s_schema.trigger_problems(trigger)
    return found + delivery_problems("spec.delivery", trigger.get("spec", {}).get("delivery"))


def pingsource_problems(source: Any) -> list[str]:
    """Schema, a five-field cron schedule, a sink, at most one of data and dataBase64, and JSON
    data when the content type says JSON."""
    found = k8s_schema.problems(k8s_schema.PINGSOURCE_SCHEMA, source)
    spec = source.get("spec", {})
    fields = str(spec.get("schedule", "")).split()
    if fields and fields[0].startswith("CRON_TZ="):
        fields = fields[1:]
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
        found.append(f"spec.schedule: {spec.get('schedule')!r} is not a five-field cron schedule")
    found += destination_problems("spec.sink", spec.get("sink"))
    if "data" in spec and "dataBase64" in spec:
        found.append("spec: expected exactly one, got both: data, dataBase64")
    if spec.get("contentType") == "application/json" and "data" in spec:
        try:
            json.loads(spec["data"])
        except ValueError:
            found.append("spec.data: is not JSON, but contentType is application/json")
    return found
