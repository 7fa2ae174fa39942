"""docs/sdk.md against the SDK: every call of `session.files` is documented, and so is the
`include_raw` the telemetry call passes on."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import httpx

from vwm.sdk.client import Client
from vwm.sdk.files import SessionFiles

SDK_DOC = (Path(__file__).parents[2] / "docs" / "sdk.md").read_text()


def test_every_files_call_is_documented_and_nothing_else_is() -> None:
    public = {name for name, _ in inspect.getmembers(SessionFiles) if not name.startswith("_")}
    documented = set(re.findall(r"\bs\.files\.(\w+)\(", SDK_DOC))
    assert documented == public
    assert "not in the SDK yet" not in SDK_DOC


def test_include_raw_is_documented_and_reaches_the_api() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with Client("http://cp", "vwm_k_s", transport=httpx.MockTransport(answer)) as client:
        client.telemetry.requests(session_id="s1", include_raw=True)

    assert seen[0].url.params["include_raw"] in ("true", "True")
    assert "include_raw=True" in SDK_DOC and "raw_output" in SDK_DOC
