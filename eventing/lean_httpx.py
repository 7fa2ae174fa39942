"""httpx without its command-line client.

``import httpx`` also imports ``httpx._main``, its ``httpx`` command, whenever that command's
packages are installed: rich, pygments and click. The ``vwm`` command installs rich, so on the
embedded default every harness, pool member and `vwm up` paid for them: about 40 ms of each
start and 5 MiB of each process (200 harnesses: 1 GiB), for a command none of them runs
(docs/performance.md). `skip_httpx_cli` makes that one import fail, which httpx expects (it
then defines a ``main`` that says the command is not installed); nothing else changes.

Called first thing by the packages that import httpx (`harness`, `functions`); without effect
once httpx is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

HTTPX_CLI = "httpx._main"


class _WithoutHttpxCli(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == HTTPX_CLI:
            raise ImportError(f"{HTTPX_CLI} is left out (eventing.lean_httpx)", name=fullname)
        return None


def skip_httpx_cli() -> None:
    if not any(isinstance(finder, _WithoutHttpxCli) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WithoutHttpxCli())
