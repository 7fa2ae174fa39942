"""Which repository URLs a session may name: the repo URL policy.

A client names a session repo (`POST /v1/sessions`, ``session_repo.url``) that the harness
clones and pushes to; an admin names a worker's knowledge repo. Without a policy a client could
have any repository on the control plane's machine cloned (another session's workspace, the
project itself) through a local path or ``file://``, or run a command through git's ``ext::``
transport. Two system settings decide, both managed through ``PUT /v1/admin/settings/{key}``:

- ``allow_local_repos`` (bool): local paths and ``file://`` URLs are refused unless it is true.
  Unset, `ControlPlaneSettings.allow_local_repos` decides (``VWM_ALLOW_LOCAL_REPOS``: off in
  production, on in `vwm up`). It applies to worker repos too, and the harness enforces it again
  (``VWM_GIT_ALLOW_LOCAL``), so its git refuses the file transport the same way.
- ``repo_url_patterns`` (list of globs such as ``"https://github.com/acme/*"``): when non-empty,
  a client's remote URL must match one. Admins' worker repos are not held to it.

Only https, ssh (``ssh://`` or ``user@host:path``) and git transports are ever allowed for
remote repositories; remote helpers (``ext::``, ``fd::``), other schemes, credentials in the URL,
whitespace, control characters and a leading ``-`` never are. Used by `functions.sessions` (at
session create) and `functions.admin` (worker repos, setting values).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from sqlalchemy.orm import Session

from functions.errors import FunctionsError

ALLOW_LOCAL_REPOS = "allow_local_repos"
REPO_URL_PATTERNS = "repo_url_patterns"
MAX_PATTERNS = 200
MAX_PATTERN_CHARS = 500

# Schemes git may use for a remote repository, and the name they are matched under.
_REMOTE_SCHEMES = {"https": "https", "ssh": "ssh", "git+ssh": "ssh", "ssh+git": "ssh", "git": "git"}
_SCHEME_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_REMOTE_HELPER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
_DOS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")
_SCP_USER = re.compile(r"[A-Za-z0-9._-]+")
_PATTERN_START = re.compile(r"(https|ssh|git)://\S")

Invalid = Callable[[str], "RepoPolicyError"]

_HOW_TO_ALLOW_LOCAL = (
    'an admin can allow them with PUT /v1/admin/settings/allow_local_repos {"value": true}'
)


class RepoPolicyError(FunctionsError):
    """A URL or setting value the policy refuses. `code` is stable; the HTTP edge answers 422:
    the request names a repository (or a value) this deployment refuses."""

    code = "repo_url_invalid"
    status = 422

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code is not None:
            self.code = code


class InvalidSetting(RepoPolicyError):
    code = "invalid_setting"


@dataclass(frozen=True)
class RepoUrl:
    """A URL the policy can judge. `match_form` is what patterns are matched against:
    ``scheme://host[:port]/path``, user names dropped, scheme and host in lower case, and
    ``user@host:path`` written ``ssh://host/path``. Local URLs have none."""

    kind: Literal["local", "remote"]
    match_form: str = ""


@dataclass(frozen=True)
class RepoPolicy:
    allow_local: bool
    patterns: tuple[str, ...] = ()

    @classmethod
    def read(cls, db: Session, default_allow_local: bool) -> RepoPolicy:
        """The policy now: the admin settings, else the control plane's default."""
        from functions.db.repositories import Settings

        patterns = Settings(db).value(REPO_URL_PATTERNS, [])
        check_setting(REPO_URL_PATTERNS, patterns)  # written checked; refuse if edited since
        return cls(allow_local_repos(db, default_allow_local), tuple(patterns))

    def check_session_repo(self, url: str) -> None:
        """A client's session repo: the local rule and the patterns."""
        parsed = self._checked_local(url, "the session repo")
        if parsed.kind == "local" or not self.patterns:
            return
        if not any(_glob(pattern).fullmatch(parsed.match_form) for pattern in self.patterns):
            raise RepoPolicyError(
                f"the session repo {parsed.match_form} matches none of the repo_url_patterns "
                "setting; use a repository it allows, or ask an admin to add a pattern "
                "(PUT /v1/admin/settings/repo_url_patterns)",
                code="repo_url_not_allowed",
                setting=REPO_URL_PATTERNS,
            )

    def check_worker_repo(self, url: str, worker: str | None = None) -> None:
        """An admin's worker repo: the local rule only (patterns bound clients)."""
        self._checked_local(url, f"worker {worker!r}'s repo" if worker else "the worker repo")

    def _checked_local(self, url: str, what: str) -> RepoUrl:
        parsed = parse(url, what)
        if parsed.kind == "local" and not self.allow_local:
            raise RepoPolicyError(
                f"{what} is a local path or file:// URL, which this control plane refuses; "
                f"use an https, ssh or git URL, or {_HOW_TO_ALLOW_LOCAL}",
                code="repo_url_not_allowed",
                setting=ALLOW_LOCAL_REPOS,
            )
        return parsed


