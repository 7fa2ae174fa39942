"""Each webhook rule of tests/support/knative_rules.py catches the manifest it is about: a valid
session-like Service that uses every feature the rules know (a PVC at /workspace, an init
container, a pod securityContext, fieldRef env, a Secret mounted, no pod at first) passes on a
cluster with all of them on, and breaking one thing yields that rule's message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import knative_rules
from tests.support.knative_rules import (
    FIELDREF_FLAG,
    INIT_CONTAINERS_FLAG,
    PVC_FLAG,
    PVC_WRITE_FLAG,
    SECURITY_CONTEXT_FLAG,
    ServingSettings,
)

SCALING = "autoscaling.knative.dev/"


def session_service() -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "vwm-session-s1", "namespace": "vwm"},
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        f"{SCALING}min-scale": "0",
                        f"{SCALING}max-scale": "1",
                        f"{SCALING}initial-scale": "0",
                        f"{SCALING}scale-down-delay": "0s",
                        f"{SCALING}scale-to-zero-pod-retention-period": "300s",
                    }
                },
                "spec": {
                    "serviceAccountName": "vwm-session",
                    "timeoutSeconds": 3600,
                    "responseStartTimeoutSeconds": 3600,
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "runAsNonRoot": True,
                    },
                    "initContainers": [
                        {
                            "name": "prepare",
                            "image": "registry.example.com/vwm/harness:0.1.0",
                            "command": ["true"],
                            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                        }
                    ],
                    "containers": [
                        {
                            "name": "harness",
                            "image": "registry.example.com/vwm/harness:0.1.0",
                            "ports": [{"containerPort": 8080}],
                            "env": [
                                {"name": "VWM_WORKSPACE", "value": "/workspace"},
                                {
                                    "name": "VWM_POD",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "volumeMounts": [
                                {"name": "workspace", "mountPath": "/workspace"},
                                {
                                    "name": "credentials",
                                    "mountPath": "/etc/vwm/credentials",
                                    "readOnly": True,
                                },
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "workspace", "persistentVolumeClaim": {"claimName": "vwm-s1"}},
                        {"name": "credentials", "secret": {"secretName": "vwm-s1"}},
                    ],
                },
            }
        },
    }


ALL_ON = {
    PVC_FLAG: "enabled",
    PVC_WRITE_FLAG: "enabled",
    SECURITY_CONTEXT_FLAG: "enabled",
    INIT_CONTAINERS_FLAG: "enabled",
    FIELDREF_FLAG: "enabled",
}


@dataclass
class Case:
    """One way to break the valid Service (or the cluster under it), and the message expected."""

    id: str
    expected: str
    breaks: Callable[[dict[str, Any], dict[str, Any]], None]
    features: dict[str, str] = field(default_factory=dict)


def pod(ksvc: dict[str, Any]) -> dict[str, Any]:
    return ksvc["spec"]["template"]["spec"]


def harness(ksvc: dict[str, Any]) -> dict[str, Any]:
    return pod(ksvc)["containers"][0]


def annotate(key: str, value: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def breaks(ksvc: dict[str, Any], _: dict[str, Any]) -> None:
        ksvc["spec"]["template"]["metadata"]["annotations"][f"{SCALING}{key}"] = value

    return breaks


def set_env(name: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    return lambda ksvc, _: harness(ksvc)["env"].append({"name": name, "value": "x"})


def mount_at(path: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    return lambda ksvc, _: harness(ksvc)["volumeMounts"][0].update(mountPath=path)


def port(number: int) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    return lambda ksvc, _: harness(ksvc)["ports"][0].update(containerPort=number)


def nothing(ksvc: dict[str, Any], cluster: dict[str, Any]) -> None:
    """The Service stays as it is; the cluster's flags (Case.features) are what breaks."""


def volume(name: str, source: dict[str, Any], read_only: bool | None) -> Callable[..., None]:
    def breaks(ksvc: dict[str, Any], _: dict[str, Any]) -> None:
        pod(ksvc)["volumes"].append({"name": name, **source})
        mount = {"name": name, "mountPath": f"/etc/{name}"}
        if read_only is not None:
            mount["readOnly"] = read_only
        harness(ksvc)["volumeMounts"].append(mount)

    return breaks


