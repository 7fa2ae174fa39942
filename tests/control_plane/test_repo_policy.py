"""The repo URL policy: which repositories a client's session (and an admin's worker) may name.
URL variants git reads in surprising ways, the two admin settings and their shapes, the
production and embedded defaults, and the refusal over real HTTP (a 422 with a stable code that
names the setting, and nothing written)."""

from __future__ import annotations

import pytest

from functions.repo_policy import (
    InvalidSetting,
    RepoPolicy,
    RepoPolicyError,
    check_setting,
    parse,
)
from functions.settings import ControlPlaneSettings
from vwm.local.clis import pinned_version

LOCAL = [
    "/abs/path",
    "./rel",
    "../x",
    "relative/dir",
    "file:///x",
    "FILE://x",
    "File:///x",
    "file:x",  # git would try ssh to a host "file"; we count it as local
    "~/x",
    "~user/x",
    "C:\\x",
    "C:/x",
    "./host:path",  # a slash before the colon: a path, not scp syntax
]
REMOTE = {
    "https://github.com/acme/app.git": "https://github.com/acme/app.git",
    "https://GitHub.com:443/acme/app": "https://github.com:443/acme/app",
    "ssh://git@github.com/acme/app.git": "ssh://github.com/acme/app.git",
    "git+ssh://host/acme/app": "ssh://host/acme/app",
    "git://host/acme/app": "git://host/acme/app",
    "git@github.com:acme/app.git": "ssh://github.com/acme/app.git",
    "host:path": "ssh://host/path",  # scp syntax: no slash before the colon
    "https://[::1]:8443/x": "https://[::1]:8443/x",
}
NEVER = [
    "",
    "ext::sh -c touch% /tmp/pwned",
    "ext::sh",
    "fd::17",
    "Ext::x",
    "http://github.com/acme/app",
    "ftp://host/x",
    "HTTPS://github.com/acme/app",  # git looks for a helper named "HTTPS"
    "https://user:secret@github.com/acme/app",
    "https://ghp_token@github.com/acme/app",
    "ssh://user:secret@host/x",
    "https://github.com/acme/app\n",
    " https://github.com/acme/app",
    "https://github.com/acme/\tapp",
    "https://github.com/acme/app\x00",
    "https://github.com/acme/\u202eapp",  # a bidi override hides what is shown
    "-uhttps://github.com/x",
    "--upload-pack=touch /tmp/x",
    "ssh://-oProxyCommand=touch/x",
    "host:-oProxyCommand=x",
    "https://github.com/acme/../evil/app",
    "https://github.com/acme/%2e%2e/evil/app",
    "https://github.com",
    "https://github.com/acme/app?x=1",
    "https://github.com/acme/app#main",
    "https://github.com:99999/acme/app",
]


@pytest.mark.parametrize("url", LOCAL)
def test_paths_and_file_urls_are_local(url: str) -> None:
    assert parse(url).kind == "local"
    with pytest.raises(RepoPolicyError) as refused:
        RepoPolicy(allow_local=False).check_session_repo(url)
    assert refused.value.code == "repo_url_not_allowed"
    assert refused.value.details["setting"] == "allow_local_repos"
    assert "allow_local_repos" in refused.value.message
    RepoPolicy(allow_local=True).check_session_repo(url)


@pytest.mark.parametrize(("url", "match_form"), REMOTE.items())
def test_remote_urls_are_matched_in_a_normal_form(url: str, match_form: str) -> None:
    parsed = parse(url)
    assert (parsed.kind, parsed.match_form) == ("remote", match_form)
    RepoPolicy(allow_local=False).check_session_repo(url)  # no patterns: any remote URL


@pytest.mark.parametrize("url", NEVER)
def test_what_no_setting_allows_is_invalid(url: str) -> None:
    for policy in (RepoPolicy(allow_local=True), RepoPolicy(allow_local=False)):
        with pytest.raises(RepoPolicyError) as refused:
            policy.check_session_repo(url)
        assert refused.value.code == "repo_url_invalid", url
        with pytest.raises(RepoPolicyError):
            policy.check_worker_repo(url)


