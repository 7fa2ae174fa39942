"""Admin commands: ``vwm runtime``, ``vwm worker``, ``vwm settings`` and ``vwm key``.
They need an API key with scope ``admin``. A worker's skills (``vwm worker skills``, ``vwm
worker skill``) come from `vwm.cli.skills`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from vwm.cli.budget_limits import parse_limit
from vwm.cli.output import print_json, print_table, stderr
from vwm.cli.root import client

runtime_app = typer.Typer(help="Runtimes: a coding-agent CLI, its version, prices and credential.")
worker_app = typer.Typer(
    help="Workers: a runtime plus a knowledge-base repository and instructions."
)
settings_app = typer.Typer(help="System settings, such as global_instructions.")
key_app = typer.Typer(help="API keys.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    for name, sub in (
        ("runtime", runtime_app),
        ("worker", worker_app),
        ("settings", settings_app),
        ("key", key_app),
    ):
        app.add_typer(sub, name=name, no_args_is_help=True)


# Runtimes.


@runtime_app.command("create")
def runtime_create(
    ctx: typer.Context,
    name: str,
    cli: Annotated[str, typer.Option(help="claude, codex, gemini or opencode.")],
    cli_version: Annotated[str, typer.Option(help="The CLI's version, e.g. 2.0.14.")],
    image: Annotated[str | None, typer.Option(help="Container image of the session.")] = None,
    default_model: Annotated[
        str | None, typer.Option(help="Model when a worker names none.")
    ] = None,
    prices: Annotated[
        str | None,
        typer.Option(help='USD per million tokens as JSON: \'{"input": 3, "output": 15, ...}\'.'),
    ] = None,
    credential_ref: Annotated[
        str | None, typer.Option(help="Where the model key lives (an environment variable name).")
    ] = None,
    provider_base_url: Annotated[str | None, typer.Option(help="The model endpoint.")] = None,
    job_timeout_s: Annotated[float | None, typer.Option(help="Wall-clock limit of a job.")] = None,
) -> None:
    """Create a runtime."""
    fields = _given(
        name=name,
        cli=cli,
        cli_version=cli_version,
        image=image,
        default_model=default_model,
        prices=_json_option("--prices", prices),
        credential_ref=credential_ref,
        provider_base_url=provider_base_url,
        limits={"job_timeout_s": job_timeout_s} if job_timeout_s is not None else None,
    )
    answer = client(ctx).admin.create_runtime(**fields)
    print_json(answer)
    _say_warnings(answer)


@runtime_app.command("update")
def runtime_update(
    ctx: typer.Context,
    name: str,
    cli_version: Annotated[str | None, typer.Option(help="Another CLI version.")] = None,
    image: Annotated[str | None, typer.Option(help="Container image of the session.")] = None,
    default_model: Annotated[
        str | None, typer.Option(help="Model when a worker names none.")
    ] = None,
    prices: Annotated[
        str | None,
        typer.Option(help='USD per million tokens as JSON: \'{"input": 3, "output": 15, ...}\'.'),
    ] = None,
    credential_ref: Annotated[
        str | None, typer.Option(help="Where the model key lives (an environment variable name).")
    ] = None,
    provider_base_url: Annotated[str | None, typer.Option(help="The model endpoint.")] = None,
    job_timeout_s: Annotated[float | None, typer.Option(help="Wall-clock limit of a job.")] = None,
) -> None:
    """Change a runtime: only the options given change. New sessions get the change."""
    admin = client(ctx).admin
    fields = _given(
        cli_version=cli_version,
        image=image,
        default_model=default_model,
        prices=_json_option("--prices", prices),
        credential_ref=credential_ref,
        provider_base_url=provider_base_url,
    )
    if job_timeout_s is not None:  # the other limits (cpu, memory) stay as they are
        limits = admin.get_runtime(name).get("limits") or {}
        fields["limits"] = {**limits, "job_timeout_s": job_timeout_s}
    if not fields:
        raise typer.BadParameter("nothing to change: give at least one option")
    answer = admin.update_runtime(name, **fields)
    print_json(answer)
    _say_warnings(answer)


def _say_warnings(runtime: Any) -> None:
    """The runtime's `warnings` on stderr (stdout keeps the JSON document), one line each."""
    warnings = runtime.get("warnings") if isinstance(runtime, dict) else None
    for warning in warnings or []:
        typer.echo(f"warning: {warning}", err=True)


