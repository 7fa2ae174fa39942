"""An orchestrator process for the durable-entity tests (`test_entities.py`): runs the turns named
on its command line (``turn_id=prompt``) on one session entity, appending what its loop sees to
an output file, one line per event. With ``KILL_AT=<step>`` it kills itself (SIGKILL: nothing
runs after it) when it reaches that step, as a crash would at that point. ``DELIVERY`` names the
turns' event delivery (at_least_once by default)."""

from __future__ import annotations

import os
import signal
import sys

from vwm import Client
from vwm.sdk.entities import VWSessionEntity
from vwm.sdk.entity_store import SessionRecord, SqlEntityStore, TurnRecord


def step(name: str) -> None:
    if os.environ.get("KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class SteppedStore(SqlEntityStore):
    """Steps inside the entities' own work too: a kill at "t1:saving-sent" lands after the
    control plane took the prompt and before the store knows its job."""

    def save_session(self, record: SessionRecord) -> None:
        step(f"session:saving-{record.status}")
        super().save_session(record)

    def save_turn(self, record: TurnRecord) -> None:
        step(f"{record.turn_id}:saving-{record.status}")
        super().save_turn(record)


def main() -> None:
    store_url, entity_name, out_path, *turns = sys.argv[1:]
    client = Client(os.environ["VWM_URL"], os.environ["VWM_API_KEY"])
    entity = VWSessionEntity(client, SteppedStore(store_url), entity_name, worker="w")
    step("open")
    entity.open()
    with open(out_path, "a") as out:

        def seen(line: str) -> None:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

        for spec in turns:
            turn_id, prompt = spec.split("=", 1)
            turn = entity.turn(turn_id, prompt)
            step(f"{turn_id}:recorded")
            turn.send()
            step(f"{turn_id}:sent")
            for event in turn.events(delivery=os.environ.get("DELIVERY", "at_least_once")):  # type: ignore[arg-type]
                step(f"{turn_id}:before-event-{event.seq}")
                seen(f"event {turn_id} {event.seq} {event.kind}")
                step(f"{turn_id}:after-event-{event.seq}")
            step(f"{turn_id}:streamed")
            seen(f"result {turn_id} {turn.result().status}")


if __name__ == "__main__":
    main()
