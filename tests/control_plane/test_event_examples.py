"""Every curl example of docs/events.md that posts to `POST /v1/broker`, run by bash against
`vwm up`: each is accepted with an admin key, and with a client key exactly when the docs say a
client key may post it (else 403), so the examples and the key rules cannot drift from the code."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.harness_process import REPO_ROOT

EXAMPLE = re.compile(
    r"(?P<intro>[^\n]*)\n\n```sh\n(?P<script>curl -sS -X POST \"\$VWM_URL/v1/broker\".*?)\n```",
    re.DOTALL,
)
CLIENT_MAY_POST = "a `client` or an `admin` key"
# uuidgen is not everywhere; the examples only need a fresh id from it.
PRELUDE = 'uuidgen() { python3 -c "import uuid; print(uuid.uuid4())"; }\n'


def examples() -> list[tuple[str, str, bool]]:
    """(type, script, whether a client key may post it) for each example."""
    found = []
    for match in EXAMPLE.finditer((REPO_ROOT / "docs" / "events.md").read_text()):
        script = match.group("script")
        type_ = re.search(r"dev\.vwm\.[a-z.]+", script)
        assert type_, script
        structured = "application/cloudevents+json" in script
        client_may = structured or CLIENT_MAY_POST in match.group("intro")
        found.append((type_.group(0), script, client_may))
    return found


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("examples") / "data", {})
    plane.start()
    yield plane
    plane.stop()


def test_the_docs_have_an_example_for_every_type_and_one_in_structured_mode() -> None:
    from eventing.events import CATALOGUE

    found = examples()
    assert {type_ for type_, _, _ in found} == set(CATALOGUE)
    assert sum("application/cloudevents+json" in script for _, script, _ in found) == 1


@pytest.mark.parametrize(
    ("type_", "script", "client_may"),
    examples(),
    ids=[f"{type_}-{n}" for n, (type_, _, _) in enumerate(examples())],
)
def test_an_example_is_accepted_with_the_key_it_names(
    plane: ControlPlane, type_: str, script: str, client_may: bool, tmp_path: Path
) -> None:
    with plane.client() as admin:
        made = admin.post("/v1/admin/keys", json={"name": "examples", "scope": "client"})
        assert made.status_code == 201, made.text
    client_key = made.json()["key"]
    answer = tmp_path / "answer"
    measured = script.replace("curl -sS", f'curl -sS -o {answer} -w "%{{http_code}}"', 1)
    for key, expected in ((plane.admin_key, 202), (client_key, 202 if client_may else 403)):
        env = {
            **os.environ,
            "VWM_URL": plane.url,
            "VWM_API_KEY": str(key),
            "SID": uuid.uuid4().hex,
            "JOB": uuid.uuid4().hex,
        }
        done = subprocess.run(
            ["bash", "-c", PRELUDE + measured], env=env, capture_output=True, text=True, timeout=30
        )
        body = answer.read_text() if answer.exists() else ""
        assert done.stdout == str(expected), (type_, key == client_key, done.stderr, body)
