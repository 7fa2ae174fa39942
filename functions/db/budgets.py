"""Budget charges at rest: one row per charged model call, and the sums the budgets compare with
their limits. Written and read by `functions.budgets` inside the caller's transaction (this
module never commits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from functions.db.models import BudgetCharge


@dataclass(frozen=True)
class Spent:
    """What a worker and one of its sessions have used: billed tokens and USD."""

    worker_tokens_today: int = 0
    worker_tokens_total: int = 0
    worker_usd_today: float = 0.0
    worker_usd_total: float = 0.0
    session_tokens: int = 0
    session_usd: float = 0.0


class BudgetCharges:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        *,
        job_id: str,
        seq: int,
        session_id: str,
        worker_id: str,
        tokens: int,
        usd: float,
        charged_at: datetime,
    ) -> bool:
        """Store a charge unless (job_id, seq) is stored already (a retry): True when new."""
        values = dict(
            job_id=job_id,
            seq=seq,
            session_id=session_id,
            worker_id=worker_id,
            tokens=tokens,
            usd=usd,
            charged_at=charged_at,
        )
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(BudgetCharge).values(**values).on_conflict_do_nothing()
        result = self.session.execute(statement.returning(BudgetCharge.seq))
        return result.first() is not None

    def spent(self, worker_id: str, session_id: str | None, day_start: datetime) -> Spent:
        """The worker's sums since `day_start` and in total, and the session's, in one pass
        over the worker's charges."""
        today = BudgetCharge.charged_at >= day_start
        mine = BudgetCharge.session_id == session_id

        def total(column: InstrumentedAttribute[Any]) -> ColumnElement[float]:
            return func.coalesce(func.sum(column), 0)

        def where(condition: ColumnElement[bool], column: object) -> ColumnElement[float]:
            return func.coalesce(func.sum(case((condition, column), else_=0)), 0)

        row = self.session.execute(
            select(
                where(today, BudgetCharge.tokens),
                total(BudgetCharge.tokens),
                where(today, BudgetCharge.usd),
                total(BudgetCharge.usd),
                where(mine, BudgetCharge.tokens),
                where(mine, BudgetCharge.usd),
            ).where(BudgetCharge.worker_id == worker_id)
        ).one()
        return Spent(
            worker_tokens_today=int(row[0]),
            worker_tokens_total=int(row[1]),
            worker_usd_today=float(row[2]),
            worker_usd_total=float(row[3]),
            session_tokens=int(row[4]),
            session_usd=float(row[5]),
        )
