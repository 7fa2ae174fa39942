"""Harness settings, read from the environment once at start-up and passed down.

Every variable is prefixed ``VWM_``. Times are seconds, sizes bytes. The provider API key is a
secret: it lives only in this object and in the CLI's environment, never in logs or on disk.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eventing.budgets import JobBudget
from eventing.bwrap import probe as probe_bwrap
from eventing.cli_versions import EXACT_VERSION_RULE, is_exact_version
from eventing.provider_urls import ProviderUrlError, provider_root
from harness.adapters import ADAPTERS
from harness.adapters.base import Prices, ProviderConfig
from harness.errors import HarnessError

if TYPE_CHECKING:  # imported when publishing is on: the job runner's imports stay HTTP-free
    from eventing.publisher import PublisherSettings

# The CLIs are installed per project (see harness/clis/package.json) into this folder.
_PROJECT_CLI_BIN = (
    Path(__file__).resolve().parent.parent / ".tools" / "clis" / "node_modules" / ".bin"
)


class SettingsError(HarnessError, ValueError):
    """The environment does not describe a harness that can start; the message says which
    variable. Raised at start, never answered over HTTP; still a ValueError for callers."""

    code = "invalid_setting"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # A listening socket the harness inherited, to serve on instead of binding host:port itself
    # (VWM_HARNESS_LISTEN_FD): the local backend binds the port before it starts the harness, so
    # no other launch can take it meanwhile.
    listen_fd: int | None = None
    session_token: str = field(default="", repr=False)
    token_generated: bool = False
    max_request_bytes: int = 1 << 20
    heartbeat_s: float = 15.0


def server_settings(env: Mapping[str, str]) -> ServerSettings:
    """Where the harness listens and the token it takes (generated when none is given), from
    the environment: a session's harness's, or a warm pool member's (`harness.pool_member`)."""
    token = env.get("VWM_SESSION_TOKEN", "")
    return ServerSettings(
        host=env.get("VWM_HARNESS_HOST", "127.0.0.1"),
        # Knative tells its container where to listen in PORT (reserved: nobody else sets it).
        port=_int(env, "VWM_HARNESS_PORT", _int(env, "PORT", 8080)),
        listen_fd=_listen_fd(env),
        session_token=token or secrets.token_urlsafe(24),
        token_generated=not token,
        max_request_bytes=_int(env, "VWM_MAX_REQUEST_BYTES", 1 << 20),
        heartbeat_s=_float(env, "VWM_HEARTBEAT_S", 15.0),
    )


@dataclass(frozen=True)
class CliSettings:
    kind: str = "claude"
    binary: str = "claude"
    model: str | None = None
    provider: ProviderConfig | None = field(default=None, repr=False)
    prices: Prices | None = None
    system_prompt: str | None = None
    # The exact version the runtime pins (VWM_CLI_VERSION; None: whatever `binary` is), and how
    # long installing it may take (VWM_CLI_INSTALL_TIMEOUT_S): `harness.cli_install`.
    version: str | None = None
    install_timeout_s: float = 480.0
    # Where the image CLI's answer to --version is remembered (VWM_CLI_VERSION_MEMO; None: in
    # the workspace's state folder): `harness.cli_version_memo`.
    version_memo: Path | None = None


@dataclass(frozen=True)
class LimitSettings:
    job_timeout_s: float = 1800.0
    kill_grace_s: float = 5.0
    max_line_bytes: int = 8 << 20
    stderr_tail_bytes: int = 16 << 10
    max_file_bytes: int = 32 << 20
    raw_output_bytes: int = 1 << 20
    subscriber_queue: int = 1024
    # How long a prompt request (`POST /v1/events`) waits for the session's running job to end
    # before its own job fails with `session_busy` (VWM_PROMPT_WAIT_S, set by the control plane).
    prompt_wait_s: float = 600.0
    # How long the meter waits to connect to the model provider before the job fails with
    # `provider_unreachable` (VWM_PROVIDER_CONNECT_TIMEOUT_S): fail fast, not retry for minutes.
    provider_connect_timeout_s: float = 3.0


