"""A system setting's versions on PostgreSQL, over real HTTP: every `PUT /v1/admin/settings/{key}`
is kept, `GET /v1/admin/settings/{key}/versions` lists them newest first (admin scope, `limit`,
404 `setting_not_found`), and the SDK (`client.admin.setting_versions`) and `vwm settings versions`
show the same."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from typer.testing import CliRunner

from tests.support.plane_with_database import PlaneWithDatabase, control_plane_on
from vwm import Client, NotFoundError
from vwm.cli import app

VERSIONS = "/v1/admin/settings/{key}/versions"


@pytest.fixture(scope="module")
def on_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaneWithDatabase]:
    data_dir = tmp_path_factory.mktemp("setting-versions") / "data"
    with control_plane_on("postgresql", data_dir, prefix="vwm_settings") as plane:
        yield plane


def _key() -> str:
    """A setting key of the test's own: the database is shared by the module."""
    return f"test.{uuid.uuid4().hex[:12]}"


def _put(on_pg: PlaneWithDatabase, key: str, *values: object) -> None:
    with on_pg.plane.client() as http:
        for value in values:
            http.put(f"/v1/admin/settings/{key}", json={"value": value}).raise_for_status()


def test_every_write_is_listed_newest_first(on_pg: PlaneWithDatabase) -> None:
    key = _key()
    _put(on_pg, key, "Be brief.", {"tone": "kind"}, ["a", 1], "Be brief again.")

    with on_pg.plane.client() as http:
        answer = http.get(VERSIONS.format(key=key))
        current = {s["key"]: s for s in http.get("/v1/admin/settings").json()["items"]}[key]

    assert answer.status_code == 200
    body = answer.json()
    assert body["key"] == key
    assert [(item["version"], item["value"]) for item in body["items"]] == [
        (4, "Be brief again."),
        (3, ["a", 1]),
        (2, {"tone": "kind"}),
        (1, "Be brief."),
    ]
    assert all(set(item) == {"version", "value", "updated_at"} for item in body["items"])
    written = [datetime.fromisoformat(item["updated_at"]) for item in body["items"]]
    assert written == sorted(written, reverse=True)
    assert all(when.utcoffset() is not None for when in written)
    # The newest version is the setting as it stands.
    assert body["items"][0]["updated_at"] == current["updated_at"]
    assert current["version"] == 4


def test_limit_keeps_the_newest_and_is_bounded(on_pg: PlaneWithDatabase) -> None:
    key = _key()
    _put(on_pg, key, *range(1, 8))

    with on_pg.plane.client() as http:
        two = http.get(VERSIONS.format(key=key), params={"limit": 2}).json()["items"]
        every = http.get(VERSIONS.format(key=key), params={"limit": 500}).json()["items"]
        refused = [
            http.get(VERSIONS.format(key=key), params={"limit": limit}) for limit in (0, 501)
        ]
        not_a_number = http.get(VERSIONS.format(key=key), params={"limit": "ten"})

    assert [item["value"] for item in two] == [7, 6]
    assert [item["version"] for item in every] == [7, 6, 5, 4, 3, 2, 1]
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
        (422, "invalid_request"),
        (422, "invalid_request"),
    ]
    assert not_a_number.status_code == 400
    assert not_a_number.json()["error"]["code"] == "invalid_parameter"


def test_a_key_never_set_is_404_and_a_malformed_one_400(on_pg: PlaneWithDatabase) -> None:
    key = _key()
    with on_pg.plane.client() as http:
        missing = http.get(VERSIONS.format(key=key))
        malformed = http.get(VERSIONS.format(key="bad%20key"))

    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "setting_not_found"
    assert key in error["message"] and "PUT /v1/admin/settings/" in error["message"]
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_parameter"


def test_only_an_admin_key_reads_versions(on_pg: PlaneWithDatabase) -> None:
    key = _key()
    _put(on_pg, key, "secret-ish")
    with on_pg.plane.client() as http:
        client_key = http.post("/v1/admin/keys", json={"name": "c", "scope": "client"}).json()
    with on_pg.plane.client(client_key["key"]) as http:
        forbidden = http.get(VERSIONS.format(key=key))
    with on_pg.plane.client("vwm_nobody_nothing") as http:
        unknown = http.get(VERSIONS.format(key=key))

    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert unknown.status_code == 401


def test_the_openapi_document_describes_it(on_pg: PlaneWithDatabase) -> None:
    with on_pg.plane.client() as http:
        document = http.get("/openapi.json").json()

    operation = document["paths"][VERSIONS]["get"]
    assert operation["tags"] == ["admin"]
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
    assert limit["schema"]["default"] == 50
    assert {"200", "404"} <= set(operation["responses"])
    schema = document["components"]["schemas"]["SettingVersions"]
    assert set(schema["properties"]) == {"key", "items"}


def test_the_sdk_and_the_cli_list_the_versions(
    on_pg: PlaneWithDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key()
    instructions = "# Rules\n" + "Answer in English. " * 10
    _put(on_pg, key, "Be brief.", instructions)
    monkeypatch.delenv("VWM_URL", raising=False)
    monkeypatch.delenv("VWM_API_KEY", raising=False)
    plane = on_pg.plane

    with Client(plane.url, str(plane.admin_key), timeout=30) as sdk:
        versions = sdk.admin.setting_versions(key)
        newest = sdk.admin.setting_versions(key, limit=1)
        with pytest.raises(NotFoundError) as missing:
            sdk.admin.setting_versions(_key())

    assert [(v["version"], v["value"]) for v in versions] == [(2, instructions), (1, "Be brief.")]
    assert [v["version"] for v in newest] == [2]
    assert missing.value.code == "setting_not_found"

    def vwm(*args: str) -> tuple[int, str, str]:
        options = ["--url", plane.url, "--api-key", str(plane.admin_key)]
        result = CliRunner().invoke(app, [*options, *args])
        return result.exit_code, result.stdout, result.stderr

    code, table, _ = vwm("settings", "versions", key)
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split() == ["version", "updated_at", "value"]
    assert lines[2].split()[0] == "2" and "# Rules Answer in English." in lines[2]
    assert lines[2].rstrip().endswith("…")  # a long value is cut in the table
    assert lines[3].split()[0] == "1" and lines[3].rstrip().endswith("Be brief.")

    code, printed, _ = vwm("settings", "versions", key, "--limit", "1", "--json")
    assert code == 0
    assert json.loads(printed) == newest

    code, _, error = vwm("settings", "versions", _key())
    assert code == 1
    assert error.startswith("error [setting_not_found]: no setting 'test.")
