"""The contract every `RuntimeBackend` must pass, run against the real harness.

A backend's test module subclasses `RuntimeBackendContract` (as ``Test...``) and provides the
fixtures:

- ``backend``: the backend under test;
- ``restarted``: a factory of a brand-new backend object over the same storage, as after a
  restart of ``vwm up`` (it knows only what the handle carries);
- ``crash``: kills a session's harness abruptly, the way a crash would (SIGKILL, pod deleted);
- ``make_spec``: ``make_spec(session_id, **overrides) -> HarnessSpec`` for a CLI the harness can
  serve without running it (no test here runs a CLI).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import httpx
import pytest

from functions.runtime import (
    HarnessEndpoint,
    HarnessMissing,
    HarnessSpec,
    HarnessStartFailed,
    InvalidHarnessSpec,
    RuntimeBackend,
    RuntimeHandle,
    SessionExists,
)
from functions.runtime.base import StillOwned

READY_S = 60.0
SpecFactory = Callable[..., HarnessSpec]
Crash = Callable[[RuntimeHandle], Awaitable[None]]


class Sessions:
    """Provisions through a backend and remembers the latest handle of each session, so the
    fixture's finalizer tears every one of them down, whatever the test did."""

    def __init__(self, backend: RuntimeBackend) -> None:
        self.backend = backend
        self.latest: dict[str, RuntimeHandle] = {}

    def track(self, handle: RuntimeHandle) -> RuntimeHandle:
        self.latest[handle.session_id] = handle
        return handle

    async def ready(self, spec: HarnessSpec) -> tuple[RuntimeHandle, HarnessEndpoint]:
        handle = self.track(await self.backend.provision(spec))
        return handle, await self.backend.wait_ready(handle, READY_S)


def persisted(handle: RuntimeHandle) -> RuntimeHandle:
    """The handle as the control plane gets it back from its database."""
    return RuntimeHandle.from_dict(json.loads(json.dumps(handle.to_dict())))


def owned_among(owned: set[str], asked: list[set[str]] | None = None) -> StillOwned:
    """A `sweep` callback: of the sessions it is asked about, those in `owned` (each question
    recorded in `asked`)."""

    async def still_owned(session_ids: Collection[str]) -> set[str]:
        if asked is not None:
            asked.append(set(session_ids))
        return set(session_ids) & owned

    return still_owned


