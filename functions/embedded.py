"""All four functions in one process: the control plane of `vwm up`.

On start it makes the data folder private (0700, its files 0600, tightening a folder an older
version left looser), migrates the database and finds the sessions that were live when the
previous process stopped, relaunching their harnesses on the same workspaces (the next prompt
resumes the same CLI session). Harnesses are separate processes and outlive this one.

`vwm up` runs on a person's own machine, where repositories are often folders: unlike a
production deployment it allows local repos by default (`EMBEDDED_DEFAULTS`) and says so on start.

One `functions.services.Services` serves everything in the process: every function's requests,
the broker's loop and the subscribers it calls, the start-up reconcile. `serve` builds it (to
check the token key and the sandbox before listening), `build_app`'s lifespan binds it, and this
module's lifespan runs inside, so the tasks it starts have it bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path

from sqlalchemy.orm import Session
from starlette.applications import Starlette

from functions.api import build_app
from functions.console.app import console_routes
from functions.context import backend, db, lookup_key
from functions.main import FUNCTIONS, trace_as_vwm
from functions.private_files import private_dir, secure_data_dir
from functions.services import Services

logger = logging.getLogger(__name__)

# Settings whose embedded default differs from production's; the environment still wins.
EMBEDDED_DEFAULTS = {"VWM_ALLOW_LOCAL_REPOS": "1"}
RECOVERY_CONCURRENCY = 4
GRACEFUL_SHUTDOWN_S = 10
# Served by `vwm up` only: in production the Knative Broker is the ingress.
EMBEDDED_ONLY = ("broker.ingress",)


def use_embedded_defaults() -> None:
    """Apply `EMBEDDED_DEFAULTS` to this process's environment; call it before the settings are
    first read (`serve` does; so does `vwm demo`)."""
    for name, value in EMBEDDED_DEFAULTS.items():
        os.environ.setdefault(name, value)


def create_app(
    services: Services | None = None, *, close_services: bool | None = None
) -> Starlette:
    """Every function in one app. `services`: what it serves with (built from the environment
    in its lifespan by default); `close_services`: close given ones at shutdown (see
    `functions.api.build_app`)."""
    endpoints = [
        e
        for name in (*FUNCTIONS, *EMBEDDED_ONLY)
        for e in import_module(f"functions.{name}").ENDPOINTS
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Entered by `build_app`'s lifespan with the app's services bound: tasks created here
        # inherit them.
        from functions.broker.service import BrokerService
        from functions.context import services as bound_services

        broker = BrokerService.for_services(bound_services())
        await broker.start()
        app.state.broker = broker  # POST /v1/broker enqueues through it and wakes its loop
        recovery = asyncio.create_task(start_up(datetime.now(UTC)), name="start-up")
        try:
            yield
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
            await broker.stop()

    return build_app(
        endpoints,
        lookup_key,
        title="VWM",
        lifespan=lifespan,
        services=services,
        close_services=close_services,
        relay_outbox=False,  # the broker's lifespan drains the outbox into its own queue
        extra_routes=console_routes(),  # the web console at /ui (docs/console.md)
    )


async def start_up(started_at: datetime) -> None:
    """Relaunch the harnesses of ready sessions, then reconcile once: whatever was provisioning
    or ending when the previous process stopped died with it (this is the only control plane on
    its database), and the jobs it was following are recorded from their harnesses."""
    from functions.context import backend
    from functions.reconcile import reconcile
    from functions.runtime.base import WarmPooling

    if isinstance(runtime := backend(), WarmPooling):
        runtime.start_pool()
    await recover_sessions()
    try:
        await reconcile(interrupted_before=started_at)
    except Exception:  # the periodic tick tries again
        logger.exception("the start-up reconciliation failed")


async def recover_sessions() -> None:
    """Every ready session goes through `ensure_running`: a dead harness is relaunched, a live
    one that refuses the session's token (started before tokens were derived, or under another
    key) is replaced, a healthy one is kept (and its stored handle loses any old token). One
    stopped for being idle stays down until a call needs it; if the last process exited in the
    middle of that stop, the stop is finished."""
    from functions.runtime.base import IdleStopper, RuntimeHandle, idle_stopped
    from functions.session_runtime import load, relaunch

    def live(session: Session) -> list[str]:
        from functions.db.models import SessionStatus
        from functions.db.repositories import Sessions

        return [row.id for row in Sessions(session).live() if row.status == SessionStatus.READY]

    turns = asyncio.Semaphore(RECOVERY_CONCURRENCY)

    async def recover(session_id: str) -> None:
        async with turns:
            try:
                view = await db(load, session_id)
                handle = RuntimeHandle.from_dict(view.session.runtime_state)
                was_running = await backend().status(handle) == "running"
                if idle_stopped(handle):
                    if was_running and isinstance(runtime := backend(), IdleStopper):
                        await runtime.stop_idle(handle)
                    return
                after = await relaunch(view, handle)
                if after.state.get("pid") != handle.state.get("pid") or not was_running:
                    logger.info("session harness relaunched", extra={"session_id": session_id})
            except Exception:  # one broken session must not stop the others
                logger.exception("could not relaunch a session", extra={"session_id": session_id})

    await asyncio.gather(*(recover(session_id) for session_id in await db(live)))


def prepare(database_url: str) -> str | None:
    """Migrate the database; issue the first admin key if there is none and return it (once)."""
    from functions.db.api_keys import ApiKeys
    from functions.db.engine import make_engine, session_factory, transaction
    from functions.db.migrate import upgrade

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are set-up noise
    if (database := _sqlite_path(database_url)) is not None:
        private_dir(database.parent)
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            keys = ApiKeys(session)
            if keys.has_admin():
                return None
            _, plaintext = keys.issue("first admin key (vwm up)", "admin")
            return plaintext
    finally:
        engine.dispose()


def serve(host: str, port: int, *, announce: bool = True) -> None:
    """Run the embedded control plane until interrupted (`vwm up`)."""
    import uvicorn

    from eventing.quiet_server import QuietServer
    from functions.runtime.errors import TokenKeyUnavailable

    # Set-up noise: alembic's INFO lines (its plugins log as they are imported, which happens
    # before the migrations run) and one httpx INFO line per harness call.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    use_embedded_defaults()
    trace_as_vwm()  # done when functions.main was imported; says where `vwm up` sets it up
    # Harnesses publish their job events to this process's broker.
    sink_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    os.environ.setdefault("VWM_HARNESS_EVENT_SINK", f"http://{sink_host}:{port}/v1/broker")
    # ... and charge the model calls of a session under a budget to it (functions.budgets).
    os.environ.setdefault("VWM_HARNESS_CONTROL_URL", f"http://{sink_host}:{port}")
    # Built here rather than in the app's lifespan: what cannot work is refused before listening.
    services = Services.build()
    current = services.settings
    secure(current.data_dir, current.database_url)
    try:
        _ = services.token_key  # made now (0600) or refused now, not at the first session
    except TokenKeyUnavailable as exc:
        print(f"vwm: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    sandbox = getattr(services.backend, "sandbox", None)  # bubblewrap probed now, once
    if sandbox is not None and sandbox.refused:
        print(f"vwm: {sandbox.refusal()}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    first_key = prepare(current.database_url)
    if announce:
        print(
            f"vwm: control plane on http://{host}:{port} (data in {current.data_dir})", flush=True
        )
        notice = local_repos_notice(current.database_url, current.allow_local_repos)
        print(f"vwm: {notice}", flush=True)
        if sandbox is not None:
            print(sandbox.announcement(), flush=True)
        else:
            print(f"vwm: sessions run on {services.backend.kind}", flush=True)
        if first_key:
            # Shown once: only its hash is stored.
            print(f"vwm: first admin API key (shown once): {first_key}", flush=True)
        for line in missing_credential_warnings(current.database_url, os.environ):
            print(f"vwm: warning: {line}", flush=True)
        for line in next_steps(f"http://{sink_host}:{port}", first_key):
            print(f"vwm: {line}", flush=True)
    app = create_app(services, close_services=True)
    # On SIGTERM, requests in flight get this long to finish; a stream that follows a job may
    # last hours, and is cut (its caller reconnects with Last-Event-ID; nothing is lost).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = QuietServer(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: it could not start (the port is taken)


def missing_credential_warnings(database_url: str, environ: Mapping[str, str]) -> list[str]:
    """One line per environment variable that runtimes name as `credential_ref` and `environ`
    lacks: their sessions cannot start (`credential_missing`) until it is set where `vwm up`
    runs. Said at start, when it can still be fixed before the first session; a runtime's
    create or change says the same of that runtime (`functions.credential_warnings`)."""
    from functions.credential_warnings import unset_credentials
    from functions.db.engine import make_engine, session_factory, transaction
    from functions.db.repositories import Runtimes

    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            named = [(r.credential_ref, r.name) for r in Runtimes(session).list_all()]
    finally:
        engine.dispose()
    return unset_credentials(named, environ)


def next_steps(url: str, first_key: str | None) -> list[str]:
    """What to run next, in another terminal. `./task up` runs the `vwm` of the checkout's
    virtualenv, whose folder is not on the PATH: the lines say how to reach it."""
    bin_dir = Path(sys.executable).parent
    installed = bin_dir / "vwm"
    found = shutil.which("vwm")
    exports = []
    if found is None or Path(found).resolve() != installed.resolve():
        exports.append(f'PATH="{_shell_path(bin_dir)}:$PATH"')
    exports.append(f"VWM_URL={url}")
    exports.append(f"VWM_API_KEY={first_key or 'vwm_…'}")
    key_source = "" if first_key else " (the admin key printed on the first start)"
    lines = ["next, in another terminal:", f"  export {' '.join(exports)}{key_source}"]
    if len(exports) == 3:
        lines.append(f"  (the vwm command is in {_shell_path(bin_dir)}, not on your PATH)")
    lines.append(
        "  vwm runtime create … ; vwm worker create … ; vwm session start …  (the README's "
        "Quickstart, or vwm --help)"
    )
    lines.append(f"or open the web console: {url}/ui/ (sign in with the API key)")
    return lines


def _shell_path(folder: Path) -> str:
    """`folder` as a shell word: relative to the working folder (as `$PWD/...`) when under it."""
    try:
        return f"$PWD/{folder.relative_to(Path.cwd())}"
    except ValueError:
        return str(folder)


def secure(data_dir: Path, database_url: str) -> None:
    """Make the data folder private, and say in the log what was looser before."""
    tightened = secure_data_dir(data_dir, _sqlite_path(database_url))
    if tightened:
        logger.warning(
            "the data folder was readable by other users: made it 0700 and its files 0600",
            extra={"paths": [str(path) for path in tightened]},
        )


def local_repos_notice(database_url: str, default: bool) -> str:
    """One line on whether sessions may clone local paths and file:// URLs right now."""
    from functions.db.engine import make_engine, session_factory, transaction
    from functions.repo_policy import allow_local_repos

    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            allowed = allow_local_repos(session, default)
    finally:
        engine.dispose()
    if allowed:
        return (
            "local repositories (paths, file://) are allowed, so any client can have any "
            "repository on this machine cloned; refuse them with VWM_ALLOW_LOCAL_REPOS=0 or the "
            "admin setting allow_local_repos=false"
        )
    return "local repositories (paths, file://) are refused (setting allow_local_repos)"


def _sqlite_path(database_url: str) -> Path | None:
    if database_url.startswith("sqlite:///"):
        return Path(database_url.removeprefix("sqlite:///"))
    return None


def main(argv: list[str] | None = None) -> None:
    import argparse

    from eventing.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m functions.embedded", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-format", choices=("auto", "json", "text"), default=None)
    args = parser.parse_args(argv)
    configure_logging(format_name=args.log_format)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