@dataclass(frozen=True)
class GitSettings:
    # Local paths and file:// URLs may be cloned and pushed to (VWM_GIT_ALLOW_LOCAL=1); the
    # control plane sets it only where its repository policy allows local repositories.
    allow_local: bool = False
    # Where a session's work goes when its branch moved on and a rebase conflicts:
    # <fallback_prefix><session id>.
    fallback_prefix: str = "vwm/"


@dataclass(frozen=True)
class SandboxSettings:
    """How the CLI is confined (`harness.sandbox`; docs/runtime.md, "The sandbox").

    `mode` (``VWM_SANDBOX``): ``none`` runs the CLI as the harness's own user with the machine in
    reach (a pod in production is the boundary); ``bwrap`` runs it in bubblewrap, and the harness
    refuses to start if bwrap does not work here. `bwrap` (``VWM_SANDBOX_BWRAP``): the bwrap
    executable, a path or a name on ``PATH``. `hide` (``VWM_SANDBOX_HIDE``): absolute paths, joined
    by ``os.pathsep``, the CLI must not see at all (the control plane's data folder). `show`
    (``VWM_SANDBOX_SHOW``): absolute paths shown read-only although the profile hides their
    parent (a toolchain in the home that is not on ``PATH``, e.g. ``~/.rustup``).
    """

    mode: str = "none"
    bwrap: str = "bwrap"
    hide: tuple[Path, ...] = ()
    show: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SandboxSettings:
        mode = env.get("VWM_SANDBOX", "").strip() or "none"
        if mode not in ("none", "bwrap"):
            raise SettingsError(
                f"VWM_SANDBOX={mode!r} must be bwrap or none (the control plane's auto, required "
                "and off are decided there, before it starts a harness)"
            )
        bwrap = env.get("VWM_SANDBOX_BWRAP", "").strip() or "bwrap"
        settings = cls(
            mode=mode,
            bwrap=shutil.which(bwrap) or bwrap,
            hide=_paths(env, "VWM_SANDBOX_HIDE"),
            show=_paths(env, "VWM_SANDBOX_SHOW"),
        )
        if mode == "bwrap" and (problem := probe_bwrap(settings.bwrap)) is not None:
            # Checked once, here: the CLI must never run unconfined because bwrap broke.
            raise SettingsError(
                f"VWM_SANDBOX=bwrap, but {problem}; install bubblewrap (apt-get install "
                "bubblewrap) where user namespaces are allowed, or set VWM_SANDBOX=none"
            )
        return settings


@dataclass(frozen=True)
class EventSettings:
    """Publishing the session's job events as CloudEvents (`harness.publishing`; docs/harness.md,
    "Publishing job events").

    On when ``VWM_EVENT_SINK`` or ``K_SINK`` is set: `publisher` holds what
    `eventing.publisher.PublisherSettings.from_env` read (the sink and the other ``VWM_EVENT_*``
    delivery settings); None means off, and the harness publishes nothing. `batch_max`
    (``VWM_EVENT_BATCH_MAX``, 1..1000) and `batch_s` (``VWM_EVENT_BATCH_S``) bound a
    ``job.output`` batch by events and by seconds after its first event; `drain_s`
    (``VWM_EVENT_DRAIN_S``) bounds the wait for the outbox to empty at shutdown; `republish_days`
    (``VWM_EVENT_REPUBLISH_DAYS``) how far back a start looks for jobs not yet published.
    """

    publisher: PublisherSettings | None = None
    batch_max: int = 100
    batch_s: float = 0.1
    drain_s: float = 5.0
    republish_days: float = 7.0

    @property
    def enabled(self) -> bool:
        return self.publisher is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, session_id: str) -> EventSettings:
        if not (env.get("VWM_EVENT_SINK") or env.get("K_SINK")):
            return cls()
        from eventing.publisher import PublisherError, PublisherSettings

        try:
            publisher = PublisherSettings.from_env(env)
        except PublisherError as exc:  # its message names the variable to fix
            raise SettingsError(exc.message) from None
        if not session_id:
            raise SettingsError(
                "VWM_EVENT_SINK (or K_SINK) is set but VWM_SESSION_ID is not: job events name "
                "their session, so set VWM_SESSION_ID to the control plane's id of this session"
            )
        if not _EVENT_ID.fullmatch(session_id):
            raise SettingsError(
                f"VWM_SESSION_ID={session_id!r} cannot name a session in events (the sessionid "
                "extension): with an event sink set it must be 1-64 letters, digits, '_', '.' "
                "or '-'"
            )
        batch_max = _int(env, "VWM_EVENT_BATCH_MAX", 100)
        if batch_max > 1000:
            raise SettingsError(
                f"VWM_EVENT_BATCH_MAX={batch_max} must be at most 1000 (a job.output batch holds "
                "1 to 1000 events)"
            )
        return cls(
            publisher=publisher,
            batch_max=batch_max,
            batch_s=_float(env, "VWM_EVENT_BATCH_S", 0.1),
            drain_s=_float(env, "VWM_EVENT_DRAIN_S", 5.0),
            republish_days=_float(env, "VWM_EVENT_REPUBLISH_DAYS", 7.0),
        )