def authed(endpoint: HarnessEndpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {endpoint.token}"}


async def eventually(
    read: Callable[[], Awaitable[Any]], expected: Any, timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    value = await read()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = await read()
    assert value == expected, f"still {value!r} after {timeout_s} s, expected {expected!r}"


class RuntimeBackendContract:
    @pytest.fixture
    async def sessions(self, backend: RuntimeBackend) -> AsyncIterator[Sessions]:
        sessions = Sessions(backend)
        yield sessions
        for handle in sessions.latest.values():
            await backend.teardown(handle)

    @pytest.fixture
    async def http(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            yield client

    # -- provision and find --------------------------------------------------------------------

    async def test_a_provisioned_harness_serves_the_session_token_only(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory, http
    ) -> None:
        assert isinstance(backend, RuntimeBackend)
        handle, endpoint = await sessions.ready(make_spec("s-ready"))

        health = await http.get(f"{endpoint.url}/healthz")
        assert health.status_code == 200
        assert health.json()["cli"] == "claude"
        listing = await http.get(
            f"{endpoint.url}/v1/files", params={"path": "."}, headers=authed(endpoint)
        )
        assert listing.status_code == 200
        anonymous = await http.get(f"{endpoint.url}/v1/files", params={"path": "."})
        assert anonymous.status_code == 401
        assert await backend.status(handle) == "running"
        assert backend.endpoint(persisted(handle)) == endpoint

    async def test_the_handle_is_json_and_never_holds_the_credential(
        self, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        spec = make_spec("s-json", credential_env={"VWM_PROVIDER_API_KEY": "sk-never-stored"})
        handle, _ = await sessions.ready(spec)

        text = json.dumps(handle.to_dict())
        assert "sk-never-stored" not in text
        assert "sk-never-stored" not in repr(spec)
        assert persisted(handle) == handle

    async def test_a_session_is_provisioned_once(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        await sessions.ready(make_spec("s-once"))

        with pytest.raises(SessionExists) as caught:
            await backend.provision(make_spec("s-once"))
        assert not caught.value.retryable

    @pytest.mark.parametrize(
        ("session_id", "extra_env"),
        [("../escape", {}), ("", {}), ("s-env", {"VWM_SESSION_TOKEN": "mine"})],
    )
    async def test_a_spec_the_backend_cannot_honour_is_refused(
        self, backend: RuntimeBackend, make_spec: SpecFactory, session_id: str, extra_env
    ) -> None:
        with pytest.raises(InvalidHarnessSpec) as caught:
            await backend.provision(make_spec(session_id, extra_env=extra_env))
        assert not caught.value.retryable

    async def test_a_harness_that_cannot_start_fails_fast_with_its_log(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        handle = sessions.track(await backend.provision(make_spec("s-bogus", cli="bogus")))
        started = time.monotonic()

        with pytest.raises(HarnessStartFailed) as caught:
            await backend.wait_ready(handle, READY_S)
        assert time.monotonic() - started < 15
        assert "bogus" in caught.value.log_tail
        assert "bogus" in str(caught.value)
        assert not caught.value.retryable

    async def test_a_failed_start_is_retried_with_ensure_running(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        handle = sessions.track(await backend.provision(make_spec("s-retry", cli="bogus")))
        with pytest.raises(HarnessStartFailed):
            await backend.wait_ready(handle, READY_S)
        assert await backend.status(handle) == "stopped"

        fixed = sessions.track(await backend.ensure_running(handle, make_spec("s-retry")))

        endpoint = await backend.wait_ready(fixed, READY_S)
        assert endpoint.token == backend.endpoint(handle).token

    # -- crash and restart ---------------------------------------------------------------------

    async def test_a_crashed_harness_is_relaunched_on_its_workspace_with_its_token(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory, crash, http
    ) -> None:
        spec = make_spec("s-crash")
        handle, endpoint = await sessions.ready(spec)
        written = await http.put(
            f"{endpoint.url}/v1/files/content",
            params={"path": "notes/kept.txt"},
            content=b"survives a crash",
            headers=authed(endpoint),
        )
        assert written.status_code == 200

        await crash(handle)
        await eventually(lambda: backend.status(handle), "stopped")
        relaunched = sessions.track(await backend.ensure_running(handle, spec))
        new_endpoint = await backend.wait_ready(relaunched, READY_S)

        assert new_endpoint.token == endpoint.token
        assert await backend.status(relaunched) == "running"
        kept = await http.get(
            f"{new_endpoint.url}/v1/files/content",
            params={"path": "notes/kept.txt"},
            headers=authed(new_endpoint),
        )
        assert kept.status_code == 200
        assert kept.content == b"survives a crash"

    async def test_ensure_running_keeps_a_healthy_harness(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        spec = make_spec("s-healthy")
        handle, endpoint = await sessions.ready(spec)

        again = sessions.track(await backend.ensure_running(handle, spec))

        assert again == handle
        assert await backend.wait_ready(again, READY_S) == endpoint

    async def test_a_new_backend_object_finds_a_running_harness(
        self, sessions: Sessions, make_spec: SpecFactory, restarted, http
    ) -> None:
        spec = make_spec("s-found")
        handle, endpoint = await sessions.ready(spec)

        after_restart: RuntimeBackend = restarted()
        stored = persisted(handle)
        assert await after_restart.status(stored) == "running"
        again = await after_restart.ensure_running(stored, spec)
        assert after_restart.endpoint(again) == endpoint
        health = await http.get(f"{endpoint.url}/healthz")
        assert health.status_code == 200

    async def test_a_new_backend_object_relaunches_a_dead_harness(
        self, sessions: Sessions, make_spec: SpecFactory, restarted, crash, http
    ) -> None:
        spec = make_spec("s-revived")
        handle, endpoint = await sessions.ready(spec)
        await http.put(
            f"{endpoint.url}/v1/files/content",
            params={"path": "kept.txt"},
            content=b"kept",
            headers=authed(endpoint),
        )
        await crash(handle)

        after_restart: RuntimeBackend = restarted()
        stored = persisted(handle)
        await eventually(lambda: after_restart.status(stored), "stopped")
        revived = await after_restart.ensure_running(stored, spec)
        sessions.backend = after_restart  # the finalizer tears down through the new object
        sessions.track(revived)
        new_endpoint = await after_restart.wait_ready(revived, READY_S)

        assert new_endpoint.token == endpoint.token
        kept = await http.get(
            f"{new_endpoint.url}/v1/files/content",
            params={"path": "kept.txt"},
            headers=authed(new_endpoint),
        )
        assert kept.content == b"kept"

    # -- teardown ------------------------------------------------------------------------------

    async def test_teardown_leaves_nothing_and_can_be_repeated(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory, http
    ) -> None:
        spec = make_spec("s-gone")
        handle, endpoint = await sessions.ready(spec)

        await backend.teardown(handle)

        assert await backend.status(handle) == "missing"
        with pytest.raises(httpx.TransportError):
            await http.get(f"{endpoint.url}/healthz")
        with pytest.raises(HarnessMissing) as caught:
            await backend.ensure_running(handle, spec)
        assert not caught.value.retryable
        await backend.teardown(handle)  # idempotent

    async def test_teardown_can_keep_the_workspace_for_a_later_relaunch(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory, http
    ) -> None:
        spec = make_spec("s-kept")
        handle, endpoint = await sessions.ready(spec)
        await http.put(
            f"{endpoint.url}/v1/files/content",
            params={"path": "kept.txt"},
            content=b"kept",
            headers=authed(endpoint),
        )

        await backend.teardown(handle, keep_workspace=True)
        assert await backend.status(handle) == "stopped"

        revived = sessions.track(await backend.ensure_running(handle, spec))
        new_endpoint = await backend.wait_ready(revived, READY_S)
        kept = await http.get(
            f"{new_endpoint.url}/v1/files/content",
            params={"path": "kept.txt"},
            headers=authed(new_endpoint),
        )
        assert kept.content == b"kept"

    # -- sweep ---------------------------------------------------------------------------------

    async def test_sweep_stops_the_harnesses_of_sessions_no_longer_owned(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        kept, _ = await sessions.ready(make_spec("s-owned"))
        orphan, _ = await sessions.ready(make_spec("s-orphan"))
        asked: list[set[str]] = []

        assert await backend.sweep(owned_among({"s-owned"}, asked)) == ["s-orphan"]

        assert asked == [{"s-owned", "s-orphan"}]
        assert await backend.status(kept) == "running"
        await eventually(lambda: backend.status(orphan), "stopped")

    async def test_sweep_never_stops_a_session_that_starts_while_it_runs(
        self, backend: RuntimeBackend, sessions: Sessions, make_spec: SpecFactory
    ) -> None:
        """A session created between the listing and the question is neither listed nor
        stopped, even though the answer (read before its row existed) does not name it."""
        await sessions.ready(make_spec("s-before"))
        started: list[RuntimeHandle] = []

        async def a_session_starts_meanwhile(session_ids: Collection[str]) -> set[str]:
            started.append((await sessions.ready(make_spec("s-meanwhile")))[0])
            return set()

        assert await backend.sweep(a_session_starts_meanwhile) == ["s-before"]
        assert await backend.status(started[0]) == "running"
