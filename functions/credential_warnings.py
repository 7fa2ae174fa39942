"""What to tell an admin when a runtime's `credential_ref` names an environment variable this
process lacks. With the local runtime backend the control plane reads the variable at each
harness (re)launch (`functions.session_runtime.require_credential`), so the runtime's sessions
cannot start until it is set where `vwm up` runs. Said by `vwm up` at start, for every runtime,
and in the answer to a runtime's create, change or read (`functions.admin`), for that one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def unset_credentials(
    named: Iterable[tuple[str | None, str]], environ: Mapping[str, str]
) -> list[str]:
    """One line per variable that runtimes name as `credential_ref` and `environ` lacks, sorted;
    `named` holds (credential_ref, runtime name) pairs. A variable set to "" counts as set: the
    harness gets it as it is (as `require_credential` does)."""
    missing: dict[str, list[str]] = {}
    for variable, runtime in named:
        if variable and variable not in environ:
            missing.setdefault(variable, []).append(runtime)
    return [_line(variable, runtimes) for variable, runtimes in sorted(missing.items())]


def _line(variable: str, runtimes: list[str]) -> str:
    many = len(runtimes) > 1
    return (
        f"{variable} is not set, and runtime{'s' if many else ''} {', '.join(runtimes)} "
        f"name{'' if many else 's'} it as credential_ref: {'their' if many else 'its'} sessions "
        f"will not start; stop vwm up, export {variable}=<the provider key> and start it again"
    )
