"""Group commit: small writes that arrive together share one transaction.

Under load the control plane makes many tiny write transactions at once: an event queued per
harness POST, a delivery marked done per broker answer. Each costs far more in its transaction
(a session, BEGIN, COMMIT, on SQLite a turn of the single writer, a worker-thread hop) than in
the row it writes, and on SQLite they queue behind each other anyway. `GroupCommit` runs one
transaction at a time; the items submitted while it runs wait for the next, which takes them
all (up to `max_items`). An item alone is written at once, as before; nobody waits for a timer.

`apply` takes a transaction's whole batch (what it reads for all of them, such as the broker's
user subscriptions, it reads once); `each(fn)` makes one of a function of a single item. Each
submitter gets its own item's result, after the transaction holding it committed. If a
batch fails, nothing of it was written: each of its items is then tried again in a transaction
of its own, so one bad item fails only its own submitter (with its own exception).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

Item = TypeVar("Item")
Result = TypeVar("Result")

RunBatch = Callable[..., Awaitable[Any]]  # `functions.broker.queue.Run`: fn(session, *args)

MAX_ITEMS = 100


ApplyBatch = Callable[[Session, list[Item]], list[Result]]


def each(fn: Callable[[Session, Item], Result]) -> ApplyBatch[Item, Result]:
    """A batch function that applies `fn` to each item in turn."""

    def apply_all(session: Session, items: list[Item]) -> list[Result]:
        return [fn(session, item) for item in items]

    return apply_all


class GroupCommit(Generic[Item, Result]):
    """`await commit.submit(item)`: the item applied (`apply(session, batch)`, one result per
    item, in order) and committed; its result. `run` runs ``fn(session, *args)`` in one write
    transaction (in a worker thread)."""

    def __init__(
        self,
        run: RunBatch,
        apply: ApplyBatch[Item, Result],
        *,
        max_items: int = MAX_ITEMS,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self._run = run
        self._apply = apply
        self._max_items = max_items
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0  # how many it ran (for tests and benchmarks)

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="group-commit")
        # Shielded: a caller that gives up does not take the batch down with it (the item may
        # still be written; the writes here are all safe to find done).
        return await asyncio.shield(future)

    async def _write(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_items]
            del self._waiting[: self._max_items]
            items = [item for item, _ in batch]
            try:
                results = await self._transaction(items)
            except Exception:
                await self._one_by_one(batch)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """A failed batch wrote nothing: each item again on its own, so that the failure
        reaches only the submitter whose item causes it."""
        for item, future in batch:
            try:
                [result] = await self._transaction([item])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def _transaction(self, items: list[Item]) -> list[Result]:
        self.transactions += 1
        return await self._run(self._apply, items)
