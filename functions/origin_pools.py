"""An httpx transport with a connection pool per origin, for the calls to many harnesses.

httpcore's pool walks every connection it holds on each request it sends and each response it
closes, and asks each idle one whether its socket has expired (a `select` per connection). One
pool for every harness holds a connection or two per session: with 200 sessions streaming, that
walk of 400 connections, twice per call and per event stream, was about a sixth of the control
plane's CPU (py-spy, `bench/scale.py`). Here each origin (one harness) gets a pool of its own,
so a call walks that harness's few connections only.

A pool that has had no response open for `idle_close_s` is closed and forgotten (its harness
may be gone for good: idle-stopped, ended), so the transport holds no socket of a harness that
is not used; the next call to that origin makes a new pool.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

Origin = tuple[bytes, bytes, int | None]


@dataclass
class _OriginPool:
    transport: httpx.AsyncHTTPTransport
    clock: Callable[[], float]  # the transport's: every time of a pool is read from one clock
    open_responses: int = 0
    last_used: float = 0.0  # set by each request it sends, and each response closed

    def idle_for(self, now: float) -> float:
        return 0.0 if self.open_responses else now - self.last_used


class _CountedStream(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed, so a long event stream keeps
    its pool open however long it lasts."""

    def __init__(self, stream: httpx.AsyncByteStream, pool: _OriginPool) -> None:
        self._stream = stream
        self._pool: _OriginPool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._pool is not None:  # closed once, counted once
                self._pool.open_responses -= 1
                self._pool.last_used = self._pool.clock()
                self._pool = None


class PoolPerOrigin(httpx.AsyncBaseTransport):
    """Routes each request to its origin's own `httpx.AsyncHTTPTransport`, made by
    `new_transport` on the first request to that origin."""

    def __init__(
        self,
        new_transport: Callable[[], httpx.AsyncHTTPTransport],
        *,
        idle_close_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_transport = new_transport
        self._idle_close_s = idle_close_s
        self._clock = clock
        self._pools: dict[Origin, _OriginPool] = {}
        self._next_sweep = clock() + idle_close_s

    @property
    def origins(self) -> int:
        """How many origins have a pool now (for tests and metrics)."""
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._sweep()
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _OriginPool(self._new_transport(), self._clock)
        pool.open_responses += 1
        pool.last_used = self._clock()
        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            pool.open_responses -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CountedStream(response.stream, pool)
        return response

    async def _sweep(self) -> None:
        """At most once per `idle_close_s`: close the pools idle that long."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._idle_close_s
        idle = [o for o, p in self._pools.items() if p.idle_for(now) >= self._idle_close_s]
        for origin in idle:
            await self._pools.pop(origin).transport.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.transport.aclose()
