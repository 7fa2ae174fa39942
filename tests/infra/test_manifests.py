"""The manifests of infra/knative are what the API server and Knative's webhooks accept, and they
wire the control plane the way its code reads its settings: core kinds against Kubernetes' own
schemas (strict), Knative kinds against their CRD schemas made strict plus the webhook rules of
tests/support/knative_rules.py, and the settings, routes and permissions checked against the code."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from eventing.events import (
    CATALOGUE,
    PROMPT_REQUESTED,
    SESSION_END_REQUESTED,
    decode_event,
)
from eventing.events.payloads import Tick
from functions.job_log import JOB_TYPES
from functions.main import FUNCTIONS, HTTP_FUNCTIONS, STATIC_FUNCTIONS
from functions.runtime.base import HarnessSpec
from functions.runtime.knative_objects import SessionObjects, build
from functions.settings import ControlPlaneSettings, KnativeSessionSettings
from tests.infra.manifests import (
    CLUSTER,
    KNATIVE,
    REPO,
    TEMPLATE_VARIABLES,
    Document,
    documents,
    manifest_files,
    of_kind,
    one,
    placeholders,
)
from tests.infra.settings_read import read_by_a_function
from tests.support import k8s_schema, knative_rules

CORE_API_VERSIONS = ("v1", "rbac.authorization.k8s.io/v1", "batch/v1")
DOCUMENTS = documents()
CORE = [doc for doc in DOCUMENTS if doc.body["apiVersion"] in CORE_API_VERSIONS]
CUSTOM = [doc for doc in DOCUMENTS if doc.body["apiVersion"] not in CORE_API_VERSIONS]
NAMESPACE = TEMPLATE_VARIABLES["namespace"]
EVENTS_SERVICE = "vwm-events"
PING_TYPE = "dev.knative.sources.ping"


def ids(docs: list[Document]) -> list[str]:
    return [doc.id for doc in docs]


def test_the_manifests_use_only_the_template_variables_and_no_terraform_directives() -> None:
    used: set[str] = set()
    for path in manifest_files():
        text = path.read_text()
        used |= placeholders(text)
        assert "%{" not in text, f"{path.name}: Terraform would read %{{ as a template directive"
    assert used == set(TEMPLATE_VARIABLES)


def test_every_kind_is_checked_by_one_validator() -> None:
    kinds = {(doc.body["apiVersion"], doc.kind) for doc in CUSTOM}
    assert kinds <= set(k8s_schema.CUSTOM_SCHEMAS), kinds - set(k8s_schema.CUSTOM_SCHEMAS)
    assert {doc.kind for doc in CORE} >= {"Namespace", "ConfigMap", "ServiceAccount", "Role"}


@pytest.mark.parametrize("doc", CORE, ids=ids(CORE))
def test_core_kinds_are_valid_kubernetes(doc: Document) -> None:
    assert k8s_schema.core_problems(doc.body) == []


@pytest.mark.parametrize("doc", CUSTOM, ids=ids(CUSTOM))
def test_knative_kinds_fit_their_crd_schema_strictly(doc: Document) -> None:
    assert k8s_schema.custom_problems(doc.body) == []


@pytest.mark.parametrize("doc", of_kind("Service"), ids=ids(of_kind("Service")))
def test_every_service_passes_the_serving_webhook_on_the_configured_cluster(doc: Document) -> None:
    assert knative_rules.cluster_service_problems(doc.body) == []


def test_the_broker_triggers_and_tick_pass_the_eventing_rules() -> None:
    problems = [
        *(p for doc in of_kind("Broker") for p in knative_rules.broker_problems(doc.body)),
        *(p for doc in of_kind("Trigger") for p in knative_rules.trigger_problems(doc.body)),
        *(p for doc in of_kind("PingSource") for p in knative_rules.pingsource_problems(doc.body)),
    ]
    assert problems == []


def test_every_namespaced_object_is_in_the_vwm_namespace() -> None:
    outside = [
        doc.id
        for doc in DOCUMENTS
        if doc.path.parent == KNATIVE
        and doc.kind != "Namespace"
        and doc.body["metadata"].get("namespace") != NAMESPACE
    ]
    assert outside == []


# -- the functions ------------------------------------------------------------------------------


def function_services(*, static: bool = False) -> dict[str, dict[str, Any]]:
    """FUNCTION_TARGET -> the Service that serves it; the static ones (the console, which has no
    settings, database or secrets) only when `static`."""
    found = {}
    for doc in of_kind("Service"):
        (container,) = doc.body["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container.get("env", [])}
        if "FUNCTION_TARGET" in env and (static or env["FUNCTION_TARGET"] not in STATIC_FUNCTIONS):
            found[env["FUNCTION_TARGET"]] = doc.body
    return found


def container(service: dict[str, Any]) -> dict[str, Any]:
    return service["spec"]["template"]["spec"]["containers"][0]


def test_one_service_per_function_target_all_from_the_functions_image() -> None:
    services = function_services(static=True)
    assert sorted(services) == sorted((*FUNCTIONS, *STATIC_FUNCTIONS))
    images = {container(service)["image"] for service in services.values()}
    assert images == {TEMPLATE_VARIABLES["functions_image"]}


def test_only_the_events_function_takes_cloudevents_and_it_is_cluster_local() -> None:
    services = function_services()
    assert container(services["events"]).get("args") == ["--signature-type", "cloudevent"]
    assert services["events"]["metadata"]["name"] == EVENTS_SERVICE
    labels = services["events"]["metadata"]["labels"]
    assert labels["networking.knative.dev/visibility"] == "cluster-local"
    for name in HTTP_FUNCTIONS:
        assert "args" not in container(services[name]), name


def test_the_console_holds_no_secret_and_scales_to_zero() -> None:
    console = function_services(static=True)["console"]
    pod = console["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert [v for v in pod.get("volumes", []) if "secret" in v] == []
    assert "envFrom" not in container(console)
    assert [item["name"] for item in container(console)["env"]] == ["FUNCTION_TARGET"]
    annotations = console["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"


def test_the_http_functions_scale_to_zero() -> None:
    services = function_services()
    for name in HTTP_FUNCTIONS:
        annotations = services[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["autoscaling.knative.dev/min-scale"] == "0", name


def test_prompts_may_stream_as_long_as_the_cluster_allows() -> None:
    spec = function_services()["prompts"]["spec"]["template"]["spec"]
    limit = knative_rules.cluster_settings().max_revision_timeout_s
    assert spec["timeoutSeconds"] == limit
    # A sync prompt answers only when the run ends: no earlier first byte to wait for.
    assert spec["responseStartTimeoutSeconds"] == limit
    assert "idleTimeoutSeconds" not in spec


def function_environment(service: dict[str, Any]) -> dict[str, str]:
    """What a function's process sees: the ConfigMaps it loads, its own env, and an example
    value for each variable that comes from a Secret."""
    env: dict[str, str] = {}
    for source in container(service).get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container(service).get("env", []):
        env[item["name"]] = (
            item.get("value") or f"secret:{item['valueFrom']['secretKeyRef']['name']}"
        )
    return env


def test_the_functions_settings_parse_and_describe_this_deployment() -> None:
    for name, service in function_services().items():
        env = function_environment(service)
        env["VWM_DATABASE_URL"] = "postgresql+pg8000://vwm@db/vwm"
        settings = ControlPlaneSettings.from_env(env)
        assert settings.runtime_backend == "knative", name
        assert settings.eventing == "knative"
        assert settings.knative_namespace == NAMESPACE
        broker = one("Broker", settings.knative_broker)
        ingress = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/{broker['metadata']['name']}"
        assert settings.harness_event_sink == ingress
        assert env["VWM_EVENT_SINK"] == ingress
        sessions = settings.knative_sessions
        assert sessions.harness_image == TEMPLATE_VARIABLES["harness_image"]
        assert sessions.request_timeout_s <= knative_rules.cluster_settings().max_revision_timeout_s
        account = one("ServiceAccount", sessions.service_account)
        assert account["automountServiceAccountToken"] is False


def test_the_token_key_file_is_the_mounted_secret() -> None:
    for name, service in function_services().items():
        key_file = function_environment(service)["VWM_TOKEN_KEY_FILE"]
        pod = service["spec"]["template"]["spec"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        mounts = {
            m["mountPath"]: m["name"]
            for m in container(service)["volumeMounts"]
            if m.get("readOnly")
        }
        directory, _, key = key_file.rpartition("/")
        assert secrets[mounts[directory]] == "vwm-token-key", name
        assert key == "key"


def test_every_vwm_variable_a_function_is_given_is_one_it_reads_with_a_valid_value() -> None:
    for name, service in function_services().items():
        env = function_environment(service)
        given = {variable for variable in env if variable.startswith("VWM_")}
        read = read_by_a_function(env)  # raises on a value that cannot work
        # Read when functions.main is loaded: see the test below.
        unread = given - read - {"VWM_LOG_LEVEL"}
        assert unread == set(), f"{name}: nothing reads {sorted(unread)}"
    level = one("ConfigMap", "vwm-config")["data"]["VWM_LOG_LEVEL"]
    assert level.upper() in logging.getLevelNamesMapping()


def test_the_functions_log_at_the_level_the_config_map_sets() -> None:
    level = one("ConfigMap", "vwm-config")["data"]["VWM_LOG_LEVEL"]
    script = (
        "import logging, functions.main; print(logging.getLevelName(logging.getLogger().level))"
    )
    wanted = "DEBUG" if level != "DEBUG" else "ERROR"  # not Python's default either way
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "VWM_LOG_LEVEL": wanted, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == wanted


def test_every_config_map_is_loaded_by_every_function() -> None:
    for name, service in function_services().items():
        loaded = {source["configMapRef"]["name"] for source in container(service)["envFrom"]}
        assert loaded == {doc.name for doc in of_kind("ConfigMap")}, name


def test_the_migration_job_uses_every_variable_it_is_given() -> None:
    job = one("Job", "vwm-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    given = {item["name"] for item in migrate.get("env", [])}
    referenced = set(re.findall(r"\$\(([A-Z0-9_]+)\)", " ".join(migrate["command"])))
    assert given == referenced == {"VWM_DATABASE_URL"}


def test_every_function_runs_as_the_account_the_role_is_bound_to() -> None:
    # What the Role grants is checked against the code's requests in test_control_plane_access.
    binding = one("RoleBinding", "vwm-control-plane")
    assert binding["roleRef"]["name"] == "vwm-control-plane"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vwm-control-plane", "namespace": NAMESPACE}
    ]
    for service in function_services().values():
        assert service["spec"]["template"]["spec"]["serviceAccountName"] == "vwm-control-plane"


def test_nothing_grants_the_session_account_anything() -> None:
    subjects = [s["name"] for doc in of_kind("RoleBinding") for s in doc.body["subjects"]]
    assert "vwm-session" not in subjects


# -- events -------------------------------------------------------------------------------------


def matches(trigger: dict[str, Any], attributes: dict[str, str]) -> bool:
    """Whether a Trigger's filter passes an event (exact attributes, or the `filters` dialect's
    exact/prefix/suffix/all/any), as the Broker decides."""
    spec = trigger["spec"]
    if "filters" in spec:
        return all(_passes(expression, attributes) for expression in spec["filters"])
    wanted = spec.get("filter", {}).get("attributes", {})
    return all(attributes.get(key) == value for key, value in wanted.items())


def _passes(expression: dict[str, Any], attributes: dict[str, str]) -> bool:
    ((dialect, body),) = expression.items()
    if dialect == "all":
        return all(_passes(item, attributes) for item in body)
    if dialect == "any":
        return any(_passes(item, attributes) for item in body)
    test = {
        "exact": lambda value, want: value == want,
        "prefix": lambda value, want: value.startswith(want),
        "suffix": lambda value, want: value.endswith(want),
    }[dialect]
    return all(test(attributes.get(key, ""), want) for key, want in body.items())


def routed_to(service: str, attributes: dict[str, str]) -> list[str]:
    return [
        doc.name
        for doc in of_kind("Trigger")
        if doc.body["spec"]["subscriber"]["ref"]["name"] == service
        and matches(doc.body, attributes)
    ]


def ping_event() -> dict[str, str]:
    """The attributes of the PingSource's events (Knative sets its type and source)."""
    source = one("PingSource", "vwm-tick")
    path = f"/apis/v1/namespaces/{NAMESPACE}/pingsources/{source['metadata']['name']}"
    return {"type": PING_TYPE, "source": path}


