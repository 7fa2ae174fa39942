"""The files API decides on where a path leads, not how it is written: a corpus of symlinks (and
other second names) planted in the workspace, each tried through every file route.

The routes are mounted on a tiny app of their own over a real workspace on disk; every refusal
must leave the hidden and read-only areas exactly as they were.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from harness import routes_files
from harness.http import EXCEPTION_HANDLERS
from harness.workspace import Workspace

LIMIT = 1 << 20
CREDENTIALS = b'{"api_key": "sk-secret"}'
STATE = b'{"cli_session_id": "real-session"}'
GIT_CONFIG = b"[core]\n\trepositoryformatversion = 0\n"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.ensure_dirs()
    (ws.cli_home / "sub").mkdir()
    (ws.cli_home / "credentials.json").write_bytes(CREDENTIALS)
    (ws.cli_home / "sub" / "token").write_bytes(CREDENTIALS)
    ws.state_file.write_bytes(STATE)
    (ws.jobs_dir / "j1.stdout").write_bytes(b"raw output")
    for repo in (ws.session_repo, ws.worker_repo):
        (repo / ".git" / "hooks").mkdir(parents=True)
        (repo / ".git" / "config").write_bytes(GIT_CONFIG)
        (repo / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
        (repo / "README.md").write_text("readme")
    return ws


@pytest.fixture
async def client(ws: Workspace) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(
        routes=routes_files.routes(lambda _: ws, lambda _: LIMIT),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://harness") as client:
        yield client


def protected_snapshot(ws: Workspace) -> dict[str, bytes]:
    """Every file in the protected areas, by path, with its content."""
    found = {}
    for area in (ws.cli_home, ws.state_dir, ws.session_repo / ".git", ws.worker_repo / ".git"):
        for path in sorted(area.rglob("*")):
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(ws.root))] = path.read_bytes()
    return found


def plant(ws: Workspace, link: str, target: str) -> None:
    path = ws.root / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target.replace("{root}", str(ws.root)))


# (where the link is, what it points to, a path through it that names hidden state)
HIDDEN_LINKS = [
    ("session_repo/x", "../.cli-home", "session_repo/x"),
    ("session_repo/x", "../.cli-home", "session_repo/x/credentials.json"),
    ("session_repo/x", "../.cli-home/", "session_repo/x/sub/token"),
    ("session_repo/x", "{root}/.cli-home", "session_repo/x/credentials.json"),
    ("session_repo/x", "../.cli-home/credentials.json", "session_repo/x"),
    ("session_repo/x", "../.cli-home/sub", "session_repo/x/token"),
    ("session_repo/x", "..", "session_repo/x/.cli-home/credentials.json"),
    ("session_repo/x", "../", "session_repo//x/./.cli-home/sub/token"),
    ("session_repo/x", "{root}", "session_repo/x/.cli-home"),
    ("session_repo/deep/er/x", "../../../.cli-home", "session_repo/deep/er/x/credentials.json"),
    ("worker_repo/x", "../.cli-home", "worker_repo/x/credentials.json"),
    ("top", ".cli-home", "top/credentials.json"),
    ("session_repo/.git/x", "../../.cli-home", "session_repo/.git/x/credentials.json"),
]


def _chain(ws: Workspace) -> str:
    """a -> b -> c -> ../.cli-home: resolution must follow every hop."""
    plant(ws, "session_repo/c", "../.cli-home")
    plant(ws, "session_repo/b", "c")
    plant(ws, "session_repo/a", "b")
    return "session_repo/a/credentials.json"


@pytest.mark.parametrize(("link", "target", "path"), HIDDEN_LINKS)
async def test_symlinks_into_the_cli_state_are_refused_on_every_route(
    client, ws, link, target, path
):
    plant(ws, link, target)
    before = protected_snapshot(ws)
    await assert_refused_everywhere(client, path)
    assert protected_snapshot(ws) == before


async def test_a_chain_of_symlinks_into_the_cli_state_is_refused(client, ws):
    path = _chain(ws)
    before = protected_snapshot(ws)
    await assert_refused_everywhere(client, path)
    assert protected_snapshot(ws) == before


@pytest.mark.parametrize(
    "path",
    [".cli-home", ".cli-home/", "./.cli-home", ".cli-home/.", ".//.cli-home/credentials.json",
     ".cli-home/sub/token", ".cli-home/new-file"],
)  # fmt: skip
async def test_the_cli_state_named_directly_is_refused(client, ws, path):
    before = protected_snapshot(ws)
    await assert_refused_everywhere(client, path)
    assert protected_snapshot(ws) == before


async def assert_refused_everywhere(client: httpx.AsyncClient, path: str) -> None:
    calls = [
        await client.get("/v1/files", params={"path": path}),
        await client.get("/v1/files/content", params={"path": path}),
        await client.put("/v1/files/content", params={"path": path}, content=b"forged"),
        await client.delete("/v1/files", params={"path": path + "/credentials.json"}),
        await client.delete("/v1/files", params={"path": path, "recursive": "1"})
        if not _is_link_itself(path)
        else None,
    ]
    for response in filter(None, calls):
        assert response.status_code in (400, 403), (response.request.method, path, response.text)
        assert response.json()["error"]["code"] in ("forbidden", "path_outside_workspace",
                                                    "bad_request", "not_found")  # fmt: skip
        assert b"sk-secret" not in response.content


def _is_link_itself(path: str) -> bool:
    # Deleting a symlink deletes the link, never its target: that one is allowed (tested below).
    return path in {link for link, _, p in HIDDEN_LINKS if p == link}


# (where the link is, what it points to, a path through it that names read-only state)
READ_ONLY_LINKS = [
    ("session_repo/y", "../.vwm", "session_repo/y/state.json"),
    ("session_repo/y", "../.vwm/state.json", "session_repo/y"),
    ("session_repo/y", "{root}/.vwm", "session_repo/y/jobs/j1.stdout"),
    ("session_repo/y", "..", "session_repo/y/.vwm/state.json"),
    ("session_repo/g", ".git", "session_repo/g/config"),
    ("session_repo/g", ".git/hooks", "session_repo/g/pre-push"),
    ("session_repo/g", "../worker_repo/.git", "session_repo/g/config"),
    ("worker_repo/g", "../session_repo/.git", "worker_repo/g/hooks/post-commit"),
    ("session_repo/sub/g", "../.git", "session_repo/sub/g/config"),
]


@pytest.mark.parametrize(("link", "target", "path"), READ_ONLY_LINKS)
async def test_symlinks_into_read_only_state_cannot_change_it(client, ws, link, target, path):
    plant(ws, link, target)
    before = protected_snapshot(ws)
    response = await client.put("/v1/files/content", params={"path": path}, content=b"forged")
    assert response.status_code in (400, 403), response.text
    if link != path:  # through the link, not the link itself (that one is a normal file entry)
        deleted = await client.delete("/v1/files", params={"path": path, "recursive": "1"})
        assert deleted.status_code in (400, 403), deleted.text
    assert protected_snapshot(ws) == before


@pytest.mark.parametrize(
    "path",
    [".vwm/state.json", ".vwm/new", "./.vwm/jobs/j1.stdout", ".vwm", "session_repo/.git/config",
     "session_repo/.git/hooks/pre-commit", "session_repo//.git/./config",
     "worker_repo/.git/hooks/pre-push", "worker_repo/.git/info/attributes"],
)  # fmt: skip
async def test_read_only_state_named_directly_cannot_change(client, ws, path):
    before = protected_snapshot(ws)
    written = await client.put("/v1/files/content", params={"path": path}, content=b"x")
    assert written.status_code == 403
    deleted = await client.delete("/v1/files", params={"path": path, "recursive": "1"})
    assert deleted.status_code == 403
    assert deleted.json()["error"]["code"] == "forbidden"
    assert protected_snapshot(ws) == before


@pytest.mark.parametrize("path", ["session_repo", "worker_repo", "session_repo/", "session_repo/."])
async def test_a_folder_holding_protected_state_cannot_be_deleted_whole(client, ws, path):
    before = protected_snapshot(ws)
    response = await client.delete("/v1/files", params={"path": path, "recursive": "1"})
    assert response.status_code == 403
    assert "cannot be deleted" in response.json()["error"]["message"]
    assert protected_snapshot(ws) == before
    assert (ws.root / path / "README.md").exists()


async def test_a_hard_link_to_the_cli_state_is_not_served(client, ws):
    os.link(ws.cli_home / "credentials.json", ws.session_repo / "innocent.txt")
    response = await client.get("/v1/files/content", params={"path": "session_repo/innocent.txt"})
    assert response.status_code == 403
    assert b"sk-secret" not in response.content


async def test_what_stays_allowed(client, ws):
    plant(ws, "session_repo/x", "../.cli-home")

    # Read-only state can be read, by name or through a link.
    stdout = await client.get("/v1/files/content", params={"path": ".vwm/jobs/j1.stdout"})
    assert stdout.content == b"raw output"
    plant(ws, "session_repo/head", ".git/HEAD")
    head = await client.get("/v1/files/content", params={"path": "session_repo/head"})
    assert head.content == b"ref: refs/heads/main\n"
    assert (await client.get("/v1/files", params={"path": "session_repo/.git"})).status_code == 200
    # The root listing leaves the hidden folder out; a planted link is listed as a link.
    listing = await client.get("/v1/files", params={"path": "."})
    names = {entry["name"] for entry in listing.json()["entries"]}
    assert ".cli-home" not in names and {".vwm", "session_repo"} <= names
    listing = await client.get("/v1/files", params={"path": "session_repo"})
    link = next(entry for entry in listing.json()["entries"] if entry["name"] == "x")
    assert link["type"] == "symlink"
    # Ordinary work in the repositories, and deleting the planted link itself (not its target).
    written = await client.put(
        "/v1/files/content", params={"path": "session_repo/src/a.py"}, content=b"print(1)\n"
    )
    assert written.status_code == 200
    assert (await client.delete("/v1/files", params={"path": "session_repo/x"})).status_code == 204
    assert not (ws.session_repo / "x").is_symlink()
    assert (ws.cli_home / "credentials.json").read_bytes() == CREDENTIALS
    deleted = await client.delete(
        "/v1/files", params={"path": "session_repo/src", "recursive": "1"}
    )
    assert deleted.status_code == 204


async def test_forged_resume_id_through_a_link_leaves_state_intact(client, ws):
    """The finding as reported: ``session_repo/y -> ../.vwm`` then a PUT of ``y/state.json``."""
    plant(ws, "session_repo/y", "../.vwm")
    response = await client.put(
        "/v1/files/content",
        params={"path": "session_repo/y/state.json"},
        content=b'{"cli_session_id": "forged"}',
    )
    assert response.status_code == 403
    assert response.json()["error"]["details"]["area"] == ".vwm"
    assert ws.state_file.read_bytes() == STATE
