"""Skill commands: ``vwm skill upload|list|show|download|delete``, and a worker's skills,
``vwm worker skills WORKER`` and ``vwm worker skill add|remove`` (added to `vwm.cli.admin`'s
``worker`` group). They need an API key with scope ``admin``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vwm.cli.admin import worker_app
from vwm.cli.output import print_json, print_table, stderr
from vwm.cli.root import client
from vwm.sdk.admin import LATEST
from vwm.sdk.models import Skill, WorkerSkill

skill_app = typer.Typer(help="Skills: versioned packages (a SKILL.md and its files) workers use.")
worker_skill_app = typer.Typer(help="Add or remove one of a worker's skills.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SkillRef = Annotated[str, typer.Argument(metavar="NAME[@VERSION]")]

SKILL_COLUMNS = ("name", "version", "description", "size", "format", "sha256", "created_at")
WORKER_SKILL_COLUMNS = ("name", "version", "pinned", "description", "sha256")


def register(app: typer.Typer) -> None:
    app.add_typer(skill_app, name="skill", no_args_is_help=True)
    worker_app.command("skills")(worker_skills)
    worker_app.add_typer(worker_skill_app, name="skill", no_args_is_help=True)


# Skills.


@skill_app.command("upload")
def skill_upload(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="A .tar.gz or .zip package, or a skill folder to pack.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the skill as JSON.")] = False,
) -> None:
    """Upload a skill package; its SKILL.md names it. Prints NAME@VERSION and its sha256."""
    uploaded = client(ctx).admin.upload_skill(path)
    if as_json:
        print_json({**uploaded.raw, "created": uploaded.created})
    else:
        typer.echo(f"{uploaded.ref} {uploaded.sha256}")
    if uploaded.created:
        stderr().print(f"[dim]uploaded {uploaded.ref} ({uploaded.size:,} bytes)[/dim]")
    else:
        stderr().print(f"{uploaded.ref} was already uploaded with this content; nothing changed")


@skill_app.command("list")
def skill_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List skills, every version, highest first."""
    skills = client(ctx).admin.list_skills()
    if as_json:
        print_json([dict(skill.raw) for skill in skills])
    else:
        print_table([_skill_row(skill) for skill in skills], SKILL_COLUMNS, empty="no skills")


@skill_app.command("show")
def skill_show(ctx: typer.Context, ref: SkillRef) -> None:
    """Show a skill's versions, or one version (NAME@VERSION; @latest works)."""
    name, version = split_ref(ref)
    admin = client(ctx).admin
    if version is None:
        print_json(dict(admin.get_skill(name).raw))
    else:
        print_json(dict(admin.get_skill_version(name, version).raw))


@skill_app.command("download")
def skill_download(
    ctx: typer.Context,
    ref: SkillRef,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The file, or - for stdout (default: NAME-VERSION.tar.gz here).",
            allow_dash=True,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download a skill's package (the latest version without @VERSION)."""
    name, version = split_ref(ref)
    admin = client(ctx).admin
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(admin.download_skill(name, version or LATEST))
        sys.stdout.buffer.flush()
        return
    written = admin.save_skill(name, version or LATEST, output or Path.cwd())
    stderr().print(f"saved {written}")


@skill_app.command("delete")
def skill_delete(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="NAME@VERSION")]
) -> None:
    """Delete one version of a skill. No worker may use it."""
    name, version = split_ref(ref)
    if version is None or version == LATEST:
        raise typer.BadParameter("name the version to delete: NAME@VERSION")
    client(ctx).admin.delete_skill(name, version)
    stderr().print(f"deleted skill {name}@{version}")


# A worker's skills.


def worker_skills(
    ctx: typer.Context,
    worker: Annotated[str, typer.Argument(metavar="WORKER")],
    as_json: JsonFlag = False,
) -> None:
    """List the skills a worker uses and the version its sessions get."""
    skills = client(ctx).admin.list_worker_skills(worker)
    if as_json:
        print_json([dict(skill.raw) for skill in skills])
    else:
        rows = [_worker_skill_row(skill) for skill in skills]
        print_table(rows, WORKER_SKILL_COLUMNS, empty=f"{worker} uses no skills")


@worker_skill_app.command("add")
def worker_skill_add(
    ctx: typer.Context,
    worker: Annotated[str, typer.Argument(metavar="WORKER")],
    ref: SkillRef,
) -> None:
    """Make a worker use a skill: @VERSION pins it, NAME alone follows its latest version."""
    name, version = split_ref(ref)
    if version == LATEST:
        version = None  # "@latest" says what following the latest means
    used = client(ctx).admin.add_worker_skill(worker, name, version)
    print_json(dict(used.raw))
    how = f"pinned to {used.pinned}" if used.pinned else f"following its latest, now {used.version}"
    stderr().print(f"[dim]{worker} uses {name}, {how}[/dim]")


@worker_skill_app.command("remove")
def worker_skill_remove(
    ctx: typer.Context,
    worker: Annotated[str, typer.Argument(metavar="WORKER")],
    name: Annotated[str, typer.Argument(metavar="NAME")],
) -> None:
    """Stop a worker using a skill."""
    client(ctx).admin.remove_worker_skill(worker, name)
    stderr().print(f"{worker} no longer uses {name}")


def split_ref(ref: str) -> tuple[str, str | None]:
    """``name@version`` → (name, version); ``name`` → (name, None)."""
    name, at, version = ref.partition("@")
    if not name or (at and not version):
        raise typer.BadParameter(f"{ref!r} is not NAME or NAME@VERSION")
    return name, version or None


def _skill_row(skill: Skill) -> dict[str, Any]:
    return {**skill.raw, "sha256": skill.sha256[:12]}


def _worker_skill_row(skill: WorkerSkill) -> dict[str, Any]:
    return {
        **skill.raw,
        "pinned": skill.pinned or "(latest)",
        "sha256": (skill.sha256 or "")[:12],
    }