HANDLED = sorted({*JOB_TYPES, PROMPT_REQUESTED, SESSION_END_REQUESTED})


@pytest.mark.parametrize("event_type", HANDLED)
def test_each_type_the_events_function_handles_reaches_it_once(event_type: str) -> None:
    attributes = {"type": event_type, "source": "/vwm/harness/s1"}
    assert len(routed_to(EVENTS_SERVICE, attributes)) == 1


def test_types_it_only_acknowledges_are_not_routed_to_it() -> None:
    for event_type in sorted(set(CATALOGUE) - set(HANDLED) - {"dev.vwm.tick"}):
        assert routed_to(EVENTS_SERVICE, {"type": event_type, "source": "/x"}) == []


def test_the_tick_reaches_the_events_function_once_a_minute() -> None:
    assert len(routed_to(EVENTS_SERVICE, ping_event())) == 1
    source = one("PingSource", "vwm-tick")
    assert source["spec"]["schedule"] == "* * * * *"
    assert source["spec"]["sink"]["ref"] == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "name": "vwm",
    }
    # Only this PingSource's pings: another one in the namespace is not a tick.
    assert routed_to(EVENTS_SERVICE, {**ping_event(), "source": "/other"}) == []


def test_the_tick_data_is_a_tick_payload() -> None:
    source = one("PingSource", "vwm-tick")
    tick = Tick.model_validate_json(source["spec"]["data"])
    assert tick.schedule == source["spec"]["schedule"]


