"""infra/knative/examples/session.yaml is what the Knative backend's builder makes for the example
session now (its command is run and the output compared), every object in it passes the API
server's schemas and Knative's webhooks on the cluster infra/knative configures, it is what this
deployment's settings make for that session, it holds no secret, and nothing applies it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.context import token_key
from functions.db.models import Runtime, Worker, WorkerSession
from functions.runtime import knative_example
from functions.services import Services, bound
from functions.session_runtime import SessionView, harness_spec
from functions.settings import ControlPlaneSettings
from tests.infra.manifests import EXAMPLES, INFRA, REPO, documents, manifest_files, one
from tests.support import k8s_schema, knative_rules

EXAMPLE = EXAMPLES / "session.yaml"


def example_documents() -> list[dict[str, Any]]:
    return [body for body in yaml.safe_load_all(EXAMPLE.read_text()) if body]


def test_the_checked_in_example_is_what_the_command_prints_now() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "functions.runtime.knative_example"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text(), (
        "infra/knative/examples/session.yaml is stale: run ./task knative:example"
    )


def test_it_holds_the_four_objects_of_one_session_in_creation_order() -> None:
    found = example_documents()
    assert found == knative_example.example_objects().all
    assert [body["kind"] for body in found] == [
        "Secret",
        "PersistentVolumeClaim",
        "Service",
        "Trigger",
    ]


def test_every_object_passes_the_schemas_and_the_webhooks_of_the_cluster() -> None:
    secret, volume, service, trigger = example_documents()
    assert k8s_schema.core_problems(secret) == []
    assert k8s_schema.core_problems(volume) == []
    assert knative_rules.cluster_service_problems(service) == []
    assert knative_rules.trigger_problems(trigger) == []


def test_its_secrets_are_placeholders_kept_out_of_the_service() -> None:
    secret, _, service, _ = example_documents()
    assert secret["stringData"] == {
        "VWM_SESSION_TOKEN": knative_example.TOKEN_PLACEHOLDER,
        "VWM_PROVIDER_API_KEY": knative_example.CREDENTIAL_PLACEHOLDER,
        "VWM_CHARGE_TOKEN": knative_example.CHARGE_TOKEN_PLACEHOLDER,
    }
    (container,) = service["spec"]["template"]["spec"]["containers"]
    from_secret = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container["env"]
        if "valueFrom" in item
    }
    assert from_secret == {
        key: {"name": secret["metadata"]["name"], "key": key} for key in secret["stringData"]
    }


def test_it_is_what_this_deployment_makes_for_the_example_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "token-key"
    key_file.write_bytes(os.urandom(48))
    key_file.chmod(0o400)
    env = {
        **one("ConfigMap", "vwm-config")["data"],
        "VWM_DATABASE_URL": "postgresql://db/vwm",
        "VWM_TOKEN_KEY_FILE": str(key_file),
    }
    settings = ControlPlaneSettings.from_env(env)
    assert settings.knative_sessions == knative_example.example_settings()
    assert settings.knative_namespace == knative_example.NAMESPACE
    assert settings.knative_broker == knative_example.BROKER
    assert settings.harness_event_sink == knative_example.EVENT_SINK
    # The spec is the one the sessions function builds from the example's rows.
    monkeypatch.setenv("ANTHROPIC_API_KEY", knative_example.CREDENTIAL_PLACEHOLDER)
    monkeypatch.delenv("VWM_CLAUDE_BIN", raising=False)
    runtime = Runtime(
        name="claude",
        cli=knative_example.CLI,
        cli_version=knative_example.CLI_VERSION,
        default_model=knative_example.MODEL,
        credential_ref="ANTHROPIC_API_KEY",
    )
    worker = Worker(name=knative_example.WORKER, repo_url="https://example.com/knowledge.git")
    session = WorkerSession(id=knative_example.SESSION_ID)
    with bound(Services(settings)):
        spec = harness_spec(SessionView(session, worker, runtime))
        charge_token = token_key().charge_token(session.id)
    # The charge token is derived from the token key: the example shows a placeholder.
    assert spec.credential_env["VWM_CHARGE_TOKEN"] == charge_token
    spec.credential_env["VWM_CHARGE_TOKEN"] = knative_example.CHARGE_TOKEN_PLACEHOLDER
    assert spec == knative_example.example_spec()


def test_nothing_applies_it() -> None:
    assert EXAMPLE not in manifest_files()
    assert all(doc.path != EXAMPLE for doc in documents())
    # Terraform applies the files of infra/knative itself (fileset does not descend).
    vwm_tf = (INFRA / "terraform" / "vwm.tf").read_text()
    assert 'fileset(local.manifest_dir, "*.yaml")' in vwm_tf
    # docs/operations.md applies named files, and cluster/ without descending.
    operations = (REPO / "docs" / "operations.md").read_text()
    applies = [line for line in operations.splitlines() if "kubectl apply" in line]
    assert applies
    for line in applies:
        assert not re.search(r"(^|\s)(-R|--recursive)\b", line), line
        assert "examples" not in line and not re.search(r"infra/knative/?(\s|$)", line), line
