"""Where the durable entities (`vwm.sdk.entities`) keep their state between processes.

A store keeps two kinds of record: a session entity's (its name, worker, the session it made)
and a turn's (its id, prompt, the job it sent, the last event its caller has seen, how it
ended). `SqlEntityStore` keeps them in a SQL database through SQLAlchemy: a SQLite file by
default (`SqlEntityStore.sqlite(path)`), PostgreSQL or any other database SQLAlchemy reaches
by URL (``postgresql+pg8000://…``), with the same two tables. A caller with a store of its own
(a key-value service, its workflow engine's state) implements `EntityStore` instead.

Every save is its own transaction, committed before the call returns: a process killed right
after it finds the record as saved when it starts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Engine, Table

NEW, SENT, FINISHED = "new", "sent", "finished"
TURN_STATUSES = (NEW, SENT, FINISHED)


@dataclass(frozen=True)
class SessionRecord:
    name: str
    worker: str
    session_id: str | None = None  # None until the session is made
    status: str = NEW  # then the session's own status, as last seen


@dataclass(frozen=True)
class TurnRecord:
    turn_id: str
    session_name: str
    prompt: str
    job_id: str | None = None  # None until the prompt is sent
    last_event_id: int = 0  # the last event the caller has seen (0: none)
    status: str = NEW  # new → sent → finished
    # Once finished: how, as its `job_finished` told it (`id`, `status`, `summary`, `error`, …),
    # which `JobResult.from_job` reads.
    result: dict[str, Any] | None = None


class EntityStore(Protocol):
    """What the entities need of a store. Each save must be durable when it returns."""

    def load_session(self, name: str) -> SessionRecord | None: ...

    def save_session(self, record: SessionRecord) -> None: ...

    def load_turn(self, turn_id: str) -> TurnRecord | None: ...

    def save_turn(self, record: TurnRecord) -> None: ...

    def turns(self, session_name: str) -> list[TurnRecord]:
        """The session entity's turns, oldest first."""
        ...


class SqlEntityStore:
    """An `EntityStore` in a SQL database: its two tables are made on first use if missing."""

    def __init__(self, url: str | Engine) -> None:
        from sqlalchemy import create_engine

        self._engine = create_engine(url) if isinstance(url, str) else url
        self._sessions, self._turns = _tables()
        self._sessions.metadata.create_all(self._engine)

    @classmethod
    def sqlite(cls, path: str | Path) -> SqlEntityStore:
        """A store in the SQLite file `path` (made if missing)."""
        return cls(f"sqlite:///{Path(path).resolve()}")

    def load_session(self, name: str) -> SessionRecord | None:
        row = self._one(self._sessions, self._sessions.c.name == name)
        return None if row is None else SessionRecord(**row)

    def save_session(self, record: SessionRecord) -> None:
        self._upsert(self._sessions, self._sessions.c.name == record.name, vars(record))

    def load_turn(self, turn_id: str) -> TurnRecord | None:
        row = self._one(self._turns, self._turns.c.turn_id == turn_id)
        return None if row is None else TurnRecord(**row)

    def save_turn(self, record: TurnRecord) -> None:
        self._upsert(self._turns, self._turns.c.turn_id == record.turn_id, vars(record))

    def turns(self, session_name: str) -> list[TurnRecord]:
        from sqlalchemy import select

        query = (
            select(*(column for column in self._turns.c if column.name != "seq"))
            .where(self._turns.c.session_name == session_name)
            .order_by(self._turns.c.seq)
        )
        with self._engine.connect() as connection:
            return [TurnRecord(**row._asdict()) for row in connection.execute(query)]

    def close(self) -> None:
        self._engine.dispose()

    def _one(self, table: Table, where: Any) -> dict[str, Any] | None:
        from sqlalchemy import select

        columns = [column for column in table.c if column.name != "seq"]
        with self._engine.connect() as connection:
            row = connection.execute(select(*columns).where(where)).first()
        return None if row is None else row._asdict()

    def _upsert(self, table: Table, where: Any, values: dict[str, Any]) -> None:
        # An update, else an insert, in one transaction: one writer per entity (its
        # orchestrator) is the model, so no dialect's own upsert is needed.
        with self._engine.begin() as connection:
            if connection.execute(table.update().where(where).values(**values)).rowcount == 0:
                connection.execute(table.insert().values(**values))


def _tables() -> tuple[Table, Table]:
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, Text

    metadata = MetaData()
    sessions = Table(
        "vwm_session_entities",
        metadata,
        Column("name", String(200), primary_key=True),
        Column("worker", String(100), nullable=False),
        Column("session_id", String(64)),
        Column("status", String(16), nullable=False),
    )
    turns = Table(
        "vwm_turn_entities",
        metadata,
        # The order turns were first saved in: `turns` lists them in it.
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("turn_id", String(200), nullable=False, unique=True),
        Column("session_name", String(200), nullable=False, index=True),
        Column("prompt", Text, nullable=False),
        Column("job_id", String(64)),
        Column("last_event_id", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("result", JSON(none_as_null=True)),
    )
    return sessions, turns