def test_the_events_function_decodes_the_pingsource_event_as_a_tick() -> None:
    source = one("PingSource", "vwm-tick")
    attributes = {
        "specversion": "1.0",
        "id": "0b4d5a1c-1e4f-4d64-9d0f-4b7e1f1b2c3d",
        "datacontenttype": "application/json",
        **ping_event(),
    }
    event = decode_event(attributes, yaml.safe_load(source["spec"]["data"]))
    assert event.type == "dev.vwm.tick"


def test_every_delivery_retries_with_backoff_into_the_dead_letter_sink() -> None:
    for doc in (*of_kind("Broker"), *of_kind("Trigger")):
        delivery = doc.body["spec"]["delivery"]
        assert delivery["retry"] >= 1, doc.id
        assert delivery["backoffPolicy"] == "exponential", doc.id
        assert delivery["deadLetterSink"]["ref"]["name"] == "vwm-dead-letters", doc.id


def test_every_reference_names_an_object_the_manifests_make() -> None:
    made = {(doc.kind, doc.name) for doc in DOCUMENTS}
    refs = []
    for doc in DOCUMENTS:
        spec = doc.body.get("spec", {})
        for destination in (
            spec.get("subscriber"),
            spec.get("sink"),
            spec.get("delivery", {}).get("deadLetterSink"),
        ):
            if destination and "ref" in destination:
                refs.append((destination["ref"]["kind"], destination["ref"]["name"]))
        if doc.kind == "Trigger":
            refs.append(("Broker", spec["broker"]))
    assert refs
    assert [ref for ref in refs if ref not in made] == []