@runtime_app.command("list")
def runtime_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List runtimes."""
    rows = client(ctx).admin.list_runtimes()
    if as_json:
        print_json(rows)
    else:
        print_table(
            rows, ("name", "cli", "cli_version", "default_model", "image"), empty="no runtimes"
        )


@runtime_app.command("get")
def runtime_get(ctx: typer.Context, name: str) -> None:
    """Show a runtime."""
    print_json(client(ctx).admin.get_runtime(name))


@runtime_app.command("delete")
def runtime_delete(ctx: typer.Context, name: str) -> None:
    """Delete a runtime."""
    client(ctx).admin.delete_runtime(name)
    stderr().print(f"deleted runtime {name}")


# Workers.


class LearningMode(StrEnum):
    direct = "direct"
    review = "review"


RepoBranchOption = Annotated[str | None, typer.Option(help="Its branch (default: main).")]
InstructionsOption = Annotated[str | None, typer.Option(help="The worker's instructions.")]
InstructionsFileOption = Annotated[
    Path | None,
    typer.Option(
        help="Read the instructions from a file (- for stdin).", allow_dash=True, dir_okay=False
    ),
]
AutoLearningOption = Annotated[
    bool | None,
    typer.Option(
        "--auto-learning/--no-auto-learning",
        help="Record what each session learned when it ends.",
        show_default=False,
    ),
]
LearningModeOption = Annotated[
    LearningMode | None,
    typer.Option(
        help="Where learning goes: direct (the worker's branch) or review "
        "(learning/<session> to merge)."
    ),
]
SkillOption = Annotated[
    list[str] | None,
    typer.Option(
        "--skill",
        metavar="NAME[@VERSION]",
        help="A skill to use (repeat it); @VERSION pins one. On update: the whole set.",
        show_default=False,
    ),
]
ModelOption = Annotated[str | None, typer.Option(help="The model, over the runtime's default.")]
JobTimeoutOption = Annotated[float | None, typer.Option(help="Wall-clock limit of a job.")]
IdleTimeoutOption = Annotated[float | None, typer.Option(help="End idle sessions after this.")]


@worker_app.command("create")
def worker_create(
    ctx: typer.Context,
    name: str,
    runtime: Annotated[str, typer.Option(help="The runtime's name.")],
    repo_url: Annotated[str, typer.Option(help="The worker's knowledge-base repository.")],
    repo_branch: RepoBranchOption = None,
    instructions: InstructionsOption = None,
    instructions_file: InstructionsFileOption = None,
    auto_learning: AutoLearningOption = None,
    learning_mode: LearningModeOption = None,
    skill: SkillOption = None,
    model: ModelOption = None,
    job_timeout_s: JobTimeoutOption = None,
    idle_timeout_s: IdleTimeoutOption = None,
) -> None:
    """Create a worker."""
    fields = _worker_fields(
        runtime=runtime,
        repo_url=repo_url,
        repo_branch=repo_branch,
        instructions=_instructions(instructions, instructions_file),
        auto_learning=auto_learning,
        learning_mode=learning_mode,
        skills=skill,
        model=model,
        job_timeout_s=job_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )
    print_json(client(ctx).admin.create_worker(name=name, **fields))


@worker_app.command("update")
def worker_update(
    ctx: typer.Context,
    name: str,
    runtime: Annotated[str | None, typer.Option(help="Another runtime, by name.")] = None,
    repo_url: Annotated[str | None, typer.Option(help="Another knowledge-base repository.")] = None,
    repo_branch: RepoBranchOption = None,
    instructions: InstructionsOption = None,
    instructions_file: InstructionsFileOption = None,
    auto_learning: AutoLearningOption = None,
    learning_mode: LearningModeOption = None,
    skill: SkillOption = None,
    model: ModelOption = None,
    job_timeout_s: JobTimeoutOption = None,
    idle_timeout_s: IdleTimeoutOption = None,
) -> None:
    """Change a worker: only the options given change. Instructions, model, skills and learning
    reach running sessions at their next prompt; runtime and repository, new sessions."""
    fields = _worker_fields(
        runtime=runtime,
        repo_url=repo_url,
        repo_branch=repo_branch,
        instructions=_instructions(instructions, instructions_file),
        auto_learning=auto_learning,
        learning_mode=learning_mode,
        skills=skill,
        model=model,
        job_timeout_s=job_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )
    if not fields:
        raise typer.BadParameter("nothing to change: give at least one option")
    print_json(client(ctx).admin.update_worker(name, **fields))


def _worker_fields(
    *,
    job_timeout_s: float | None,
    idle_timeout_s: float | None,
    learning_mode: LearningMode | None,
    skills: list[str] | None,
    **fields: Any,
) -> dict[str, Any]:
    """A worker's fields from the options given, as the admin API takes them."""
    timeouts = _given(job_s=job_timeout_s, idle_s=idle_timeout_s)
    return _given(
        **fields,
        learning_mode=learning_mode.value if learning_mode is not None else None,
        skills=skills or None,  # no --skill: the skills stay as they are
        timeouts=timeouts or None,
    )