def allow_local_repos(db: Session, default: bool) -> bool:
    """The local rule alone: the admin setting, else `default`; anything but true refuses."""
    from functions.db.repositories import Settings

    value = Settings(db).value(ALLOW_LOCAL_REPOS)
    return default if value is None else value is True


def parse(url: str, what: str = "the repo URL") -> RepoUrl:
    """Classify `url` the way git would read it, erring towards "local"; refuse what no
    setting can allow (`repo_url_invalid`)."""

    def invalid(problem: str) -> RepoPolicyError:
        return RepoPolicyError(f"{what} {problem}", code="repo_url_invalid")

    if not url:
        raise invalid("is empty")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        raise invalid("contains whitespace or control characters; remove them")
    if url.startswith("-"):
        raise invalid("starts with '-', which git would read as an option")
    if _DOS_DRIVE.match(url) or url.lower().startswith("file:"):
        return RepoUrl("local")
    if _REMOTE_HELPER.match(url):
        raise invalid("uses a git remote helper ('<name>::'), which is never allowed; use https")
    if scheme := _SCHEME_URL.match(url):
        name = scheme.group(1).lower()
        if name not in _REMOTE_SCHEMES:
            raise invalid(f"uses the {name}:// transport; use https://, ssh:// or git://")
        if scheme.group(1) != name:  # git looks its transports up by the exact name
            raise invalid(f"must write its scheme in lower case ({name}://)")
        return _scheme_url(url, _REMOTE_SCHEMES[name], invalid)
    colon, slash = url.find(":"), url.find("/")
    if colon == -1 or -1 < slash < colon:
        return RepoUrl("local")  # a path: /abs, ./rel, ../x, ~/x, ./host:path
    return _scp_url(url[:colon], url[colon + 1 :], invalid)


def _scheme_url(url: str, scheme: str, invalid: Invalid) -> RepoUrl:
    if "\\" in url:
        raise invalid("contains a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid(f"is not a valid URL ({exc})") from None
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise invalid("has a query or fragment; a repository URL has neither")
    if parts.password is not None or (parts.username is not None and scheme != "ssh"):
        raise invalid(
            "holds credentials, which would be stored with the session and shown by the API; "
            "remove them (only an ssh URL may name a user)"
        )
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    if not _HOST.fullmatch(host):
        raise invalid(f"names no valid host ({host!r})")
    _check_path(unquote(parts.path), invalid)
    return RepoUrl("remote", f"{scheme}://{host}{f':{port}' if port else ''}{parts.path}")


def _scp_url(user_host: str, path: str, invalid: Invalid) -> RepoUrl:
    """git's ``[user@]host:path`` (ssh)."""
    user, _, host = user_host.rpartition("@")
    host = host.lower()
    if (user and not _SCP_USER.fullmatch(user)) or not _HOST.fullmatch(host):
        raise invalid(f"is not a valid user@host:path ssh address (host {host!r})")
    if "\\" in path or path.startswith("-"):
        raise invalid("has a path starting with '-' or holding a backslash")
    _check_path(path, invalid)
    return RepoUrl("remote", f"ssh://{host}/{path.lstrip('/')}")


def _check_path(path: str, invalid: Invalid) -> None:
    segments = path.strip("/").split("/")
    if not path.strip("/"):
        raise invalid("names no repository path")
    if any(segment in (".", "..") for segment in segments):
        raise invalid("has '.' or '..' in its path; write the path without them")


def _glob(pattern: str) -> re.Pattern[str]:
    """``**`` matches anything, ``*`` anything within one path segment, ``?`` one character
    other than '/'; the rest is literal."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


def check_setting(key: str, value: Any) -> None:
    """Refuse a value of the wrong shape for a setting this module reads (`invalid_setting`);
    other keys are not its business."""
    if key == ALLOW_LOCAL_REPOS and not isinstance(value, bool):
        raise InvalidSetting(
            f"{ALLOW_LOCAL_REPOS} takes true or false", key=key, expected="boolean"
        )
    if key != REPO_URL_PATTERNS:
        return
    expected = (
        f"a list of at most {MAX_PATTERNS} glob patterns starting with https://, ssh:// or "
        f'git:// (e.g. "https://github.com/acme/*"), each at most {MAX_PATTERN_CHARS} '
        "characters without whitespace; [] allows any remote URL"
    )
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise InvalidSetting(f"{REPO_URL_PATTERNS} takes {expected}", key=key)
    for pattern in value:
        if (
            not isinstance(pattern, str)
            or len(pattern) > MAX_PATTERN_CHARS
            or not _PATTERN_START.match(pattern)
            or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in pattern)
        ):
            raise InvalidSetting(
                f"{REPO_URL_PATTERNS}: {pattern!r} is not valid; it takes {expected}", key=key
            )