CASES = [
    *(
        Case(f"reserved-mount-{p}", "is a reserved path", mount_at(p))
        for p in ("/", "/dev", "/dev/log", "/dev/")
    ),
    Case("relative-mount", "is not an absolute path", mount_at("workspace")),
    *(
        Case(f"reserved-env-{name}", "is a reserved environment variable", set_env(name))
        for name in ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")
    ),
    *(
        Case(f"reserved-port-{n}", "is a reserved port", port(n))
        for n in (8012, 8013, 8022, 9090, 9091, 8008)
    ),
    Case(
        "two-ports",
        "more than one container port is set",
        lambda ksvc, _: harness(ksvc)["ports"].append({"containerPort": 8081}),
    ),
    Case(
        "reserved-container-name",
        "is a reserved container name",
        lambda ksvc, _: harness(ksvc).update(name="queue-proxy"),
    ),
    Case(
        "volume-not-mounted",
        "not mounted",
        lambda ksvc, _: pod(ksvc)["volumes"].append({"name": "scratch", "emptyDir": {}}),
    ),
    Case(
        "mount-without-volume",
        "volumeMount has no matching volume",
        lambda ksvc, _: harness(ksvc)["volumeMounts"].append(
            {"name": "gone", "mountPath": "/gone"}
        ),
    ),
    Case(
        "read-only-claim-writable-mount",
        "volume is readOnly but volume mount is not",
        lambda ksvc, _: pod(ksvc)["volumes"][0]["persistentVolumeClaim"].update(readOnly=True),
    ),
    Case(
        "secret-mount-writable",
        "should be readOnly",
        lambda ksvc, _: harness(ksvc)["volumeMounts"][1].update(readOnly=False),
    ),
    Case(
        "config-map-mount-writable",
        "should be readOnly",
        volume("settings", {"configMap": {"name": "c"}}, None),
    ),
    Case(
        "projected-mount-writable",
        "should be readOnly",
        volume("bundle", {"projected": {"sources": [{"secret": {"name": "s"}}]}}, False),
    ),
    Case("pvc-flag-disabled", f"needs {PVC_FLAG}: enabled", nothing, {PVC_FLAG: "disabled"}),
    Case("pvc-flag-only-allowed", f"needs {PVC_FLAG}: enabled", nothing, {PVC_FLAG: "allowed"}),
    Case(
        "pvc-write-flag-off",
        f"needs {PVC_WRITE_FLAG}: enabled",
        nothing,
        {PVC_WRITE_FLAG: "disabled"},
    ),
    Case(
        "init-containers-flag-off",
        f"needs {INIT_CONTAINERS_FLAG}: enabled",
        nothing,
        {INIT_CONTAINERS_FLAG: "disabled"},
    ),
    Case(
        "security-context-flag-off",
        f"needs {SECURITY_CONTEXT_FLAG}",
        nothing,
        {SECURITY_CONTEXT_FLAG: "disabled"},
    ),
    Case(
        "security-context-field-not-allowed",
        "securityContext.fsGroupChangePolicy: must not set the field",
        lambda ksvc, _: pod(ksvc)["securityContext"].update(fsGroupChangePolicy="OnRootMismatch"),
    ),
    Case(
        "security-context-sysctls",
        "securityContext.sysctls: must not set the field",
        lambda ksvc, _: pod(ksvc)["securityContext"].update(sysctls=[{"name": "a", "value": "1"}]),
    ),
    Case(
        "fieldref-flag-off", f"fieldRef needs {FIELDREF_FLAG}", nothing, {FIELDREF_FLAG: "disabled"}
    ),
    Case(
        "emptydir-flag-off",
        "emptyDir needs kubernetes.podspec-volumes-emptydir",
        volume("scratch", {"emptyDir": {}}, None),
        {"kubernetes.podspec-volumes-emptydir": "disabled"},
    ),
    Case(
        "timeout-over-max",
        "timeoutSeconds: 86401 is outside 0..86400",
        lambda ksvc, _: pod(ksvc).update(timeoutSeconds=86_401),
    ),
    Case(
        "timeout-over-a-lower-max",
        "timeoutSeconds: 3600 is outside 0..600",
        lambda ksvc, cluster: cluster.update(max_revision_timeout_s=600),
    ),
    Case(
        "response-start-after-timeout",
        "responseStartTimeoutSeconds: 7200 is more than timeoutSeconds (3600)",
        lambda ksvc, _: pod(ksvc).update(responseStartTimeoutSeconds=7200),
    ),
    Case(
        "idle-timeout-over-max",
        "idleTimeoutSeconds: 90000 is outside",
        lambda ksvc, _: pod(ksvc).update(idleTimeoutSeconds=90_000),
    ),
    Case("min-scale-not-a-number", "'one' is not a whole number", annotate("min-scale", "one")),
    Case("max-scale-negative", "'-1' is not a whole number", annotate("max-scale", "-1")),
    Case("initial-scale-fraction", "'1.5' is not a whole number", annotate("initial-scale", "1.5")),
    Case("min-over-max", "min-scale]: 2 is more than max-scale (1)", annotate("min-scale", "2")),
    Case(
        "initial-scale-zero-not-allowed",
        "0 needs allow-zero-initial-scale: true",
        lambda ksvc, cluster: cluster.update(allow_zero_initial_scale=False),
    ),
    Case("scale-down-delay-over-an-hour", "outside 0s..1h", annotate("scale-down-delay", "61m")),
    Case(
        "scale-down-delay-fraction", "must be whole seconds", annotate("scale-down-delay", "1.5s")
    ),
    Case(
        "scale-down-delay-not-a-duration", "is not a duration", annotate("scale-down-delay", "soon")
    ),
    Case(
        "retention-over-an-hour",
        "outside 0s..1h",
        annotate("scale-to-zero-pod-retention-period", "3601s"),
    ),
    Case("window-too-short", "outside 6s..1h", annotate("window", "5s")),
    Case("scaling-annotation-typo", "not an autoscaling annotation", annotate("max-scal", "1")),
    Case("metric-unknown", "is not concurrency, rps, cpu or memory", annotate("metric", "latency")),
    Case("target-not-a-number", "is not a number", annotate("target", "many")),
    Case(
        "name-too-long",
        "is not a DNS-1035 label",
        lambda ksvc, _: ksvc["metadata"].update(name="s" * 64),
    ),
    Case(
        "name-starts-with-a-digit",
        "is not a DNS-1035 label",
        lambda ksvc, _: ksvc["metadata"].update(name="1-session"),
    ),
    Case(
        "name-upper-case",
        "is not a DNS-1035 label",
        lambda ksvc, _: ksvc["metadata"].update(name="Session"),
    ),
]


