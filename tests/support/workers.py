"""Runtimes and workers for any CLI on the fake provider, set up through the admin API of a
running control plane. `add_claude_workers` (tests.support.control_plane) is the Claude Code case."""

from __future__ import annotations

from pathlib import Path

import httpx

from vwm.local.clis import pinned_version


def add_cli_workers(
    client: httpx.Client,
    cli: str,
    provider_url: str,
    repo: Path,
    workers: dict[str, dict[str, float]] | None = None,
    *,
    runtime: str | None = None,
    credential_ref: str = "FAKE_PROVIDER_KEY",
) -> None:
    """A runtime for `cli` (named `runtime`, the CLI's name by default) on the fake provider,
    and workers on `repo` (by name, with their `timeouts`; one worker named after the CLI,
    without limits, by default)."""
    from tests.e2e.conftest import MODELS

    runtime = runtime or cli
    client.post(
        "/v1/admin/runtimes",
        json={
            "name": runtime,
            "cli": cli,
            "cli_version": pinned_version(cli),
            "default_model": MODELS[cli],
            "provider_base_url": provider_url,
            "credential_ref": credential_ref,
        },
    ).raise_for_status()
    for name, timeouts in (workers or {cli: {}}).items():
        body = {"name": name, "runtime": runtime, "repo_url": str(repo), "timeouts": timeouts}
        client.post("/v1/admin/workers", json=body).raise_for_status()
