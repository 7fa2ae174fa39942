"""A delivery loop in a process of its own, for the test that kills one mid-delivery:
``python -m tests.broker.dispatch_process DATABASE_URL SINK_URL LEASE_S``. It delivers every event
of the queue to one HTTP subscription (`tests.broker.dispatch_process.SUBSCRIPTION`) until it is
killed, and prints ``ready`` once its loop runs."""

from __future__ import annotations

import asyncio
import sys

import httpx

from functions.broker import queue
from functions.broker.delivery import BROKER_DEFAULT
from functions.broker.dispatcher import Dispatcher, DispatcherSettings
from functions.broker.filters import MATCH_ALL
from functions.broker.subscriptions import HttpSink, Subscription
from functions.db.engine import make_engine, session_factory

SUBSCRIPTION = "sink"


def subscription(url: str, client: httpx.AsyncClient) -> Subscription:
    return Subscription(SUBSCRIPTION, MATCH_ALL, HttpSink(url, client), BROKER_DEFAULT)


async def main(database_url: str, sink_url: str, lease_s: float) -> None:
    run = queue.run_in(session_factory(make_engine(database_url)))
    async with httpx.AsyncClient(trust_env=False) as client:
        dispatcher = Dispatcher(
            run, [subscription(sink_url, client)], DispatcherSettings(poll_s=0.05, lease_s=lease_s)
        )
        dispatcher.start()
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
