"""The Python SDK of the VWM control plane (sync, over httpx). See docs/sdk.md.

>>> client = Client.from_env()
>>> with client.worker("reviewer").session() as session:
...     print(session.prompt("Summarise the open TODOs").final_text)
"""

from vwm.sdk.admin import AdminAPI
from vwm.sdk.client import DEFAULT_URL, Client
from vwm.sdk.entities import VWSessionEntity, VWTurnEntity
from vwm.sdk.entity_store import EntityStore, SqlEntityStore
from vwm.sdk.jobs import Job
from vwm.sdk.models import (
    JOB_FINISHED,
    SESSION_FINISHED,
    Event,
    JobResult,
    Learning,
    Skill,
    SkillVersions,
    Subscription,
    UploadedSkill,
    WorkerSkill,
)
from vwm.sdk.sessions import VirtualWorker, VWSession
from vwm.sdk.sse import StreamSettings
from vwm.sdk.subscriptions import SubscriptionsAPI
from vwm.sdk.telemetry import TelemetryAPI

__all__ = [
    "DEFAULT_URL",
    "JOB_FINISHED",
    "SESSION_FINISHED",
    "AdminAPI",
    "Client",
    "EntityStore",
    "Event",
    "Job",
    "JobResult",
    "Learning",
    "Skill",
    "SkillVersions",
    "SqlEntityStore",
    "StreamSettings",
    "Subscription",
    "SubscriptionsAPI",
    "TelemetryAPI",
    "UploadedSkill",
    "VWSession",
    "VWSessionEntity",
    "VWTurnEntity",
    "VirtualWorker",
    "WorkerSkill",
]
