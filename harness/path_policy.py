"""What the files API may touch inside a workspace, decided on where a path really leads.

`harness.files` resolves every path from a caller (following symlinks) and then asks a
`PathPolicy` whether the resolved location may be read or changed. Deciding on the resolved
location is the point: ``session_repo/x -> ../.cli-home`` (planted by the agent, or committed
in a repository a client named) names the CLI's state as surely as ``.cli-home`` does.

The workspace policy (`WORKSPACE_POLICY`, used by every file route) has three areas:

- hidden: ``.cli-home/``, the CLI's own config and state, which may hold credentials. Never
  listed, read or changed.
- read-only: ``.vwm/`` (the harness's state: a forged resume id breaks every later prompt) and
  the ``.git/`` folders of both repositories (a written ``.git/config`` or hook is a command the
  harness's git would run). Readable, never changed.
- everything else inside the workspace: read and written freely. Confinement to the workspace
  itself is `harness.files`'s job and holds under every policy.

Internal writers that own what they write (the transcript into ``session_repo/.vwm/``) use
`CONFINED`, which only confines.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

from harness.errors import Forbidden


class Access(Enum):
    READ = "read"
    CHANGE = "change"


@dataclass(frozen=True)
class PathPolicy:
    """Areas of a workspace, as paths relative to its root."""

    hidden: tuple[PurePosixPath, ...] = ()
    read_only: tuple[PurePosixPath, ...] = ()

    def check(self, root: Path, resolved: Path, access: Access, user_path: str) -> None:
        """Raise Forbidden unless `access` to `resolved` (already confined to `root`) is allowed."""
        relative = PurePosixPath(resolved.relative_to(root).as_posix())
        if (area := _containing(self.hidden, relative)) is not None:
            raise _refused(user_path, area, "is managed by the harness and never served")
        if access is Access.CHANGE and (area := _containing(self.read_only, relative)):
            raise _refused(user_path, area, "is read-only through the files API")

    def check_subtree(self, root: Path, resolved: Path, user_path: str) -> None:
        """For a recursive delete: refuse if a protected area lies inside `resolved`."""
        self.check(root, resolved, Access.CHANGE, user_path)
        relative = PurePosixPath(resolved.relative_to(root).as_posix())
        for area in (*self.hidden, *self.read_only):
            if area.is_relative_to(relative):
                raise _refused(user_path, area, "is inside it and cannot be deleted")

    def is_hidden(self, relative: PurePosixPath) -> bool:
        """Whether a listing should leave this entry out."""
        return _containing(self.hidden, relative) is not None


CONFINED = PathPolicy()

WORKSPACE_POLICY = PathPolicy(
    hidden=(PurePosixPath(".cli-home"),),
    read_only=(
        PurePosixPath(".vwm"),
        PurePosixPath("session_repo/.git"),
        PurePosixPath("worker_repo/.git"),
    ),
)


def _containing(areas: tuple[PurePosixPath, ...], relative: PurePosixPath) -> PurePosixPath | None:
    return next((area for area in areas if relative.is_relative_to(area)), None)


def _refused(user_path: str, area: PurePosixPath, why: str) -> Forbidden:
    where = "" if str(area) == user_path.strip("/") else f" (it leads into {area}/)"
    return Forbidden(f"path {user_path!r}{where}: {area}/ {why}", path=user_path, area=str(area))
