"""The admin and telemetry helpers on the client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.sdk.fake_control_plane import FakeControlPlane
from vwm import AuthError, Client, ConflictError, NotFoundError, ValidationError
from vwm.sdk.admin import settings_by_key


def test_runtimes_and_workers(admin: Client, fake: FakeControlPlane):
    runtime = admin.admin.create_runtime(
        name="claude-2", cli="claude", cli_version="2.0.14", prices={"input": 3}
    )
    assert runtime["prices"] == {"input": 3}
    worker = admin.admin.create_worker(
        name="reviewer", runtime="claude-2", repo_url="file:///kb.git"
    )
    assert worker["repo_branch"] == "main"  # the server's default
    assert [r["name"] for r in admin.admin.list_runtimes()] == ["claude-2"]
    assert [w["name"] for w in admin.admin.list_workers()] == ["reviewer"]
    assert admin.admin.update_worker("reviewer", model="opus")["model"] == "opus"
    assert admin.admin.get_worker("reviewer")["model"] == "opus"
    admin.admin.delete_worker("reviewer")
    with pytest.raises(NotFoundError):
        admin.admin.get_worker("reviewer")
    with pytest.raises(ConflictError) as caught:
        admin.admin.create_runtime(name="claude-2", cli="claude", cli_version="2")
    assert caught.value.code == "name_taken"
    with pytest.raises(ValidationError) as invalid:
        admin.admin.create_runtime(name="x")
    assert invalid.value.details == {"missing": ["cli", "cli_version"]}


def test_settings(admin: Client):
    with pytest.raises(NotFoundError):
        admin.admin.get_setting("global_instructions")
    assert admin.admin.put_setting("global_instructions", "Be brief.")["version"] == 1
    assert admin.admin.put_setting("global_instructions", "Be kind.")["version"] == 2
    assert admin.admin.get_setting("global_instructions") == "Be kind."
    assert admin.admin.settings() == {
        "global_instructions": {"key": "global_instructions", "value": "Be kind.", "version": 2}
    }


@pytest.mark.parametrize(
    "answer",
    [
        {"items": [{"key": "a", "value": 1, "version": 3}]},
        [{"key": "a", "value": 1, "version": 3}],
        {"a": {"value": 1, "version": 3}},
    ],
)
def test_settings_answers_in_any_documented_shape(answer: object):
    assert settings_by_key(answer)["a"]["value"] == 1
    assert settings_by_key({"a": "bare"}) == {"a": {"value": "bare"}}


def test_keys_and_scopes(admin: Client, url: str):
    answer = admin.admin.create_key("ci", "client")
    assert answer["key"].startswith("vwm_")
    with Client(url, answer["key"]) as client:
        with pytest.raises(AuthError) as caught:
            client.admin.list_runtimes()
        assert (caught.value.status, caught.value.code) == (403, "forbidden")
        assert list(client.sessions()) == []
    with Client(url, "vwm_wrong_key") as stranger, pytest.raises(AuthError) as caught:
        list(stranger.sessions())
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_telemetry(client: Client, worker_ready: str, fake: FakeControlPlane):
    session = client.worker(worker_ready).session()
    session.prompt("one")
    session.prompt("two")
    since = datetime(2025, 1, 1, tzinfo=UTC)
    records = client.telemetry.requests(worker="reviewer", since=since, limit=10)
    assert [r["job_id"] for r in records] == ["job_1", "job_2"]
    query = fake.recorded("GET", "/v1/telemetry/requests")[0].query
    assert query == {"worker": "reviewer", "since": "2025-01-01T00:00:00+00:00", "limit": "10"}
    assert client.telemetry.requests(session_id="ses_nope") == []
    (group,) = client.telemetry.summary("worker")
    assert (group["worker"], group["jobs"]) == ("reviewer", 2)
    with pytest.raises(ValidationError):
        client.telemetry.summary("runtime")
