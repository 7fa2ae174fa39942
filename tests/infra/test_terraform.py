"""infra/terraform: formatted, the AWS module valid (``terraform validate`` against the offline
provider mirror, when there is one), and the structure of every file checked by parsing it
(python-hcl2), since the kubernetes, helm and random providers cannot be fetched here: documented
and typed variables, pinned providers, the Knative settings equal to infra/knative/cluster, the
manifests' placeholders and Secrets wired as the functions read them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.infra.manifests import CLUSTER, INFRA, REPO, TEMPLATE_VARIABLES, of_kind, one
from tests.infra.settings_read import read_by_a_function

TERRAFORM = INFRA / "terraform"
AWS_MODULE = TERRAFORM / "modules" / "aws"
# An offline copy of hashicorp/aws to validate against: ``VWM_TF_PROVIDER_MIRROR`` (a
# filesystem mirror: <dir>/registry.terraform.io/hashicorp/aws/...), else terraform's own implicit
# local mirror folders. Without one, validation is skipped (the registry may be unreachable).
IMPLICIT_MIRRORS = (
    Path.home() / ".terraform.d" / "plugins",
    Path("/usr/local/share/terraform/plugins"),
    Path("/usr/share/terraform/plugins"),
)


def provider_mirror() -> Path | None:
    named = os.environ.get("VWM_TF_PROVIDER_MIRROR")
    candidates = [Path(named)] if named else list(IMPLICIT_MIRRORS)
    for folder in candidates:
        if (folder / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return folder
    return None


MODULES = [TERRAFORM, AWS_MODULE]


def unquote(node: Any) -> Any:
    """python-hcl2's output with the quotes around strings and keys removed and its own
    bookkeeping (``__is_block__``, ``__comments__``) dropped."""
    if isinstance(node, dict):
        return {unquote(k): unquote(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [unquote(item) for item in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1].replace('\\"', '"')
    return node


@cache
def parsed(path: Path) -> dict[str, Any]:
    with path.open() as file:
        return unquote(hcl2.load(file))


def blocks(module: Path, kind: str) -> dict[str, Any]:
    """Every `kind` block (variable, output, locals entry, module) of a module, by name."""
    found: dict[str, Any] = {}
    for path in sorted(module.glob("*.tf")):
        for block in parsed(path).get(kind, []):
            found.update(block)
    return found


def resources(module: Path) -> dict[str, dict[str, Any]]:
    """``type.name`` -> body, for the resources and data sources of a module."""
    found = {}
    for path in sorted(module.glob("*.tf")):
        for kind in ("resource", "data"):
            for block in parsed(path).get(kind, []):
                for type_, named in block.items():
                    for name, body in named.items():
                        found[f"{type_}.{name}"] = body
    return found


def required_providers(module: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in module.glob("*.tf"):
        for terraform in parsed(path).get("terraform", []):
            for block in terraform.get("required_providers", []):
                found.update(block)
    return found


# -- the terraform binary ------------------------------------------------------------------------


def terraform() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed")
    return binary


def test_every_file_is_formatted() -> None:
    result = subprocess.run(
        [terraform(), "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_aws_module_is_valid(tmp_path: Path) -> None:
    binary = terraform()
    mirror = provider_mirror()
    if mirror is None:
        pytest.skip("no offline copy of hashicorp/aws to validate against (VWM_TF_PROVIDER_MIRROR)")
    config = tmp_path / "cli.tfrc"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n'
    )
    module = tmp_path / "aws"
    shutil.copytree(AWS_MODULE, module)
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1"}
    env.pop("TF_DATA_DIR", None)
    init = subprocess.run(
        [binary, "init", "-backend=false", "-input=false", "-no-color"],
        cwd=module,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    validate = subprocess.run(
        [binary, "validate", "-json", "-no-color"],
        cwd=module,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(validate.stdout)
    assert report["valid"], report["diagnostics"]
    assert report["warning_count"] == 0, report["diagnostics"]


# -- structure ------------------------------------------------------------------------------------


def test_every_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 10
    for path in files:
        assert isinstance(parsed(path), dict), path


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_variable_has_a_description_and_a_type(module: Path) -> None:
    variables = blocks(module, "variable")
    assert variables
    for name, body in variables.items():
        assert body.get("description", "").strip(), f"{name}: no description"
        assert body.get("type"), f"{name}: no type"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_output_has_a_description(module: Path) -> None:
    outputs = blocks(module, "output")
    assert outputs
    assert [name for name, body in outputs.items() if not body.get("description")] == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_provider_used_is_pinned(module: Path) -> None:
    pinned = required_providers(module)
    used = {address.split("_")[0] for address in resources(module)}
    used |= {
        name
        for path in module.glob("*.tf")
        for block in parsed(path).get("provider", [])
        for name in block
    }
    assert used, module
    assert used <= set(pinned), used - set(pinned)
    for name, requirement in pinned.items():
        assert requirement["source"] == f"hashicorp/{name}"
        assert requirement["version"].startswith("~>"), name
    versions = [t for p in module.glob("*.tf") for t in parsed(p).get("terraform", [])]
    assert any(t.get("required_version") for t in versions)


def test_the_aws_module_needs_only_the_aws_provider_so_it_validates_offline() -> None:
    assert set(required_providers(AWS_MODULE)) == {"aws"}


def test_the_root_passes_the_aws_module_only_arguments_it_declares() -> None:
    (call,) = [body for name, body in blocks(TERRAFORM, "module").items() if name == "aws"]
    declared = blocks(AWS_MODULE, "variable")
    given = set(call) - {"source"}
    assert given <= set(declared), given - set(declared)
    required = {name for name, body in declared.items() if "default" not in body}
    assert required <= given


def test_choices_are_validated() -> None:
    variables = blocks(TERRAFORM, "variable")
    for name in (
        "database_mode",
        "namespace",
        "functions_image",
        "harness_image",
        "token_key",
        "settings",
    ):
        assert variables[name].get("validation"), name
    assert variables["token_key"].get("sensitive") is True


# -- the same settings as the manifests ------------------------------------------------------------


def cluster_manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / name).read_text())


def with_locals(value: Any) -> Any:
    """`value` with each ``${local.NAME}`` replaced by that local's value."""
    if isinstance(value, dict):
        return {key: with_locals(item) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("${local.") and value.endswith("}"):
        return blocks(TERRAFORM, "locals")[value.removeprefix("${local.").removesuffix("}")]
    return value


def test_the_knative_serving_settings_equal_the_cluster_manifest() -> None:
    config = cluster_manifest("knative-serving.yaml")["spec"]["config"]
    (serving,) = [
        body
        for address, body in resources(TERRAFORM).items()
        if address == "kubernetes_manifest.knative_serving"
    ]
    spec = serving["manifest"]["spec"]
    assert with_locals(spec["config"]) == config
    assert spec["ingress"] == cluster_manifest("knative-serving.yaml")["spec"]["ingress"]


def test_the_knative_eventing_settings_equal_the_cluster_manifest() -> None:
    manifest = cluster_manifest("knative-eventing.yaml")["spec"]
    (eventing,) = [
        body
        for address, body in resources(TERRAFORM).items()
        if address == "kubernetes_manifest.knative_eventing"
    ]
    assert with_locals(eventing["manifest"]["spec"]["config"]) == manifest["config"]
    assert eventing["manifest"]["spec"]["defaultBrokerClass"] == manifest["defaultBrokerClass"]


def test_the_knative_versions_default_to_the_cluster_manifests() -> None:
    variables = blocks(TERRAFORM, "variable")
    assert (
        variables["knative_serving_version"]["default"]
        == cluster_manifest("knative-serving.yaml")["spec"]["version"]
    )
    assert (
        variables["knative_eventing_version"]["default"]
        == cluster_manifest("knative-eventing.yaml")["spec"]["version"]
    )


def test_the_manifests_get_a_value_for_every_placeholder() -> None:
    values = blocks(TERRAFORM, "locals")["template_values"]
    assert set(values) == set(TEMPLATE_VARIABLES)
    for name, expression in values.items():
        assert expression == f"${{var.{name}}}"
        assert name in blocks(TERRAFORM, "variable")


def test_the_settings_terraform_adds_are_ones_the_functions_read() -> None:
    """`var.settings` goes over the ConfigMap's data: its default and the example its
    description (and docs/operations.md) gives must be settings a function reads, with values
    that work."""
    variable = blocks(TERRAFORM, "variable")["settings"]
    operations = (REPO / "docs" / "operations.md").read_text()
    for source in (variable["description"], operations):
        example = dict(re.findall(r'(VWM_[A-Z0-9_]+) = "([^"]*)"', source))
        assert example
        added = {**variable["default"], **example}
        env = {**one("ConfigMap", "vwm-config")["data"], **added}
        assert set(added) <= read_by_a_function(env)


def test_the_secrets_are_the_ones_the_functions_read() -> None:
    made = {
        body["metadata"][0]["name"]: set(body["data"])
        for address, body in resources(TERRAFORM).items()
        if address.startswith("kubernetes_secret_v1.")
    }
    read: dict[str, set[str]] = {}
    for doc in of_kind("Service"):
        pod = doc.body["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    read.setdefault(ref["name"], set()).add(ref["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                read.setdefault(volume["secret"]["secretName"], set())
    assert set(made) == set(read)
    for name, keys in read.items():
        assert keys <= made[name], name
    # The key file the functions are told to read is the Secret's `key`.
    assert made["vwm-token-key"] == {"key"}


def test_the_skills_bucket_is_versioned_encrypted_and_private() -> None:
    found = resources(AWS_MODULE)
    (versioning,) = found["aws_s3_bucket_versioning.skills"]["versioning_configuration"]
    assert versioning["status"] == "Enabled"
    (rule,) = found["aws_s3_bucket_server_side_encryption_configuration.skills"]["rule"]
    assert rule["apply_server_side_encryption_by_default"][0]["sse_algorithm"] in (
        "aws:kms",
        "AES256",
    )
    block = found["aws_s3_bucket_public_access_block.skills"]
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[setting] is True, setting


def test_the_database_is_private_encrypted_and_backed_up() -> None:
    database = resources(AWS_MODULE)["aws_db_instance.vwm"]
    assert database["publicly_accessible"] is False
    assert database["storage_encrypted"] is True
    assert database["skip_final_snapshot"] is False
    assert database["engine"] == "postgres"
