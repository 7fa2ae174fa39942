"""Validate custom objects against a CRD's OpenAPI schema the way ``kubectl --validate=strict``
would: unknown fields are errors where the schema does not preserve them, int-or-string takes
either, ``apiVersion``, ``kind`` and ``metadata`` are allowed at the root. The schemas are in
tests/fixtures/k8s-schemas (see its README for their source)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent.parent / "fixtures" / "k8s-schemas"
TRIGGER_SCHEMA = SCHEMAS / "eventing-v1.22.2" / "trigger-eventing-v1.json"
BROKER_SCHEMA = SCHEMAS / "eventing-v1.22.2" / "broker-eventing-v1.json"
PINGSOURCE_SCHEMA = SCHEMAS / "eventing-v1.22.2" / "pingsource-sources-v1.json"
SERVICE_SCHEMA = SCHEMAS / "serving-v1.23.0" / "service-serving-v1.json"
KNATIVE_SERVING_SCHEMA = SCHEMAS / "operator-v1.23.0" / "knativeserving-operator-v1beta1.json"
KNATIVE_EVENTING_SCHEMA = SCHEMAS / "operator-v1.23.0" / "knativeeventing-operator-v1beta1.json"
# The custom kinds with a vendored schema, by (apiVersion, kind).
CUSTOM_SCHEMAS = {
    ("serving.knative.dev/v1", "Service"): SERVICE_SCHEMA,
    ("eventing.knative.dev/v1", "Broker"): BROKER_SCHEMA,
    ("eventing.knative.dev/v1", "Trigger"): TRIGGER_SCHEMA,
    ("sources.knative.dev/v1", "PingSource"): PINGSOURCE_SCHEMA,
    ("operator.knative.dev/v1beta1", "KnativeServing"): KNATIVE_SERVING_SCHEMA,
    ("operator.knative.dev/v1beta1", "KnativeEventing"): KNATIVE_EVENTING_SCHEMA,
}
# The Kubernetes release whose built-in schemas core kinds are checked against
# (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.32"

_ROOT_FIELDS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a structural schema with Kubernetes' extensions written as JSON Schema."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        preserved = node.get("x-kubernetes-preserve-unknown-fields", False)
        if "properties" in node and not preserved and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for child in node.get("properties", {}).values():
            walk(child)
        walk(node.get("items"))
        walk(node.get("additionalProperties"))

    walk(schema)
    schema["properties"] = {**_ROOT_FIELDS, **schema.get("properties", {})}
    schema["additionalProperties"] = False
    schema["required"] = ["apiVersion", "kind", "metadata"]
    return schema


@cache
def validator(path: Path) -> Draft202012Validator:
    return Draft202012Validator(strict(json.loads(path.read_text())))


def problems(path: Path, obj: Any) -> list[str]:
    """Every way `obj` breaks the schema at `path`, as ``field: message``; empty when valid."""
    return [
        f"{'.'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator(path).iter_errors(obj)
    ]


def trigger_problems(trigger: Any) -> list[str]:
    """A Trigger's schema problems, plus the rules Knative's webhook adds that the schema does
    not show (trigger_validation.go): a broker, a subscriber with a `uri` or a `ref`."""
    found = problems(TRIGGER_SCHEMA, trigger)
    spec = trigger.get("spec") if isinstance(trigger, dict) else None
    if not isinstance(spec, dict):
        return [*found, "spec: Required value"]
    if not spec.get("broker") and not spec.get("brokerRef"):
        found.append("spec.broker: Required value")
    subscriber = spec.get("subscriber")
    if not isinstance(subscriber, dict) or not (subscriber.get("uri") or subscriber.get("ref")):
        found.append("spec.subscriber: expected exactly one, got neither: ref, uri")
    return found


def core_problems(obj: Any, version: str = KUBERNETES_VERSION) -> list[str]:
    """A built-in kind's problems (ConfigMap, Role, Job ...) against Kubernetes `version`'s
    schema, unknown fields refused (``kubectl --validate=strict``); empty when valid."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path) or "<root>"
        return [f"{where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"<root>: no Kubernetes {version} schema for this kind ({error})"]
    return []


def custom_problems(obj: Any) -> list[str]:
    """A custom kind's schema problems, for the kinds of `CUSTOM_SCHEMAS`."""
    path = CUSTOM_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if path is None:
        return [f"<root>: no vendored schema for {obj.get('apiVersion')} {obj.get('kind')}"]
    return problems(path, obj)
