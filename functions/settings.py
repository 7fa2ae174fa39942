"""Control-plane settings, read from the environment once and passed down.

The embedded default needs nothing set: data in `.data/` (an SQLite file, session workspaces),
the local runtime backend. Production sets `VWM_DATABASE_URL` (PostgreSQL through pg8000) and,
in a later issue, the Knative backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ControlPlaneSettings:
    data_dir: Path
    database_url: str
    runtime_backend: str = "local"
    harness_ready_timeout_s: float = 60.0
    # Room for the largest prompt (512,000 characters) however it is encoded.
    max_request_bytes: int = 4 << 20
    heartbeat_s: float = 15.0
    raw_output_limit: int = 256 << 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControlPlaneSettings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("VWM_DATA_DIR", ".data")).resolve()
        database_url = env.get("VWM_DATABASE_URL") or f"sqlite:///{data_dir / 'vwm.sqlite3'}"
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            runtime_backend=env.get("VWM_RUNTIME_BACKEND", "local"),
            harness_ready_timeout_s=float(env.get("VWM_HARNESS_READY_TIMEOUT_S", "60")),
            heartbeat_s=float(env.get("VWM_HEARTBEAT_S", "15")),
        )
