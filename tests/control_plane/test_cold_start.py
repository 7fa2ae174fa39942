"""What keeps a function's cold start short (docs/performance.md, "Function cold starts"): the
image's entry point (`functions.serve`) takes functions-framework's options, and resumes the
garbage collector it paused once the first answer begins; a target's modules leave out the heavy
libraries its first requests do not use. The serving itself is tested end to end in
test_functions_framework.py."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from eventing.start_gc import CollectAfterFirstAnswer
from functions.serve import parse_arguments
from tests.support.harness_process import REPO_ROOT

# --- the entry point's options ---------------------------------------------------------------


def test_the_options_and_variables_are_functions_frameworks(monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_TARGET", "events")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "cloudevent")
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.delenv("HOST", raising=False)
    arguments = parse_arguments(["--source", "functions/main.py", "--asgi"])
    assert (arguments.target, arguments.signature_type) == ("events", "cloudevent")
    assert (arguments.host, arguments.port) == ("0.0.0.0", 9090)
    assert arguments.source == "functions/main.py"
    given = parse_arguments(["--target", "admin", "--signature-type", "http", "--port", "1"])
    assert (given.target, given.signature_type, given.port) == ("admin", "http", 1)


def test_a_target_is_required(monkeypatch, capsys) -> None:
    monkeypatch.delenv("FUNCTION_TARGET", raising=False)
    with pytest.raises(SystemExit):
        parse_arguments(["--source", "functions/main.py"])
    assert "FUNCTION_TARGET" in capsys.readouterr().err


# --- the garbage collector, paused for the start -----------------------------------------------


@pytest.fixture
def paused_collector() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


async def _answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        assert gc.isenabled()  # resumed as the answer began, before its body
        await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def test_collection_resumes_once_the_first_answer_begins(paused_collector) -> None:
    app = CollectAfterFirstAnswer(_answer)
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, _receive, send)
    assert not gc.isenabled()  # a lifespan is no answer
    await app({"type": "http"}, _receive, send)
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert sent == ["http.response.start", "http.response.body"]


async def test_a_first_request_that_fails_resumes_collection_too(paused_collector) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("no answer")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(RuntimeError):
        await CollectAfterFirstAnswer(failing)({"type": "http"}, _receive, send)
    assert gc.isenabled()


# --- what each target's modules import ---------------------------------------------------------


def _modules_after_building(target: str) -> set[str]:
    """The modules loaded once `target`'s app is built (its module and the API's), in a fresh
    interpreter."""
    code = (
        "import json, sys\n"
        "import functions.main as main\n"
        f"main.function_app({target!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(found.stdout)}


@pytest.mark.parametrize(
    ("target", "left_out"),
    [
        # The Kubernetes client: only a Trigger's apply or delete reaches the API server.
        ("subscriptions", {"kubernetes", "urllib3"}),
        # httpx: only a call to a harness needs it, not reading a session's or a job's state.
        ("sessions", {"httpx", "kubernetes"}),
        ("prompts", {"httpx", "kubernetes"}),
        ("admin", {"kubernetes"}),
        ("telemetry", {"httpx", "kubernetes"}),
    ],
)
def test_a_target_imports_no_client_its_first_requests_do_not_use(target, left_out) -> None:
    loaded = _modules_after_building(target)
    assert "sqlalchemy" in loaded  # the app was built
    assert not loaded & left_out, loaded & left_out