# -- the cluster ---------------------------------------------------------------------------------


def deployed_settings() -> ControlPlaneSettings:
    """The settings of the function that starts sessions, as this deployment gives them."""
    return ControlPlaneSettings.from_env(function_environment(function_services()["sessions"]))


def a_session(**session_settings: Any) -> SessionObjects:
    """What the Knative backend makes for a session under this deployment's settings (with
    `session_settings` over them)."""
    settings = deployed_settings()
    spec = HarnessSpec(
        session_id="0123456789abcdef0123456789abcdef",
        cli="claude",
        cli_bin=None,
        model=None,
        provider_base_url=None,
        credential_env={"VWM_PROVIDER_API_KEY": "sk-example"},
        job_timeout_s=None,
        extra_env={"VWM_EVENT_SINK": str(settings.harness_event_sink)},
        worker="reviewer",
    )
    return build(
        spec,
        token="token",
        namespace=settings.knative_namespace,
        broker=settings.knative_broker,
        sessions=dataclasses.replace(settings.knative_sessions, **session_settings),
    )


def every_service() -> list[dict[str, Any]]:
    """The Services of the manifests and a session's Service."""
    return [*(doc.body for doc in of_kind("Service")), a_session().service]


def test_a_session_of_this_deployment_passes_the_webhooks_of_its_cluster() -> None:
    session = a_session()
    assert knative_rules.cluster_service_problems(session.service) == []
    assert knative_rules.trigger_problems(session.trigger) == []
    assert session.trigger["spec"]["broker"] == one("Broker", "vwm")["metadata"]["name"]


