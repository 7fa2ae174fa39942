"""Models are built on first use (`eventing.lazy_models`), each keeps its own configuration, and
`build_all` builds what a process imported, as a warm-pool harness does before its claim."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from pydantic import ConfigDict, ValidationError

from eventing.lazy_models import LazyModel, build_all


def test_a_model_is_built_at_its_first_use_with_its_own_configuration():
    class Strict(LazyModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        count: int

    assert not Strict.__pydantic_complete__
    assert Strict(count="3").count == 3  # built here, and validating
    assert Strict.__pydantic_complete__
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Strict(count=1, other=2)
    with pytest.raises(ValidationError, match="frozen"):
        Strict(count=1).count = 2  # type: ignore[misc]


def test_build_all_builds_every_imported_model_once():
    class Parent(LazyModel):
        name: str

    class Child(Parent):
        size: int = 0

    assert not Parent.__pydantic_complete__ and not Child.__pydantic_complete__
    assert build_all() >= 2
    assert Parent.__pydantic_complete__ and Child.__pydantic_complete__
    assert build_all() == 0  # nothing left to build


# A fresh interpreter: this test process has built many models already.
PROJECT_MODELS = textwrap.dedent(
    """
    import pkgutil
    from importlib import import_module
    import eventing, functions, harness, vwm
    for package in (eventing, functions, harness, vwm):  # every module of the project
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                import_module(module.name)
    from pydantic import BaseModel
    from eventing.lazy_models import LazyModel, build_all

    def every(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from every(sub)

    ours = [m for m in every(BaseModel) if m is not LazyModel and m.__module__.split(".")[0] in ("functions", "harness", "eventing", "vwm")]
    eager = sorted(f"{m.__module__}.{m.__qualname__}" for m in ours if not issubclass(m, LazyModel))
    built_at_import = sorted(f"{m.__module__}.{m.__qualname__}" for m in ours if m.__pydantic_complete__)
    # What pydantic builds when it is made, and no LazyModel can defer: a pydantic dataclass, a
    # TypeAdapter kept in a module.
    import dataclasses, sys
    from pydantic import TypeAdapter
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("functions", "harness", "eventing", "vwm"):
            continue
        for attribute, value in vars(module).items():
            pydantic_dataclass = dataclasses.is_dataclass(value) and hasattr(value, "__pydantic_validator__")
            if isinstance(value, TypeAdapter) or (pydantic_dataclass and value.__module__ == name):
                built_at_import.append(f"{name}.{attribute}")
    import json
    print(json.dumps({"models": len(ours), "built": build_all(), "eager": eager, "generic": sum(1 for m in ours if m.__pydantic_generic_metadata__["parameters"]), "at_import": built_at_import}))
    """
)


def test_the_projects_models_are_all_lazy_and_few_are_built_by_an_import():
    found = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROJECT_MODELS], capture_output=True, text=True, check=True
        ).stdout
    )
    assert found["models"] > 50
    assert found["eager"] == [], "models that are not LazyModel"
    # A module that makes an instance at import (an empty model as a field's default, a module
    # constant) builds its model then: the import cost LazyModel is there to avoid. Use a
    # default_factory, or make the instance where it is used.
    assert found["at_import"] == [], found["at_import"]
    # An unparametrized generic is never built: its parametrizations are, as they are used.
    assert found["built"] == found["models"] - len(found["at_import"]) - found["generic"]
