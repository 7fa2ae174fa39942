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

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent.parent / "fixtures" / "k8s-schemas"
TRIGGER_SCHEMA = SCHEMAS / "eventing-v1.22.2" / "trigger-eventing-v1.json"

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
