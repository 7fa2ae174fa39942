"""What makes a runtime workable, and which of its fields a backend does not apply.

The admin API (`functions.admin`) refuses a runtime that no session could use, at creation and
at every change (judged on the runtime as it would be stored), with `RuntimeInvalid` (422
``runtime_invalid``); each rule comes from what the harness's adapters need (docs/control-plane.md,
"Runtimes that cannot work"). It also answers, with every runtime, the fields the configured
backend ignores (`unapplied_fields`); the local backend logs the same at each session start.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.errors import FunctionsError

# The CLIs that refuse to start with an empty key (claude: "Not logged in", codex: "Missing
# environment variable", gemini: exit 41). OpenCode sends the request anyway, so it can use a
# provider that takes no key.
_NEED_A_KEY = {"claude", "codex", "gemini"}

# The fields a backend never applies, and why. The local backend runs this installation's
# harness and CLIs as plain processes: no image, no CPU or memory bounds.
_UNAPPLIED = {
    "local": {
        "image": "the local backend runs this installation's harness as a process, not an image",
        "limits.cpu": "the local backend does not bound a harness's CPU",
        "limits.memory": "the local backend does not bound a harness's memory",
    },
    "knative": {},
}


@dataclass(frozen=True)
class Problem:
    """One rule a runtime breaks: the fields involved and what to set."""

    fields: tuple[str, ...]
    message: str

    def to_json(self) -> dict[str, object]:
        return {"fields": list(self.fields), "problem": self.message}


class RuntimeInvalid(FunctionsError):
    """The runtime could never run a session as asked; `details.problems` lists each rule."""

    status = 422
    code = "runtime_invalid"

    def __init__(self, problems: list[Problem]) -> None:
        message = "; ".join(problem.message for problem in problems)
        super().__init__(
            f"this runtime cannot work: {message}",
            problems=[problem.to_json() for problem in problems],
        )


def problems(
    cli: str,
    *,
    default_model: str | None,
    provider_base_url: str | None,
    credential_ref: str | None,
) -> list[Problem]:
    """Every rule the runtime breaks, in a fixed order; empty when it can work."""
    found: list[Problem] = []
    if provider_base_url and not default_model and cli == "opencode":
        found.append(
            Problem(
                ("default_model", "provider_base_url"),
                "opencode names a custom provider's model as provider/model and has no default "
                "for it: set default_model (the model's name at provider_base_url)",
            )
        )
    if provider_base_url and not default_model and cli == "codex":
        found.append(
            Problem(
                ("default_model", "provider_base_url"),
                "codex's default model gets no tools from a custom provider, so it could not "
                "edit files: set default_model (the model's name at provider_base_url)",
            )
        )
    if provider_base_url and not credential_ref and cli in _NEED_A_KEY:
        found.append(
            Problem(
                ("credential_ref", "provider_base_url"),
                f"{cli} refuses to start without a key for provider_base_url: set "
                "credential_ref to the name of the environment variable (a Secret's key in "
                "production) that holds it",
            )
        )
    if credential_ref and not provider_base_url:
        found.append(
            Problem(
                ("credential_ref", "provider_base_url"),
                "credential_ref reaches the CLI only with provider_base_url: set "
                "provider_base_url (the provider's root URL, e.g. https://api.anthropic.com), "
                "or remove credential_ref",
            )
        )
    return found


def check(
    cli: str,
    *,
    default_model: str | None,
    provider_base_url: str | None,
    credential_ref: str | None,
) -> None:
    """Raise `RuntimeInvalid` naming every rule the runtime breaks."""
    if found := problems(
        cli,
        default_model=default_model,
        provider_base_url=provider_base_url,
        credential_ref=credential_ref,
    ):
        raise RuntimeInvalid(found)


def unapplied_fields(
    backend: str, *, image: str | None, cpu: str | None, memory: str | None
) -> dict[str, str]:
    """The fields set on a runtime that `backend` ignores, each with why (in field order)."""
    unapplied = _UNAPPLIED.get(backend, {})
    given = {"image": image, "limits.cpu": cpu, "limits.memory": memory}
    return {name: unapplied[name] for name, value in given.items() if value and name in unapplied}
