"""Each function's cold start, as Knative scales it from zero: a new process with the functions
image's command (`python -m functions.serve --target T`, functions-framework's app served in
the process) until its first answer, on the database of a `vwm up` (SQLite). For each target it
prints the median of `--runs` starts, and how much of it the import of `functions/main.py` alone
takes in a fresh interpreter (the rest is the server's own start and the first request: the app
built, its services made, the database reached). `--command functions-framework` times the plain
`functions-framework --target T --asgi` instead (gunicorn forking one uvicorn worker).

    python bench/cold_start.py [--runs 5] [--imports] [--command image|functions-framework]
                               [--database sqlite|postgresql]

`--database postgresql` starts each function on a fresh PostgreSQL database (the server the tests
use, 127.0.0.1:5432), as Knative runs them in production: its driver and dialect are imported and
its first connection made on the way to the first answer. SQLite is `vwm up`'s database.

`--imports` also lists the slowest modules the first request of `prompts` imports
(``python -X importtime``), to see what to make lazy next.

It also times the floor the chosen packages set, served the same way: a function of a few lines
with functions-framework, uvicorn, pydantic and the SQLAlchemy ORM (one model, one query on
the chosen database: on PostgreSQL through pg8000, as the targets), none of VWM's modules
(`FLOOR_FUNCTION`). What a target takes above it is VWM's own.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from eventing import codec  # noqa: E402
from tests.broker.events import job_started  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.harness_process import free_port  # noqa: E402
from tests.support.postgres import postgres_database  # noqa: E402

# The first request each target gets: one that reads the database where the target has any.
FIRST_REQUESTS = {
    "admin": ("GET", "/v1/admin/runtimes"),
    "sessions": ("GET", "/v1/sessions"),
    "prompts": ("GET", "/v1/jobs/none"),
    "telemetry": ("GET", "/v1/telemetry/summary"),
    "subscriptions": ("GET", "/v1/subscriptions"),
    "console": ("GET", "/ui/"),
    "events": ("POST", "/"),  # a harness's job.started, of a job this database does not have
}
ANSWERED = (200, 202, 204, 404)


# The least a function on the chosen packages imports and does to answer from a database.
FLOOR_FUNCTION = """
import os

import functions_framework.aio as ff
from pydantic import BaseModel
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.responses import JSONResponse


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


class Count(BaseModel):
    rows: int


engine = create_engine(os.environ.get("FLOOR_DATABASE_URL") or f"sqlite:///{__file__}.sqlite")
Base.metadata.create_all(engine)


@ff.http
async def floor(request):
    with Session(engine) as db:
        rows = len(db.execute(select(Row)).all())
    return JSONResponse(Count(rows=rows).model_dump())
"""

# The program each `--command` starts, before the options both take.
COMMANDS = {
    "image": [sys.executable, "-m", "functions.serve"],  # infra/docker/functions.Dockerfile
    "functions-framework": [str(Path(sys.executable).parent / "functions-framework")],
}


def start_to_first_answer(
    plane: ControlPlane,
    target: str,
    env_extra: dict[str, str],
    program: list[str],
    source: Path = REPO / "functions" / "main.py",
) -> float:
    method, path = FIRST_REQUESTS.get(target, ("GET", "/"))
    port = free_port()
    command = [
        *program,
        *("--source", str(source), "--target", target, "--asgi"),
        *("--port", str(port), "--host", "127.0.0.1"),
    ]
    if target == "events":
        command += ["--signature-type", "cloudevent"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env={**image_env(plane), **env_extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = {"Authorization": f"Bearer {plane.admin_key}"}
    body = b""
    if target == "events":
        event_headers, body = codec.to_binary(job_started())
        headers.update(event_headers)
    try:
        while True:
            try:
                answer = httpx.request(
                    method,
                    f"http://127.0.0.1:{port}{path}",
                    timeout=10,
                    headers=headers,
                    content=body,
                )
            except httpx.TransportError:
                time.sleep(0.005)
                continue
            if answer.status_code not in ANSWERED:
                raise SystemExit(f"{target}: {answer.status_code} {answer.text[:300]}")
            return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()


def image_env(plane: ControlPlane) -> dict[str, str]:
    """The plane's environment as the functions' image runs them: with the bytecode its build
    compiled (`compile_sources`), whatever this shell says about writing bytecode."""
    return {k: v for k, v in plane.env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def pg8000_url(url: str) -> str:
    """`url` with the driver the functions use on PostgreSQL named (`functions.db.engine`)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+pg8000://{rest}" if scheme == "postgresql" else url


def compile_sources() -> None:
    """What the image's build does (`python -m compileall`, infra/docker/functions.Dockerfile):
    without it every start compiles the project's modules again."""
    for package in ("functions", "eventing"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / package)], check=True)


def import_s(plane: ControlPlane) -> float:
    """`import functions.main` in a fresh interpreter, less the interpreter's own start."""

    def run(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=image_env(plane), check=True)
        return time.perf_counter() - started

    bare = statistics.median(run("pass") for _ in range(3))
    return statistics.median(run("import functions.main") for _ in range(3)) - bare


def slowest_imports(plane: ControlPlane, top: int = 25) -> None:
    code = (
        "import gc; gc.disable()\n"  # as functions.serve starts, so no collection is counted
        "import asyncio, functions.main as m\n"
        "from starlette.requests import Request\n"
        "app = m.function_app('prompts')\n"
    )
    found = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=REPO,
        env=image_env(plane),
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in found.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    for cumulative, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative / 1000:6.1f} ms {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--imports", action="store_true")
    parser.add_argument("--command", choices=sorted(COMMANDS), default="image")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    print(describe(), flush=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        env, floor_env = {}, {}
        if args.database == "postgresql":
            env["VWM_DATABASE_URL"] = stack.enter_context(postgres_database("vwm_bench"))
            floor_env["FLOOR_DATABASE_URL"] = pg8000_url(env["VWM_DATABASE_URL"])
        print(f"database: {args.database}", flush=True)
        plane = ControlPlane(Path(tmp) / "data", env)
        plane.start()  # makes the database and the admin key, then steps aside
        plane.stop()
        compile_sources()
        print(f"import functions.main: {import_s(plane) * 1000:.0f} ms", flush=True)
        for target in FIRST_REQUESTS:
            times = [
                start_to_first_answer(plane, target, {}, COMMANDS[args.command])
                for _ in range(args.runs)
            ]
            print(
                f"cold start {target:<13}: median {statistics.median(times) * 1000:.0f} ms, "
                f"best {min(times) * 1000:.0f} ms (process start → first answer of "
                f"{' '.join(FIRST_REQUESTS[target])})",
                flush=True,
            )
        floor_source = Path(tmp) / "floor" / "main.py"
        floor_source.parent.mkdir()
        floor_source.write_text(FLOOR_FUNCTION)
        times = [
            start_to_first_answer(plane, "floor", floor_env, COMMANDS[args.command], floor_source)
            for _ in range(args.runs)
        ]
        print(
            f"the packages' floor   : median {statistics.median(times) * 1000:.0f} ms, best "
            f"{min(times) * 1000:.0f} ms (a function of a few lines on the same packages and "
            "server, one model, one query: bench/cold_start.py FLOOR_FUNCTION)",
            flush=True,
        )
        if args.imports:
            print("slowest imports of functions.main and the prompts app (cumulative):")
            slowest_imports(plane)


if __name__ == "__main__":
    main()