@dataclass(frozen=True)
class HarnessSettings:
    workspace: Path
    server: ServerSettings
    cli: CliSettings
    limits: LimitSettings
    git: GitSettings = field(default_factory=GitSettings)
    # The control plane's id of this session (VWM_SESSION_ID): names the fallback branch and the
    # transcript files. Defaults to the workspace's parent folder name, which the local backend
    # makes the session id.
    session_id: str = "session"
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    events: EventSettings = field(default_factory=EventSettings)
    # Where the meter charges the calls of a prompt request's job (VWM_CHARGE_URL, and its token
    # VWM_CHARGE_TOKEN), which comes without one of its own; None: such jobs are not charged.
    charges: JobBudget | None = field(default=None, repr=False)
    # The worker whose session this is (VWM_WORKER): names the agent in traces.
    worker: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HarnessSettings:
        env = os.environ if env is None else env
        kind = env.get("VWM_CLI", "claude")
        if kind not in ADAPTERS:
            raise SettingsError(f"VWM_CLI={kind!r} is not one of {', '.join(sorted(ADAPTERS))}")
        server = server_settings(env)
        base_url = _provider_url(env)
        provider = (
            ProviderConfig(base_url=base_url, api_key=env.get("VWM_PROVIDER_API_KEY", ""))
            if base_url
            else None
        )
        cli = CliSettings(
            kind=kind,
            binary=env.get("VWM_CLI_BIN") or _find_binary(kind),
            model=env.get("VWM_MODEL") or None,
            provider=provider,
            prices=_prices(env.get("VWM_PRICES")),
            system_prompt=env.get("VWM_SYSTEM_PROMPT") or None,
            version=_cli_version(env),
            install_timeout_s=_float(env, "VWM_CLI_INSTALL_TIMEOUT_S", 480.0),
            version_memo=Path(env["VWM_CLI_VERSION_MEMO"]).resolve()
            if env.get("VWM_CLI_VERSION_MEMO")
            else None,
        )
        limits = LimitSettings(
            job_timeout_s=_float(env, "VWM_JOB_TIMEOUT_S", 1800.0),
            kill_grace_s=_float(env, "VWM_KILL_GRACE_S", 5.0),
            max_line_bytes=_int(env, "VWM_MAX_LINE_BYTES", 8 << 20),
            stderr_tail_bytes=_int(env, "VWM_STDERR_TAIL_BYTES", 16 << 10),
            max_file_bytes=_int(env, "VWM_MAX_FILE_BYTES", 32 << 20),
            raw_output_bytes=_int(env, "VWM_RAW_OUTPUT_BYTES", 1 << 20),
            prompt_wait_s=_float(env, "VWM_PROMPT_WAIT_S", 600.0),
            provider_connect_timeout_s=_float(env, "VWM_PROVIDER_CONNECT_TIMEOUT_S", 3.0),
        )
        workspace = Path(env.get("VWM_WORKSPACE", "workspace")).resolve()
        git = GitSettings(allow_local=_flag(env, "VWM_GIT_ALLOW_LOCAL"))
        session_id = env.get("VWM_SESSION_ID", "")
        if session_id and not _SESSION_ID.fullmatch(session_id):
            raise SettingsError(
                f"VWM_SESSION_ID={session_id!r} must be 1-128 letters, digits, '_', '.' or '-'"
            )
        events = EventSettings.from_env(env, session_id=session_id)
        if not session_id:
            parent = workspace.parent.name
            session_id = parent if _SESSION_ID.fullmatch(parent) else "session"
        return cls(
            workspace=workspace,
            server=server,
            cli=cli,
            limits=limits,
            git=git,
            session_id=session_id,
            sandbox=SandboxSettings.from_env(env),
            events=events,
            charges=_charges(env),
            worker=env.get("VWM_WORKER") or None,
        )