def test_patterns_bind_a_clients_remote_urls_segment_by_segment() -> None:
    policy = RepoPolicy(
        allow_local=False,
        patterns=("https://github.com/acme/*", "ssh://git.acme.dev/**", "git://h/tool?.git"),
    )
    for allowed in (
        "https://github.com/acme/app.git",
        "https://GITHUB.com/acme/app",
        "git@git.acme.dev:team/deep/app.git",
        "ssh://me@git.acme.dev/x",
        "git://h/tool1.git",
    ):
        policy.check_session_repo(allowed)
    for refused in (
        "https://github.com/acme/app/extra",  # * stays within one segment
        "https://github.com/acmeco/app",
        "https://github.com.evil.com/acme/app",
        "https://evil.com/github.com/acme/app",
        "ssh://github.com/acme/app",  # another transport than the pattern's
        "git://h/tool12.git",
    ):
        with pytest.raises(RepoPolicyError) as caught:
            policy.check_session_repo(refused)
        assert caught.value.code == "repo_url_not_allowed", refused
        assert caught.value.details["setting"] == "repo_url_patterns"
    policy.check_worker_repo("https://elsewhere.dev/kb.git")  # patterns bind clients only
    with pytest.raises(RepoPolicyError):
        policy.check_worker_repo("/srv/kb.git")  # the local rule binds workers too


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allow_local_repos", "yes"),
        ("allow_local_repos", 1),
        ("allow_local_repos", None),
        ("repo_url_patterns", "https://github.com/*"),
        ("repo_url_patterns", [1]),
        ("repo_url_patterns", ["github.com/acme/*"]),  # no scheme: would never match
        ("repo_url_patterns", ["file:///srv/*"]),
        ("repo_url_patterns", ["https://github.com/acme/ *"]),
        ("repo_url_patterns", ["https://x/" + "a" * 600]),
        ("repo_url_patterns", ["https://x/*"] * 201),
        ("repo_url_patterns", {"https://x/*": True}),
    ],
)
def test_setting_values_of_the_wrong_shape_are_refused(key: str, value: object) -> None:
    with pytest.raises(InvalidSetting) as refused:
        check_setting(key, value)
    assert refused.value.code == "invalid_setting"


def test_good_setting_values_and_other_keys_pass() -> None:
    check_setting("allow_local_repos", False)
    check_setting("repo_url_patterns", [])
    check_setting("repo_url_patterns", ["https://github.com/acme/*", "git://h/**"])
    check_setting("global_instructions", ["not this module's business"])


def test_production_refuses_local_repos_unless_configured() -> None:
    assert ControlPlaneSettings.from_env({}).allow_local_repos is False
    assert ControlPlaneSettings.from_env({"VWM_ALLOW_LOCAL_REPOS": "1"}).allow_local_repos
    assert not ControlPlaneSettings.from_env({"VWM_ALLOW_LOCAL_REPOS": "off"}).allow_local_repos
    with pytest.raises(ValueError, match="VWM_ALLOW_LOCAL_REPOS"):
        ControlPlaneSettings.from_env({"VWM_ALLOW_LOCAL_REPOS": "maybe"})


def _error(response) -> dict:
    assert response.status_code == 422, response.text
    return response.json()["error"]


def test_the_policy_over_http(control_plane, tmp_path) -> None:
    assert "local repositories (paths, file://) are allowed" in control_plane.log()
    with control_plane.client() as client:
        client.post(
            "/v1/admin/runtimes",
            json={"name": "c", "cli": "claude", "cli_version": pinned_version("claude")},
        ).raise_for_status()
        remote = {"name": "w", "runtime": "c", "repo_url": "https://git.invalid/kb.git"}
        client.post("/v1/admin/workers", json=remote).raise_for_status()
        for key, value in (("allow_local_repos", "no"), ("repo_url_patterns", ["acme/*"])):
            refused = client.put(f"/v1/admin/settings/{key}", json={"value": value})
            assert _error(refused)["code"] == "invalid_setting"
        assert client.get("/v1/admin/settings").json()["items"] == []

        client.put("/v1/admin/settings/allow_local_repos", json={"value": False})
        for url in ("file:///etc", str(tmp_path), "../x", "FILE://x"):
            body = {"worker": "w", "session_repo": {"url": url}}
            error = _error(client.post("/v1/sessions", json=body))
            assert error["code"] == "repo_url_not_allowed", url
            assert error["details"]["setting"] == "allow_local_repos"
        local_worker = {"name": "lw", "runtime": "c", "repo_url": str(tmp_path)}
        assert _error(client.post("/v1/admin/workers", json=local_worker))["code"] == (
            "repo_url_not_allowed"
        )
        patch = client.patch("/v1/admin/workers/w", json={"repo_url": "file:///srv/kb"})
        assert _error(patch)["code"] == "repo_url_not_allowed"
        sneaky = {"worker": "w", "session_repo": {"url": "ext::sh -c id"}}
        assert _error(client.post("/v1/sessions", json=sneaky))["code"] == "repo_url_invalid"

        client.put(
            "/v1/admin/settings/repo_url_patterns", json={"value": ["https://git.invalid/acme/*"]}
        ).raise_for_status()
        outside = {"worker": "w", "session_repo": {"url": "https://git.invalid/other/x"}}
        error = _error(client.post("/v1/sessions", json=outside))
        assert error["code"] == "repo_url_not_allowed"
        assert error["details"]["setting"] == "repo_url_patterns"
        assert client.get("/v1/sessions").json()["items"] == []  # nothing was written

        inside = {
            "worker": "w",
            "session_repo": {"url": "https://git.invalid/acme/x"},
            "wait": False,
        }
        accepted = client.post("/v1/sessions", json=inside)
        assert accepted.status_code == 202, accepted.text  # past the policy; git fails later

    control_plane.stop()
    control_plane.start()  # the start says what the admin setting decided
    assert "local repositories (paths, file://) are refused" in control_plane.log()