def _instructions(text: str | None, file: Path | None) -> str | None:
    if text is not None and file is not None:
        raise typer.BadParameter("give --instructions or --instructions-file, not both")
    return _read_text(file) if file is not None else text


@worker_app.command("list")
def worker_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List workers."""
    rows = client(ctx).admin.list_workers()
    if as_json:
        print_json(rows)
    else:
        columns = ("name", "runtime", "repo_url", "repo_branch", "model", "skills")
        shown = [{**row, "skills": ", ".join(row.get("skills") or [])} for row in rows]
        print_table(shown, columns, empty="no workers")


@worker_app.command("get")
def worker_get(ctx: typer.Context, name: str) -> None:
    """Show a worker."""
    print_json(client(ctx).admin.get_worker(name))


@worker_app.command("budget")
def worker_budget(
    ctx: typer.Context,
    name: str,
    tokens_per_day: Annotated[
        str | None, typer.Option(help="Tokens per UTC day; none: no limit.")
    ] = None,
    tokens_total: Annotated[
        str | None, typer.Option(help="Tokens in total; none: no limit.")
    ] = None,
    usd_per_day: Annotated[
        str | None, typer.Option(help="USD per UTC day; none: no limit.")
    ] = None,
    usd_total: Annotated[str | None, typer.Option(help="USD in total; none: no limit.")] = None,
) -> None:
    """Show a worker's budget (limits, used, left), or set the limits given (docs/budgets.md)."""
    given = {
        "tokens_per_day": tokens_per_day,
        "tokens_total": tokens_total,
        "usd_per_day": usd_per_day,
        "usd_total": usd_total,
    }
    limits = {
        field: parse_limit(value, "--" + field.replace("_", "-"), tokens=field.startswith("tokens"))
        for field, value in given.items()
        if value is not None
    }
    admin = client(ctx).admin
    print_json(admin.set_worker_budget(name, **limits) if limits else admin.worker_budget(name))


@worker_app.command("delete")
def worker_delete(ctx: typer.Context, name: str) -> None:
    """Delete a worker."""
    client(ctx).admin.delete_worker(name)
    stderr().print(f"deleted worker {name}")


# Settings.


@settings_app.command("get")
def settings_get(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Argument(help="One setting; without it, all of them.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show settings. With a KEY, print its value as is (a text value is printed raw)."""
    admin = client(ctx).admin
    if key is None:
        entries = admin.settings()
        if as_json:
            print_json(entries)
        else:
            print_table(
                [{"key": k, **v} for k, v in entries.items()],
                ("key", "value", "version"),
                empty="no settings",
            )
        return
    value = admin.get_setting(key)
    if isinstance(value, str) and not as_json:
        typer.echo(value, nl=not value.endswith("\n"))
    else:
        print_json(value)


@settings_app.command("set")
def settings_set(
    ctx: typer.Context,
    key: str,
    value: Annotated[str | None, typer.Argument(help="The value; or use --file.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Read the value from a file (- for stdin).",
            allow_dash=True,
            dir_okay=False,
        ),
    ] = None,
    json_value: Annotated[
        bool, typer.Option("--json-value", help="Parse the value as JSON.")
    ] = False,
) -> None:
    """Write a setting, e.g. `vwm settings set global_instructions --file rules.md`."""
    if (value is None) == (file is None):
        raise typer.BadParameter("give the value as an argument or with --file (one of them)")
    text = _read_text(file) if file is not None else str(value)
    stored: Any = _json_option("value", text) if json_value else text
    answer = client(ctx).admin.put_setting(key, stored)
    version = answer.get("version") if isinstance(answer, dict) else None
    stderr().print(f"set {key}" + (f" (version {version})" if version is not None else ""))


@settings_app.command("versions")
def settings_versions(
    ctx: typer.Context,
    key: str,
    limit: Annotated[
        int | None, typer.Option(min=1, max=500, help="At most this many (default 50).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the values a setting was given, newest first, e.g. `vwm settings versions
    global_instructions`. The table shows each value's start; --json shows them whole."""
    rows = client(ctx).admin.setting_versions(key, limit=limit)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ("version", "updated_at", "value"), empty=f"no versions of {key}")


# Keys.


@key_app.command("create")
def key_create(
    ctx: typer.Context,
    name: str,
    scope: Annotated[
        str, typer.Option(help="client (sessions, prompts, jobs, telemetry) or admin.")
    ] = "client",
) -> None:
    """Create an API key. It is printed once; store it now."""
    answer = client(ctx).admin.create_key(name, scope)
    typer.echo(answer["key"])
    stderr().print(
        f"[dim]key {answer.get('id', '')} ({scope}) is shown only this once; store it now[/dim]"
    )


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that were given: the server's defaults apply to the others."""
    return {name: value for name, value in fields.items() if value is not None}


def _json_option(name: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{name} is not valid JSON: {exc}") from exc


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
