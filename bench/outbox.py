"""What the outbox (eventing/outbox.py) costs per event: an append (one fsync of the segment,
the only cost a publisher's caller waits for), and a drain through `eventing.relay.Relay` to a
local sink that decodes every event (one POST per event; the cursor is written at most once a
second).

    python bench/outbox.py [--events 500] [--dir /path/on/the/volume/to/measure]

The directory decides the fsync cost: measure on the disk the harness's volume lives on.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eventing.outbox import FileOutbox  # noqa: E402
from eventing.publisher import Publisher, PublisherSettings  # noqa: E402
from eventing.relay import Relay  # noqa: E402
from tests.eventing.test_outbox import job_event  # noqa: E402
from tests.support.event_sink import Sink, SinkServer  # noqa: E402


async def measure(directory: Path, count: int) -> None:
    events = [job_event(seq) for seq in range(1, count + 1)]
    outbox = await FileOutbox.open(directory)
    appends = []
    for event in events:
        began = time.perf_counter()
        await outbox.append(event)
        appends.append(time.perf_counter() - began)
    appends.sort()
    print(
        f"append (fsync): {count} events, median {statistics.median(appends) * 1e3:.2f} ms, "
        f"p90 {appends[int(count * 0.9)] * 1e3:.2f} ms, {count / sum(appends):.0f} events/s"
    )

    server = SinkServer(Sink())
    await server.start()
    try:
        relay = Relay(outbox, Publisher(PublisherSettings(sink=server.url)))
        began = time.perf_counter()
        relay.start()
        await relay.drained()
        elapsed = time.perf_counter() - began
        await relay.stop()
        await outbox.close()
        await relay.publisher.aclose()
        async with Publisher(PublisherSettings(sink=server.url)) as publisher:
            began = time.perf_counter()
            for event in events:
                await publisher.attempt(event)
            bare = time.perf_counter() - began
    finally:
        await server.stop()
    assert server.sink.ids == [event.id for event in events] * 2
    print(
        f"drain to a local sink: {count} events in {elapsed:.2f} s, {count / elapsed:.0f} "
        f"events/s, {elapsed / count * 1e3:.2f} ms per event (POST + outbox)"
    )
    print(
        f"the same POSTs without an outbox: {count / bare:.0f} events/s, "
        f"{bare / count * 1e3:.2f} ms per event"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--dir", type=Path, help="where the outbox goes (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        print(f"outbox in {directory}")
        asyncio.run(measure(Path(directory), args.events))


if __name__ == "__main__":
    main()
