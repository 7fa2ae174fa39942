"""The base of every pydantic model of the project: its validator and serializer are built on
first use, not when its module is imported.

Building a model's core schema is most of what importing a module of models costs (about 45 ms
for the control plane's and the events' models together, 2 cores): a function started from zero
answers its first request with the handful of models that request touches, not all of them.
Each model is still built once per process, at its first validation, serialization or schema.

A process that would rather pay it all before its first request (a warm-pool harness, which has
time before its claim and none after) calls `build_all` once it has imported its modules.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LazyModel(BaseModel):
    # A subclass's own `model_config` is merged with this one: it keeps `defer_build`.
    model_config = ConfigDict(defer_build=True)


def build_all() -> int:
    """Build every imported `LazyModel` not built yet; the number built."""
    built = 0
    pending: list[type[BaseModel]] = [LazyModel]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if model is LazyModel or model.__pydantic_complete__:
            continue
        if model.__pydantic_generic_metadata__["parameters"]:
            continue  # an unparametrized generic: its parametrizations are built as used
        model.model_rebuild(force=True)
        built += 1
    return built
