"""What a CLI's executable answered to ``--version``, remembered by the file it is, so that a
harness does not start the CLI only to ask again (a Node start: 90-230 ms for ``claude`` here,
paid by every session start and every relaunch of an idle session).

An answer is kept under the executable's resolved path (symlinks followed, as an npm ``.bin``
entry is one) with that file's identity: device, inode, size and modification time. An install
or an upgrade replaces the file, so the identity no longer matches and the CLI is asked again. A
wrapper script whose target changes while the wrapper does not would keep its old answer: the
images and npm installs VWM runs do not use one, and the memo is a file that can be deleted.

The memo is one small JSON file (``VWM_CLI_VERSION_MEMO``): by default in the workspace's state
folder, so a harness restarted on its volume (a Knative pod scaled from zero, an idle session
relaunched) finds it; the local backend points every harness at one file in its data folder,
which its sandboxed CLIs never see. Only answers that name a version are kept. Reading is
tolerant (a missing or damaged file is an empty memo) and writing is atomic (a temporary file
renamed over it): harnesses writing at once lose at worst each other's entry, asked again later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

# Far more executables than one machine runs VWM's CLIs from; the oldest go first.
MAX_ENTRIES = 64


class VersionMemo:
    """The memo file at `path` (None: nothing is remembered)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def recall(self, binary: str, env: Mapping[str, str]) -> str | None:
        """The version `binary` (as found on ``env``'s PATH) answered before, if it is still the
        same file; None when it was never asked or has changed."""
        found = _identify(binary, env)
        if found is None or self.path is None:
            return None
        key, identity = found
        entry = self._read().get(key)
        if isinstance(entry, dict) and entry.get("identity") == identity:
            version = entry.get("version")
            return version if isinstance(version, str) else None
        return None

    def remember(self, binary: str, env: Mapping[str, str], version: str) -> None:
        """Keep `version` as what `binary` answers. Never raises: a memo that cannot be written
        only means the CLI is asked again next time."""
        found = _identify(binary, env)
        if found is None or self.path is None:
            return
        key, identity = found
        entries = {k: v for k, v in self._read().items() if k != key}
        entries[key] = {"identity": identity, "version": version}
        kept = dict(list(entries.items())[-MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, staging = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(kept, out)
                os.replace(staging, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(staging)
                raise
        except OSError as exc:
            logger.warning(
                "cli version memo not written", extra={"path": str(self.path), "error": repr(exc)}
            )

    def _read(self) -> dict[str, object]:
        assert self.path is not None
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}


def _identify(binary: str, env: Mapping[str, str]) -> tuple[str, list[int]] | None:
    """The executable `binary` names, resolved, and that file's identity; None when there is
    none (the CLI is then asked, and fails as it would)."""
    found = shutil.which(binary, path=env.get("PATH", os.defpath))
    if found is None:
        return None
    resolved = os.path.realpath(found)
    try:
        stat = os.stat(resolved)
    except OSError:
        return None
    return resolved, [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]
