"""The harness HTTP API without running a CLI: files confinement, bad input, error shapes."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import bootstrap_body, start_harness

# No job runs a CLI here, but `start_harness` needs the CLI installed (it fails without it).
pytestmark = pytest.mark.cli


@pytest.fixture
def harness(tmp_path, repos):
    harness = start_harness(
        tmp_path, "claude", {"VWM_MAX_FILE_BYTES": "1000", "VWM_MAX_REQUEST_BYTES": "2000"}
    )
    with harness.client() as client:
        assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
    yield harness
    harness.stop()


@pytest.fixture
def outside(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("do not touch")
    return secret


def test_files_round_trip_inside_the_workspace(harness):
    with harness.client() as client:
        put = client.put(
            "/v1/files/content", params={"path": "session_repo/notes/a.txt"}, content=b"hello"
        )
        assert put.status_code == 200, put.text
        assert (
            client.get("/v1/files/content", params={"path": "session_repo/notes/a.txt"}).content
            == b"hello"
        )
        listing = client.get("/v1/files", params={"path": "session_repo/notes"}).json()["entries"]
        assert [entry["name"] for entry in listing] == ["a.txt"]
        assert (
            client.delete("/v1/files", params={"path": "session_repo/notes/a.txt"}).status_code
            == 204
        )
        missing = client.get("/v1/files/content", params={"path": "session_repo/notes/a.txt"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "session_repo/../../outside/secret.txt",
        "/etc/passwd",
        "session_repo/\x00x",
    ],
)
def test_path_escapes_are_refused_and_touch_nothing(harness, outside, path):
    before = (outside.read_bytes(), os.stat(outside).st_mtime_ns)
    with harness.client() as client:
        for response in (
            client.get("/v1/files/content", params={"path": path}),
            client.put("/v1/files/content", params={"path": path}, content=b"pwned"),
            client.delete("/v1/files", params={"path": path}),
            client.get("/v1/files", params={"path": path}),
        ):
            assert 400 <= response.status_code < 500, (path, response.status_code)
            assert response.json()["error"]["code"] in ("path_outside_workspace", "bad_request")
    assert (outside.read_bytes(), os.stat(outside).st_mtime_ns) == before


def test_symlinks_pointing_outside_are_refused(harness, outside):
    (harness.workspace / "session_repo" / "link").symlink_to(outside.parent)
    (harness.workspace / "session_repo" / "filelink").symlink_to(outside)
    before = (outside.read_bytes(), os.stat(outside).st_mtime_ns)
    with harness.client() as client:
        for path in ("session_repo/link/secret.txt", "session_repo/filelink"):
            assert client.get("/v1/files/content", params={"path": path}).status_code in (400, 403)
            assert client.put(
                "/v1/files/content", params={"path": path}, content=b"pwned"
            ).status_code in (400, 403)
        assert client.delete(
            "/v1/files", params={"path": "session_repo/link/secret.txt"}
        ).status_code in (400, 403)
        assert client.get("/v1/files", params={"path": "session_repo/link"}).status_code in (
            400,
            403,
        )
    assert outside.exists()
    assert (outside.read_bytes(), os.stat(outside).st_mtime_ns) == before


def test_bad_input_gets_4xx_json_never_500(harness):
    with harness.client() as client:
        cases = [
            client.post(
                "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
            ),
            client.post("/v1/jobs", json=["a list"]),
            client.post("/v1/jobs", json={"prompt": 42}),
            client.post("/v1/jobs", json={"prompt": ""}),
            client.post("/v1/jobs", json={"prompt": "hi", "surprise": True}),
            client.post("/v1/jobs", json={"prompt": "hi", "mode": "sideways"}),
            client.post("/v1/jobs", json={"prompt": "hi", "job_id": "../../etc"}),
            client.post("/v1/jobs", json={"prompt": "x" * 5000}),
            client.post("/v1/bootstrap", json={"worker_repo": "not an object"}),
            client.get("/v1/jobs/nope"),
            client.get("/v1/jobs/nope/events"),
            client.get("/v1/jobs/x/events", headers={"Last-Event-ID": "abc"}),
            client.post("/v1/jobs/nope/cancel"),
            client.put(
                "/v1/files/content", params={"path": "session_repo/big"}, content=b"x" * 1001
            ),
            client.get("/v1/nowhere"),
        ]
        for response in cases:
            assert 400 <= response.status_code < 500, (
                response.request.url,
                response.status_code,
                response.text,
            )
            error = response.json()["error"]
            assert error["code"] and error["message"]
        assert cases[0].json()["error"]["code"] == "invalid_json"
        assert cases[2].json()["error"]["code"] == "invalid_request"
        assert cases[7].status_code == 413
        assert cases[13].status_code == 413
        assert not (harness.workspace / "session_repo" / "big").exists()
        assert list((harness.workspace / ".vwm" / "jobs").glob("*")) == []


def test_cli_state_is_never_served_and_harness_state_is_read_only(harness):
    (harness.workspace / ".cli-home").mkdir(exist_ok=True)
    (harness.workspace / ".cli-home" / "credentials.json").write_text('{"key": "secret"}')
    with harness.client() as client:
        hidden = client.get("/v1/files/content", params={"path": ".cli-home/credentials.json"})
        assert hidden.status_code == 403
        assert hidden.json()["error"]["code"] == "forbidden"
        assert client.get("/v1/files", params={"path": ".cli-home"}).status_code == 403
        assert (
            client.get("/v1/files/content", params={"path": ".vwm/state.json"}).status_code == 200
        )
        write = client.put("/v1/files/content", params={"path": ".vwm/state.json"}, content=b"{}")
        assert write.status_code == 403
        assert client.delete("/v1/files", params={"path": ".vwm"}).status_code == 403
    assert (harness.workspace / ".vwm" / "state.json").read_text() != "{}"