def problems_of(
    ksvc: dict[str, Any], cluster: dict[str, Any], features: dict[str, str]
) -> list[str]:
    return knative_rules.service_problems(
        ksvc,
        {**ALL_ON, **features},
        cluster["max_revision_timeout_s"],
        allow_zero_initial_scale=cluster["allow_zero_initial_scale"],
    )


def test_the_valid_session_service_passes_the_schema_and_every_rule() -> None:
    settings = ServingSettings(ALL_ON, 86_400, allow_zero_initial_scale=True)
    assert knative_rules.cluster_service_problems(session_service(), settings) == []


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_rule_catches_what_it_is_about(case: Case) -> None:
    ksvc = session_service()
    cluster: dict[str, Any] = {"max_revision_timeout_s": 86_400, "allow_zero_initial_scale": True}
    assert problems_of(copy.deepcopy(ksvc), cluster, {}) == []
    case.breaks(ksvc, cluster)
    found = problems_of(ksvc, cluster, case.features)
    assert any(case.expected in problem for problem in found), found


def test_the_defaults_of_knative_refuse_a_session_service() -> None:
    """On a cluster with Knative's defaults (no flags, 600 s max), the session-like Service
    fails for each flag it needs. (The Services VWM makes, a session's included, are checked
    against the cluster infra/knative configures in test_manifests.)"""
    found = knative_rules.service_problems(session_service(), {}, 600)
    for needed in (
        PVC_FLAG,
        PVC_WRITE_FLAG,
        SECURITY_CONTEXT_FLAG,
        INIT_CONTAINERS_FLAG,
        FIELDREF_FLAG,
    ):
        assert any(needed in problem for problem in found), needed
    assert any("timeoutSeconds: 3600 is outside 0..600" in problem for problem in found)
    assert any("allow-zero-initial-scale" in problem for problem in found)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0),
        ("0s", 0),
        ("300s", 300 * 10**9),
        ("1h", 3600 * 10**9),
        ("1m30s", 90 * 10**9),
        ("1.5s", 1_500_000_000),
        ("250ms", 250 * 10**6),
        ("", None),
        ("5", None),
        ("s", None),
        ("1h 2m", None),
        ("soon", None),
    ],
)
def test_go_durations(text: str, nanos: int | None) -> None:
    assert knative_rules.go_duration_ns(text) == nanos


