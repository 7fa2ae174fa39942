"""The manifests of infra/knative as the tests see them: rendered with example values for their
``${name}`` placeholders (what Terraform's templatefile and ``envsubst`` fill in), parsed into
documents. `TEMPLATE_VARIABLES` is the full set of placeholders a manifest may use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KNATIVE = INFRA / "knative"
CLUSTER = KNATIVE / "cluster"
# What the control plane makes per session, generated from its builder to read: no manifest to
# apply (tests/infra/test_session_example.py checks it).
EXAMPLES = KNATIVE / "examples"

TEMPLATE_VARIABLES = {
    "namespace": "vwm",
    "functions_image": "registry.example.com/vwm/functions:0.1.0",
    "harness_image": "registry.example.com/vwm/harness:0.1.0",
    "dead_letter_image": "gcr.io/knative-releases/knative.dev/eventing/cmd/event_display:v1.22.2",
    "skills_bucket_name": "acme-vwm-skills",
    "aws_region": "eu-central-1",
}
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Document:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(KNATIVE)}#{self.index}:{self.kind}/{self.name}"


def manifest_files() -> list[Path]:
    """The manifests to apply: infra/knative and its cluster/, not its examples/."""
    return sorted(path for path in KNATIVE.rglob("*.yaml") if EXAMPLES not in path.parents)


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str] = TEMPLATE_VARIABLES) -> str:
    """`text` with every ``${name}`` replaced; KeyError for a name with no value."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def documents(values: Mapping[str, str] = TEMPLATE_VARIABLES) -> list[Document]:
    found = []
    for path in manifest_files():
        bodies = yaml.safe_load_all(render(path.read_text(), values))
        found += [Document(path, i, body) for i, body in enumerate(bodies) if body]
    return found


def of_kind(kind: str) -> list[Document]:
    return [doc for doc in documents() if doc.kind == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (body,) = [doc.body for doc in of_kind(kind) if doc.name == name]
    return body
