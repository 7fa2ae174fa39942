"""The local backend passes the runtime backend contract (tests/runtime/contract.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from functions.runtime import RuntimeHandle
from functions.runtime.local import LocalBackend
from tests.runtime.contract import RuntimeBackendContract


class TestLocalBackendContract(RuntimeBackendContract):
    @pytest.fixture
    def backend(self, local_backend: LocalBackend) -> LocalBackend:
        return local_backend

    @pytest.fixture
    def restarted(self, data_dir: Path):
        return lambda: LocalBackend(data_dir, stop_grace_s=10.0, startup_grace_s=3.0)

    @pytest.fixture
    def crash(self):
        async def kill_group(handle: RuntimeHandle) -> None:
            os.killpg(handle.state["pid"], signal.SIGKILL)

        return kill_group


class TestLocalBackendWithWarmPoolContract(TestLocalBackendContract):
    """The same contract when each harness is a warm pool member (functions.runtime.warm_pool):
    found, relaunched, swept and torn down as a harness started cold."""

    @pytest.fixture
    def backend(self, data_dir: Path):
        backend = LocalBackend(data_dir, stop_grace_s=10.0, startup_grace_s=3.0, warm_harnesses=2)
        assert backend.pool is not None
        backend.pool.fill()  # full before the first provision (start_pool fills in the background)
        yield backend
        backend.close()