# -- eventing ------------------------------------------------------------------------------------


def trigger() -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t", "namespace": "vwm"},
        "spec": {
            "broker": "vwm",
            "filter": {"attributes": {"type": "dev.vwm.job.started"}},
            "subscriber": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": "vwm-events",
                }
            },
            "delivery": {
                "retry": 3,
                "backoffPolicy": "exponential",
                "backoffDelay": "PT0.5S",
                "timeout": "PT1M",
                "deadLetterSink": {"uri": "http://dead.vwm.svc.cluster.local"},
            },
        },
    }


def ping_source() -> dict[str, Any]:
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "PingSource",
        "metadata": {"name": "tick", "namespace": "vwm"},
        "spec": {
            "schedule": "*/5 * * * *",
            "contentType": "application/json",
            "data": '{"schedule": "*/5 * * * *"}',
            "sink": {
                "ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "vwm"}
            },
        },
    }


DELIVERY_CASES = [
    ("typo", lambda d: d.update(backofPolicy="linear"), "backofPolicy: unknown field"),
    ("policy", lambda d: d.update(backoffPolicy="fibonacci"), "must be linear or exponential"),
    ("go-duration", lambda d: d.update(backoffDelay="0.5s"), "not an ISO 8601 duration"),
    ("timeout", lambda d: d.update(timeout="60"), "not an ISO 8601 duration"),
    ("retry", lambda d: d.update(retry=-1), "not a whole number"),
    ("dead-letter-empty", lambda d: d.update(deadLetterSink={}), "got neither: ref, uri"),
    (
        "dead-letter-ref",
        lambda d: d.update(deadLetterSink={"ref": {"kind": "Service"}}),
        "ref.name: Required",
    ),
]


def test_a_valid_trigger_and_ping_source_pass() -> None:
    assert knative_rules.trigger_problems(trigger()) == []
    assert knative_rules.pingsource_problems(ping_source()) == []


@pytest.mark.parametrize(
    ("case", "breaks", "expected"), DELIVERY_CASES, ids=[c[0] for c in DELIVERY_CASES]
)
def test_delivery_rules_catch_what_the_open_schema_lets_through(
    case: str, breaks: Callable[[dict[str, Any]], None], expected: str
) -> None:
    broken = trigger()
    breaks(broken["spec"]["delivery"])
    assert any(expected in problem for problem in knative_rules.trigger_problems(broken))
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "vwm"},
        "spec": {"delivery": broken["spec"]["delivery"]},
    }
    assert any(expected in problem for problem in knative_rules.broker_problems(broker))


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (lambda s: s.update(schedule="every minute"), "not a five-field cron schedule"),
        (lambda s: s.update(schedule="* * * *"), "not a five-field cron schedule"),
        (lambda s: s.update(data="schedule=1"), "is not JSON"),
        (lambda s: s.update(dataBase64="e30="), "got both: data, dataBase64"),
        (lambda s: s.pop("sink"), "got neither: ref, uri"),
        (lambda s: s.update(ceOverride={}), "Additional properties are not allowed"),
    ],
    ids=["words", "four-fields", "not-json", "both-data", "no-sink", "schema-typo"],
)
def test_ping_source_rules(breaks: Callable[[dict[str, Any]], None], expected: str) -> None:
    source = ping_source()
    breaks(source["spec"])
    found = knative_rules.pingsource_problems(source)
    assert any(expected in problem for problem in found), found
