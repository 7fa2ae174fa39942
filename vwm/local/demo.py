"""`vwm demo`: the whole product on this machine, offline, with no API key.

It starts the project's fake model provider and the embedded control plane (in this process),
installs the chosen CLI on first use, creates a runtime and a worker over two local git repos,
opens a session, streams a prompt that makes the agent write a file in the session repo, ends the
session (commit and push) and prints the telemetry. Everything goes through the public API.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-fake",
    "gemini": "gemini-fake",
    "opencode": "fake-model",
}
PROMPT = "write hello.txt"


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def run_demo(cli: str, *, keep: bool = False) -> int:
    if cli not in MODELS:
        say(f"unknown CLI {cli!r}; pick one of {', '.join(MODELS)}")
        return 2
    from vwm.local.clis import find_or_install

    root = Path(tempfile.mkdtemp(prefix="vwm-demo-"))
    try:
        os.environ[f"VWM_{cli.upper()}_BIN"] = str(find_or_install(cli, progress=say))
        return _run(cli, root)
    finally:
        if keep:
            say(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _run(cli: str, root: Path) -> int:
    from fake_provider.testing import serve_in_thread
    from functions.embedded import use_embedded_defaults

    os.environ["VWM_DATA_DIR"] = str(root / "data")
    use_embedded_defaults()  # the demo's repos are local bare repos
    os.environ["VWM_DEMO_MODEL_KEY"] = "demo-key"
    with serve_in_thread() as provider:
        say(f"fake model provider on {provider.base_url}")
        url, admin_key, stop = _start_control_plane()
        try:
            return _walkthrough(cli, url, admin_key, provider.base_url, root)
        finally:
            stop()


def _start_control_plane() -> tuple[str, str, Callable[[], None]]:
    import uvicorn

    from functions.embedded import create_app, prepare
    from functions.settings import ControlPlaneSettings

    key = prepare(ControlPlaneSettings.from_env().database_url)
    assert key is not None, "a fresh demo database has no admin key yet"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    say(f"control plane on {url}")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return url, key, stop


def _bare_repo(path: Path, readme: str) -> Path:
    seed = path.with_suffix(".seed")
    git = ["git", "-c", "user.name=VWM demo", "-c", "user.email=demo@vwm.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    (seed / "README.md").write_text(readme)
    subprocess.run([*git, "-C", str(seed), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(seed), "commit", "-q", "-m", "start"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(path)], check=True)
    return path


def _walkthrough(cli: str, url: str, key: str, provider_url: str, root: Path) -> int:
    from vwm.cli.live import LiveView
    from vwm.cli.output import cost_text
    from vwm.local.clis import pinned_version
    from vwm.sdk.client import Client

    worker_repo = _bare_repo(root / "worker.git", "# What the worker knows\n")
    task_repo = _bare_repo(root / "task.git", "# The task\n")
    with Client(url, key) as client:
        client.admin.create_runtime(
            name=f"{cli}-offline",
            cli=cli,
            cli_version=pinned_version(cli),
            default_model=MODELS[cli],
            provider_base_url=provider_url,
            credential_ref="VWM_DEMO_MODEL_KEY",
        )
        client.admin.create_worker(
            name="demo-worker",
            runtime=f"{cli}-offline",
            repo_url=str(worker_repo),
            instructions="Be brief.",
        )
        say(f"runtime {cli}-offline and worker demo-worker created")
        session = client.worker("demo-worker").session(session_repo={"url": str(task_repo)})
        say(f"session {session.id} is {session.status}; prompting: {PROMPT!r}")
        view = LiveView()
        for event in session.stream(PROMPT):
            view.show(event)
        session.end()
        say("session ended; the task repo's last commit:")
        log = subprocess.run(
            ["git", "--git-dir", str(task_repo), "log", "-1", "--stat", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        )
        print(log.stdout.strip())
        for record in client.telemetry.requests(session_id=session.id):
            tokens = record["tokens"]
            print(
                f"telemetry: job {record['job_id'][:8]} {record['status']} "
                f"in {record['durations_ms']['total']} ms; tokens in {tokens['input']} "
                f"(+{tokens['cache_read']} cached) out {tokens['output']}; "
                + cost_text(record.get("cost_usd"), record.get("cost_source"))
            )
    return 0 if view.result is not None and view.result.ok else 1