_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# The events' id alphabet (`eventing.events.payloads.ID_PATTERN`), which `sessionid` must fit.
_EVENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _charges(env: Mapping[str, str]) -> JobBudget | None:
    url, token = env.get("VWM_CHARGE_URL", ""), env.get("VWM_CHARGE_TOKEN", "")
    if not url and not token:
        return None
    if not (url.startswith(("http://", "https://")) and token):
        raise SettingsError(
            "VWM_CHARGE_URL (an absolute http(s) URL) and VWM_CHARGE_TOKEN go together"
        )
    return JobBudget(charge_url=url, charge_token=token)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name}={raw!r} must be 1 or 0")


def _paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    raw = [part for part in env.get(name, "").split(os.pathsep) if part]
    if relative := [part for part in raw if not os.path.isabs(part)]:
        raise SettingsError(f"{name} must hold absolute paths; {relative[0]!r} is not one")
    return tuple(Path(part) for part in raw)


def _listen_fd(env: Mapping[str, str]) -> int | None:
    raw = env.get("VWM_HARNESS_LISTEN_FD", "").strip()
    if raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise SettingsError(
            f"VWM_HARNESS_LISTEN_FD={raw!r} must be the number (0 or more) of the listening "
            "socket the harness inherits, or unset for the harness to bind VWM_HARNESS_PORT"
        )
    return int(raw)


def _cli_version(env: Mapping[str, str]) -> str | None:
    raw = env.get("VWM_CLI_VERSION", "")
    if raw == "":
        return None
    if not is_exact_version(raw):
        raise SettingsError(f"VWM_CLI_VERSION={raw!r} must be {EXACT_VERSION_RULE}")
    return raw


def _provider_url(env: Mapping[str, str]) -> str | None:
    """``VWM_PROVIDER_BASE_URL`` as the provider's root, whoever set it: a trailing ``/v1``
    would otherwise be doubled by the adapters (``/v1/v1/messages``)."""
    raw = env.get("VWM_PROVIDER_BASE_URL", "")
    if not raw:
        return None
    try:
        return provider_root(raw)
    except ProviderUrlError as exc:
        raise SettingsError(f"VWM_PROVIDER_BASE_URL {exc}") from None


def _find_binary(kind: str) -> str:
    project_copy = _PROJECT_CLI_BIN / kind
    if project_copy.exists():
        return str(project_copy)
    return shutil.which(kind) or kind


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be a whole number") from None
    if value <= 0 and name != "VWM_HARNESS_PORT":
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be a number of seconds") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _prices(raw: str | None) -> Prices | None:
    """``VWM_PRICES`` is JSON: USD per million tokens, e.g. {"input": 3, "output": 15, ...}."""
    if not raw:
        return None
    try:
        return Prices(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"VWM_PRICES is not a valid price table: {exc}") from None
