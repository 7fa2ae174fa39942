"""Sessions and jobs by status, read from the database at each scrape of ``GET /metrics`` (one
grouped COUNT each), so they are right whichever process changed a row; served with the rest of
the process's registry (`functions.metrics`, `eventing.http_metrics`). docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from eventing.http_metrics import exposition
from functions.db.models import Job, JobStatus, SessionStatus, WorkerSession
from functions.services import current


def count_by_status(session: Session) -> dict[str, dict[str, int]]:
    """Sessions and jobs by status: every status there is, 0 where no row has it."""
    counts: dict[str, dict[str, int]] = {
        "sessions": dict.fromkeys(SessionStatus, 0),
        "jobs": dict.fromkeys(JobStatus, 0),
    }
    for name, column in (("sessions", WorkerSession.status), ("jobs", Job.status)):
        for status, count in session.execute(select(column, func.count()).group_by(column)):
            counts[name][str(status)] = count
    return counts


class Scrape(Collector):
    """One scrape: the process's registry, then the database's counts read for it."""

    def __init__(self, counts: dict[str, dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        for name, what in (("sessions", "Sessions"), ("jobs", "Jobs")):
            family = GaugeMetricFamily(
                f"vwm_{name}", f"{what} in the database, by status.", labels=["status"]
            )
            for status, count in self._counts[name].items():
                family.add_metric([str(status)], count)
            yield family


async def metrics(_: Request) -> Response:
    """``GET /metrics``: behind the API key like every other path but ``/healthz``."""
    return exposition(Scrape(await current().db(count_by_status)))
