"""`/v1/subscriptions` on `vwm up` (a real control plane): the API. What a subscriber then
gets, with real CLIs on the fake provider, is in test_subscribers_end_to_end.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.control_plane.conftest import ControlPlane, kill_harnesses

pytestmark = pytest.mark.cli

JOB_TYPES = ("dev.vwm.job.started", "dev.vwm.job.output", "dev.vwm.job.completed")


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    key = f"subscriptions-{uuid.uuid4().hex[:8]}"
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": key})
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def client_key(plane: ControlPlane) -> str:
    with plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "subscriber", "scope": "client"})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def test_the_subscriptions_api(plane: ControlPlane) -> None:
    body = {
        "name": "watcher",
        "filters": [{"exact": {"type": "dev.vwm.job.output"}}],
        "sink": "https://hooks.example.com/vwm",
        "delivery": {"retry": 3, "deadLetterSink": "https://hooks.example.com/dead"},
    }
    with plane.client(client_key(plane)) as client:
        created = client.post("/v1/subscriptions", json=body)
        assert created.status_code == 201, created.text
        made = created.json()
        assert {k: made[k] for k in body} == body
        assert made["created_by"] == "client"
        again = client.post("/v1/subscriptions", json=body)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "subscription_exists"
        reserved = client.post("/v1/subscriptions", json={**body, "name": "control-plane"})
        assert reserved.status_code == 409
        assert [s["name"] for s in client.get("/v1/subscriptions").json()["items"]] == ["watcher"]
        assert client.get("/v1/subscriptions/watcher").json() == made

        def refused(change: dict[str, Any]) -> dict[str, Any]:
            answer = client.post("/v1/subscriptions", json={**body, "name": "other", **change})
            assert answer.status_code == 422, (change, answer.text)
            return dict(answer.json()["error"])

        bad_filter = refused({"filters": [{"exact": {"type": "a"}}, {"nope": {}}]})
        assert bad_filter["code"] == "invalid_filter"
        assert bad_filter["details"]["path"].startswith("filters[1]")
        assert refused({"filters": [{"cesql": "type = 'x'"}]})["code"] == "unsupported_filter"
        assert refused({"delivery": {"retry": -1}})["code"] == "invalid_delivery"
        for url in ("ftp://example.com/", "https://user:pw@example.com/", "https://", "x"):
            assert refused({"sink": url})["code"] == "sink_url_invalid", url
        assert refused({"sink": "https://example.com/\x07"})["code"] == "sink_url_invalid"
        dead = {"deadLetterSink": "ftp://example.com/"}
        assert refused({"delivery": dead})["code"] in ("sink_url_invalid", "invalid_delivery")
        assert refused({"name": "Not_A_Name"})["code"] == "invalid_request"
        huge = [{"exact": {"type": "x" * 40_000}}, {"exact": {"source": "y" * 40_000}}]
        assert refused({"filters": huge})["code"] == "subscription_too_large"

        # vwm up allows local sinks as it allows local repos; with the setting off, refused.
        local = {**body, "name": "local", "sink": "http://127.0.0.1:9/"}
        assert client.post("/v1/subscriptions", json=local).status_code == 201
        with plane.client() as admin:
            off = admin.put("/v1/admin/settings/allow_local_repos", json={"value": False})
            assert off.status_code in (200, 204), off.text
        for sink in ("http://localhost:9/", "http://[::1]:9/", "http://127.0.0.2/"):
            error = refused({"sink": sink})
            assert error["code"] == "sink_url_not_allowed", sink
            assert "allow_local_repos" in error["message"]

        assert client.delete("/v1/subscriptions/watcher").status_code == 204
        assert client.get("/v1/subscriptions/watcher").status_code == 404
        assert client.delete("/v1/subscriptions/watcher").status_code == 404
    with plane.client("vwm_wrong") as stranger:
        assert stranger.get("/v1/subscriptions").status_code == 401
        assert stranger.post("/v1/subscriptions", json=body).status_code == 401
