"""`functions.recent_keys.RecentKeys` and `lookup_key` with it: a key found live is answered
from memory for its few seconds (a revocation in the database is seen once they pass), a wrong
key is never remembered, the key itself is never kept, and the memory stays bounded."""

from __future__ import annotations

from functions import recent_keys
from functions.recent_keys import RecentKeys


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_live_key_is_remembered_for_its_seconds_only():
    clock = Clock()
    keys = RecentKeys(ttl_s=5, clock=clock)
    assert keys.scope("vwm_a_secret") is None
    keys.remember("vwm_a_secret", "admin")
    clock.now += 4.9
    assert keys.scope("vwm_a_secret") == "admin"
    assert keys.scope("vwm_a_other") is None
    clock.now += 0.2
    assert keys.scope("vwm_a_secret") is None  # looked up again: a revocation shows now


def test_the_key_itself_is_never_kept():
    keys = RecentKeys()
    keys.remember("vwm_k_plaintext-secret", "client")
    assert "plaintext-secret" not in repr(vars(keys))
    assert all(b"plaintext-secret" not in digest for digest in keys._found)


def test_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(recent_keys, "MAX_KEYS", 10)
    keys = RecentKeys()
    for n in range(25):
        keys.remember(f"vwm_{n}_s", "client")
    assert len(keys._found) <= 10
    assert keys.scope("vwm_24_s") == "client"  # the newest is kept


async def test_lookup_key_reads_the_database_once_per_key_and_sees_a_revocation_later(
    tmp_path, monkeypatch
):
    from functions import context
    from functions.db.api_keys import ApiKeys
    from functions.embedded import prepare
    from functions.services import Services
    from tests.control_plane.test_in_process import _settings

    clock = Clock()
    services = Services.build(_settings(tmp_path / "keys"))
    services.recent_keys = RecentKeys(clock=clock)
    prepare(services.settings.database_url)
    try:
        row, key = await services.db(lambda session: ApiKeys(session).issue("probe", "client"))
        reads = []
        real_read = services.read

        async def counted(fn, *args):
            reads.append(fn)
            return await real_read(fn, *args)

        monkeypatch.setattr(services, "read", counted)
        with context.bound(services):
            assert await context.lookup_key(key) == "client"
            assert await context.lookup_key(key) == "client"
            assert len(reads) == 1  # the second answered from memory
            assert await context.lookup_key(key + "x") is None
            assert await context.lookup_key(key + "x") is None
            assert len(reads) == 3  # a wrong key is looked up every time

            await services.db(lambda session: ApiKeys(session).revoke(row.id))
            assert await context.lookup_key(key) == "client"  # within its seconds
            clock.now += recent_keys.TTL_S
            assert await context.lookup_key(key) is None  # then the revocation holds
    finally:
        await services.aclose()