def test_the_cluster_enables_no_serving_feature_that_no_service_needs() -> None:
    """Each flag infra/knative/cluster turns on is needed: back at Knative's default, some
    Service (of the manifests, or a session's) is refused. (That every Service passes with the
    flags as set is checked above.)"""
    cluster = knative_rules.cluster_settings()
    configured = yaml.safe_load((CLUSTER / "knative-serving.yaml").read_text())["spec"]["config"]
    defaults = knative_rules.default_features()
    for flag, value in configured.get("features", {}).items():
        if value == defaults.get(flag):
            continue
        features = {**cluster.features, flag: defaults.get(flag, "disabled")}
        refused = [
            service["metadata"]["name"]
            for service in every_service()
            if knative_rules.service_problems(
                service,
                features,
                cluster.max_revision_timeout_s,
                allow_zero_initial_scale=cluster.allow_zero_initial_scale,
            )
        ]
        assert refused, f"{flag}: {value} is set, but every Service passes without it"
    if cluster.allow_zero_initial_scale:
        scales = [
            service["spec"]["template"]["metadata"].get("annotations", {})
            for service in every_service()
        ]
        assert any(s.get("autoscaling.knative.dev/initial-scale") == "0" for s in scales), (
            "allow-zero-initial-scale is on, but no Service starts with no pod"
        )


def test_a_session_may_run_as_long_as_its_settings_allow() -> None:
    limit = knative_rules.cluster_settings().max_revision_timeout_s
    # The settings refuse a request timeout the cluster would refuse...
    with pytest.raises(ValueError, match="VWM_SESSION_REQUEST_TIMEOUT_S"):
        KnativeSessionSettings.from_env({"VWM_SESSION_REQUEST_TIMEOUT_S": str(limit + 1)})
    # ...and the longest they take passes its webhook, on the Service and its Trigger.
    longest = KnativeSessionSettings.from_env({"VWM_SESSION_REQUEST_TIMEOUT_S": str(limit)})
    session = a_session(request_timeout_s=longest.request_timeout_s)
    assert knative_rules.cluster_service_problems(session.service) == []
    assert session.trigger["spec"]["delivery"]["timeout"] == f"PT{limit}S"


def test_the_cluster_lets_triggers_bound_each_delivery_attempt() -> None:
    triggers = [*(doc.body for doc in of_kind("Trigger")), a_session().trigger]
    bounded = [t["metadata"]["name"] for t in triggers if "timeout" in t["spec"]["delivery"]]
    assert a_session().trigger["metadata"]["name"] in bounded
    eventing = yaml.safe_load((CLUSTER / "knative-eventing.yaml").read_text())
    assert eventing["spec"]["config"]["features"]["delivery-timeout"] == "enabled"


def test_the_cluster_manifests_are_the_operator_resources() -> None:
    kinds = sorted(doc.kind for doc in DOCUMENTS if doc.path.parent == CLUSTER)
    assert kinds == ["KnativeEventing", "KnativeServing"]
