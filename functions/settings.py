"""Control-plane settings, read from the environment once and passed down.

The embedded default needs nothing set: data in `.data/` (an SQLite file, session workspaces),
the local runtime backend. Production sets `VWM_DATABASE_URL` (PostgreSQL through pg8000),
`VWM_TOKEN_KEY_FILE` (the key harness tokens are derived from, shared by every function) and
the Knative runtime backend (`VWM_RUNTIME_BACKEND=knative` and the ``VWM_SESSION_*`` settings of
`KnativeSessionSettings`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from functions.errors import FunctionsError


class SettingError(FunctionsError, ValueError):
    """A ``VWM_*`` setting that cannot work; the message names it and says what to use. Raised
    at start-up: the process does not start (`vwm up` reports it with this code)."""

    code = "invalid_setting"


@dataclass(frozen=True)
class HarnessCallSettings:
    """Bounds on every call the control plane makes to a session's harness, in seconds. A call
    that gets no answer within its bound is `harness_unavailable` (503, retryable) and the harness
    is checked and replaced if it is hung, so no request of ours waits on a stopped process.

    `connect_s` bounds opening a connection, `call_s` each ordinary call (job start, get and
    cancel, files, health), `bootstrap_s` a bootstrap (it clones repositories) and `shutdown_s`
    the end of a session (transcript, commit, push). An event stream has no total bound (a job may
    run for hours) but may not stay silent longer than `stream_idle_s`: the harness sends an SSE
    heartbeat every ``VWM_HEARTBEAT_S``, which the control plane passes on to it, so the default
    is three heartbeats. `clock_skew_s` is added to a job's dispatch deadline (``not_after``,
    checked on the harness's clock, another machine in production). `startup_grace_s` is how long
    a just-launched harness may take to answer before a mute one counts as hung.
    """

    connect_s: float = 5.0
    call_s: float = 30.0
    bootstrap_s: float = 600.0
    shutdown_s: float = 600.0
    stream_idle_s: float = 45.0
    clock_skew_s: float = 60.0
    startup_grace_s: float = 30.0

    @property
    def dispatch_s(self) -> float:
        """How long a job may take to reach its harness (a bootstrap, then the job start);
        after that, plus the clock skew, no harness starts it and a row still queued is dead."""
        return 2 * self.connect_s + self.bootstrap_s + self.call_s + self.clock_skew_s

    @classmethod
    def from_env(cls, env: Mapping[str, str], heartbeat_s: float) -> HarnessCallSettings:
        def seconds(name: str, default: float) -> float:
            return _seconds(env, name, default)

        return cls(
            connect_s=seconds("VWM_HARNESS_CONNECT_TIMEOUT_S", 5.0),
            call_s=seconds("VWM_HARNESS_CALL_TIMEOUT_S", 30.0),
            bootstrap_s=seconds("VWM_HARNESS_BOOTSTRAP_TIMEOUT_S", 600.0),
            shutdown_s=seconds("VWM_HARNESS_SHUTDOWN_TIMEOUT_S", 600.0),
            stream_idle_s=seconds("VWM_HARNESS_STREAM_IDLE_S", 3 * heartbeat_s),
            clock_skew_s=_seconds(env, "VWM_HARNESS_CLOCK_SKEW_S", 60.0, zero=True),
            startup_grace_s=seconds("VWM_HARNESS_STARTUP_GRACE_S", 30.0),
        )


@dataclass(frozen=True)
class KnativeSessionSettings:
    """What the Knative runtime backend makes for each session (`functions.runtime.knative`;
    docs/operations.md). Always read and checked (a bad value fails at start, whichever the
    backend); used only when ``VWM_RUNTIME_BACKEND=knative``.

    `harness_image` (``VWM_HARNESS_IMAGE``, required): the harness image, unless the runtime
    names its own. `volume_size` (``VWM_SESSION_VOLUME_SIZE``) and `storage_class`
    (``VWM_SESSION_STORAGE_CLASS``; unset: the cluster's default) make each session's PVC;
    `volume_retention` (``VWM_SESSION_VOLUME_RETENTION``) says whether the PVC is deleted with
    the session (``delete``) or kept for an operator to inspect or archive (``keep``).
    `request_timeout_s` (``VWM_SESSION_REQUEST_TIMEOUT_S``) is the Service's ``timeoutSeconds``:
    the longest a prompt may run, at most the cluster's ``max-revision-timeout-seconds``.
    `idle_pod_s` (``VWM_SESSION_IDLE_POD_S``) keeps an idle session's pod this long before it
    scales to zero (``scale-to-zero-pod-retention-period``, 0..3600). `service_account`
    (``VWM_SESSION_SERVICE_ACCOUNT``) runs the session pods: one with no API permissions.
    `cpu` and `memory` (``VWM_SESSION_CPU``, ``VWM_SESSION_MEMORY``) are each pod's requests
    and limits unless the runtime's ``limits`` set ``cpu``/``memory``. `run_as_user`
    (``VWM_SESSION_RUN_AS_USER``) is the image's non-root user, which owns the volume's files.
    """

    harness_image: str = ""
    volume_size: str = "10Gi"
    storage_class: str | None = None
    volume_retention: str = "delete"
    request_timeout_s: int = 3600
    idle_pod_s: int = 300
    service_account: str = "vwm-session"
    cpu: str = "1"
    memory: str = "2Gi"
    run_as_user: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KnativeSessionSettings:
        def whole_seconds(name: str, default: int, low: int, high: int) -> int:
            return _whole(env, name, default, low=low, high=high, what="whole seconds")

        run_as_user = env.get("VWM_SESSION_RUN_AS_USER", "").strip() or "1000"
        if not run_as_user.isdigit() or int(run_as_user) == 0:
            raise SettingError(
                f"VWM_SESSION_RUN_AS_USER={run_as_user!r}: use the image's non-root uid (not 0)"
            )

        def quantity(name: str, default: str) -> str:
            value = env.get(name, "").strip() or default
            if not is_quantity(value):
                raise SettingError(
                    f"{name}={value!r}: use a positive Kubernetes quantity (e.g. {default})"
                )
            return value

        def object_name(name: str, default: str | None) -> str | None:
            value = env.get(name, "").strip() or default
            if value is not None and not is_object_name(value):
                raise SettingError(f"{name}={value!r}: use a Kubernetes object name")
            return value

        image = env.get("VWM_HARNESS_IMAGE", "").strip()
        if image and not is_image_reference(image):
            raise SettingError(
                f"VWM_HARNESS_IMAGE={image!r}: use an image reference "
                "(registry/repository:tag or @sha256:digest)"
            )
        return cls(
            harness_image=image,
            volume_size=quantity("VWM_SESSION_VOLUME_SIZE", "10Gi"),
            storage_class=object_name("VWM_SESSION_STORAGE_CLASS", None),
            volume_retention=_choice(env, "VWM_SESSION_VOLUME_RETENTION", ("delete", "keep")),
            request_timeout_s=whole_seconds("VWM_SESSION_REQUEST_TIMEOUT_S", 3600, 1, 86_400),
            idle_pod_s=whole_seconds("VWM_SESSION_IDLE_POD_S", 300, 0, 3600),
            service_account=object_name("VWM_SESSION_SERVICE_ACCOUNT", "vwm-session") or "",
            cpu=quantity("VWM_SESSION_CPU", "1"),
            memory=quantity("VWM_SESSION_MEMORY", "2Gi"),
            run_as_user=int(run_as_user),
        )


@dataclass(frozen=True)
class BlobSettings:
    """Where skill packages are kept (`functions.blobs`; docs/operations.md, "Blob storage").
    Always read and checked (a bad value fails at start, whichever the store).

    `store` (``VWM_BLOB_STORE``): ``local``, a folder (`local_dir`, ``VWM_BLOB_DIR``; default
    ``blobs/`` in the data folder), or ``s3``, a bucket of any S3 API: `bucket`
    (``VWM_S3_BUCKET``, required), `endpoint_url` (``VWM_S3_ENDPOINT_URL``; unset: AWS),
    `region` (``VWM_S3_REGION``), `prefix` (``VWM_S3_PREFIX``: every key is put under it, no
    leading or trailing ``/``), `addressing_style` (``VWM_S3_ADDRESSING_STYLE``: ``auto``,
    ``path`` for most self-hosted servers, ``virtual``). `access_key_id` and
    `secret_access_key` (``VWM_S3_ACCESS_KEY_ID``, ``VWM_S3_SECRET_ACCESS_KEY``) come together or
    not at all; without them the default AWS chain applies (an IAM role through IRSA or the
    instance profile). Neither is in the repr.

    The client's bounds are not read from the environment: `connect_timeout_s` and
    `read_timeout_s` (seconds, per attempt) and `max_attempts` (the first try included), small
    enough that a store that is down is reported in seconds, not minutes.
    """

    store: str = "local"
    local_dir: Path = Path(".data") / "blobs"
    bucket: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    prefix: str = ""
    addressing_style: str = "auto"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str], data_dir: Path) -> BlobSettings:
        store = _choice(env, "VWM_BLOB_STORE", ("local", "s3"))
        bucket = env.get("VWM_S3_BUCKET", "").strip()
        if bucket and not _BUCKET.fullmatch(bucket):
            raise SettingError(
                f"VWM_S3_BUCKET={bucket!r}: use the bucket's name (3-63 letters, digits, '.', "
                "'-' or '_'), not a URL or an ARN"
            )
        if store == "s3" and not bucket:
            raise SettingError("VWM_S3_BUCKET is required with VWM_BLOB_STORE=s3: name the bucket")
        region = env.get("VWM_S3_REGION", "").strip() or "us-east-1"
        if not _REGION.fullmatch(region):
            raise SettingError(f"VWM_S3_REGION={region!r}: use a region name, e.g. us-east-1")
        # Never echoed: a half-given pair may hold the secret in either variable.
        access_key_id = env.get("VWM_S3_ACCESS_KEY_ID", "").strip() or None
        secret_access_key = env.get("VWM_S3_SECRET_ACCESS_KEY", "").strip() or None
        if (access_key_id is None) != (secret_access_key is None):
            raise SettingError(
                "VWM_S3_ACCESS_KEY_ID and VWM_S3_SECRET_ACCESS_KEY: set both, or neither to use "
                "the default AWS credential chain (an IAM role)"
            )
        return cls(
            store=store,
            local_dir=_path(env.get("VWM_BLOB_DIR", "").strip()) or data_dir / "blobs",
            bucket=bucket,
            endpoint_url=_endpoint_url(env),
            region=region,
            prefix=_key_prefix(env),
            addressing_style=_choice(env, "VWM_S3_ADDRESSING_STYLE", ("auto", "path", "virtual")),
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )


# A bucket name: S3's rules, with the upper case and underscores older buckets and other S3 APIs
# allow; what matters is that a URL, an ARN or a path is refused.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")


def _endpoint_url(env: Mapping[str, str]) -> str | None:
    value = env.get("VWM_S3_ENDPOINT_URL", "").strip()
    if not value:
        return None
    url = urlsplit(value)
    # No user:password@ either: the URL appears in error messages and logs.
    if url.scheme not in ("http", "https") or not url.hostname or url.username is not None:
        raise SettingError(
            "VWM_S3_ENDPOINT_URL: use an http(s) URL of the S3 API without credentials in it, "
            "e.g. https://s3.example.com or http://minio:9000"
        )
    if url.query or url.fragment:
        raise SettingError(
            f"VWM_S3_ENDPOINT_URL={value!r}: use the API's base URL, no query or fragment"
        )
    return value.rstrip("/")


def _key_prefix(env: Mapping[str, str]) -> str:
    """``VWM_S3_PREFIX`` without its outer ``/``; its parts obey the blob keys' rules
    (`functions.blobs.keys`, which the S3 store applies to it again)."""
    value = env.get("VWM_S3_PREFIX", "").strip()
    prefix = value.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(part in ("", ".", "..") or "\\" in part or not part.isprintable() for part in parts):
        raise SettingError(
            f"VWM_S3_PREFIX={value!r}: use /-separated names, none empty, '.' or '..', "
            "without backslashes or control characters"
        )
    return prefix


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
    # Whether a session may name a local path or file:// repository while the admin setting
    # `allow_local_repos` is unset. Off in production; `vwm up` turns it on (its repos are often
    # folders on the same machine) and says so on start.
    allow_local_repos: bool = False
    # The harness token key (a Kubernetes Secret mounted as a file); None: a key file in
    # `data_dir`, made on first use.
    token_key_file: Path | None = None
    harness: HarnessCallSettings = field(default_factory=HarnessCallSettings)
    # How the local backend's harnesses confine their CLI (functions.runtime.sandbox):
    # "auto" bubblewrap where it works, else unconfined; "required" no sessions without it;
    # "off" unconfined. `sandbox_bwrap`: the bwrap executable, a path or a name on PATH.
    sandbox: str = "auto"
    sandbox_bwrap: str = "bwrap"
    # Paths the CLI sees read-only although the sandbox hides their parent (VWM_SANDBOX_SHOW,
    # joined by os.pathsep): a toolchain in the home that is not on PATH, e.g. ~/.rustup.
    sandbox_show: tuple[Path, ...] = ()
    # Where harnesses publish their job events (VWM_EVENT_SINK in their environment): the
    # broker's URL. `vwm up` sets it to its own `/v1/broker`; None: harnesses publish nothing
    # (or to K_SINK, when a Knative SinkBinding injects one).
    harness_event_sink: str | None = None
    # The control plane's base URL as its harnesses reach it (VWM_HARNESS_CONTROL_URL): where a
    # session under a budget has its meter charge each model call (`/v1/sessions/{id}/charges`,
    # docs/budgets.md). `vwm up` sets its own URL; None: a job under a budget fails
    # `budget_unenforceable`, since nothing could count what it spends.
    harness_control_url: str | None = None
    # Session cleanup by the reconciler when the worker sets none: end a ready session idle
    # (no job) this long, or older than this. None: never.
    session_idle_s: float | None = None
    session_max_age_s: float | None = None
    # A ready session's harness idle (no job) this long is stopped, its workspace kept, and the
    # next call that needs it relaunches it: the embedded default's scale to zero (Knative
    # Services do it themselves, `KnativeSessionSettings.idle_pod_s`). 0: never.
    harness_idle_s: float = 300.0
    # Harnesses kept started ahead of any session (VWM_WARM_HARNESSES): a session's harness
    # is one of them, configured at the claim. Local: processes `vwm up` starts (default 2);
    # Knative: Services with their PVCs per runtime shape (default 0), made by the reconciler
    # (`functions.runtime.knative_pool`). 0: every harness starts cold.
    warm_harnesses: int = 2
    # The reconciler leaves alone what changed more recently than this (a job just dispatched,
    # a session just created): the process doing it is most likely still at work.
    reconcile_grace_s: float = 10.0
    # How long the `events` function remembers an event's source + id to refuse a redelivery.
    # Past it, a redelivery is still harmless (every handler is idempotent by state too).
    processed_events_retention_s: float = 7 * 86_400
    # How long a `dev.vwm.prompt.requested` for a busy session waits for its turn on the
    # session's harness before its job fails with `session_busy` (VWM_PROMPT_WAIT_S).
    prompt_wait_s: float = 600.0
    # Where user subscriptions (`POST /v1/subscriptions`) take effect: "embedded" the broker of
    # `vwm up` delivers them; "knative" each is also a Knative Trigger on `knative_broker` in
    # `knative_namespace` (VWM_EVENTING, VWM_KNATIVE_NAMESPACE, VWM_KNATIVE_BROKER).
    eventing: str = "embedded"
    knative_namespace: str = "default"
    knative_broker: str = "default"
    knative_sessions: KnativeSessionSettings = field(default_factory=KnativeSessionSettings)
    # Skill packages: a folder (`vwm up`) or an S3 bucket (VWM_BLOB_STORE and VWM_S3_*).
    blobs: BlobSettings = field(default_factory=BlobSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControlPlaneSettings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("VWM_DATA_DIR", ".data")).resolve()
        database_url = env.get("VWM_DATABASE_URL") or f"sqlite:///{data_dir / 'vwm.sqlite3'}"
        heartbeat_s = _seconds(env, "VWM_HEARTBEAT_S", 15.0, high=3600)
        runtime_backend = _choice(env, "VWM_RUNTIME_BACKEND", ("local", "knative"))
        local = runtime_backend == "local"
        if not local:
            _refuse_local_only(env)
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            runtime_backend=runtime_backend,
            allow_local_repos=_flag(env, "VWM_ALLOW_LOCAL_REPOS", default=False),
            token_key_file=_path(env.get("VWM_TOKEN_KEY_FILE")),
            harness_ready_timeout_s=_seconds(env, "VWM_HARNESS_READY_TIMEOUT_S", 60.0),
            heartbeat_s=heartbeat_s,
            harness=HarnessCallSettings.from_env(env, heartbeat_s),
            sandbox=_choice(env, "VWM_SANDBOX", ("auto", "required", "off")),
            sandbox_bwrap=env.get("VWM_SANDBOX_BWRAP", "").strip() or "bwrap",
            harness_event_sink=env.get("VWM_HARNESS_EVENT_SINK") or None,
            harness_control_url=env.get("VWM_HARNESS_CONTROL_URL", "").strip() or None,
            session_idle_s=_optional_seconds(env, "VWM_SESSION_IDLE_S"),
            session_max_age_s=_optional_seconds(env, "VWM_SESSION_MAX_AGE_S"),
            # Local harness processes only (on Knative: `_LOCAL_ONLY`).
            harness_idle_s=_seconds(env, "VWM_HARNESS_IDLE_S", 300.0, zero=True) if local else 0,
            # Local: processes, 2 by default; Knative: Services with their volumes, per
            # runtime shape, none unless asked (each member holds a volume and a pod).
            warm_harnesses=_whole(env, "VWM_WARM_HARNESSES", 2 if local else 0, high=64),
            reconcile_grace_s=_seconds(env, "VWM_RECONCILE_GRACE_S", 10.0, zero=True),
            processed_events_retention_s=_seconds(
                env, "VWM_PROCESSED_EVENTS_RETENTION_S", 7 * 86_400, high=365 * 86_400
            ),
            prompt_wait_s=_seconds(env, "VWM_PROMPT_WAIT_S", 600.0),
            eventing=_choice(env, "VWM_EVENTING", ("embedded", "knative")),
            knative_namespace=env.get("VWM_KNATIVE_NAMESPACE", "").strip() or "default",
            knative_broker=env.get("VWM_KNATIVE_BROKER", "").strip() or "default",
            knative_sessions=KnativeSessionSettings.from_env(env),
            blobs=BlobSettings.from_env(env, data_dir),
            sandbox_show=tuple(
                Path(part).resolve()
                for part in env.get("VWM_SANDBOX_SHOW", "").split(os.pathsep)
                if part
            ),
        )


# Settings of the local runtime backend's harness processes, and what stands for each on
# Knative: set with the Knative backend they would do nothing, so they are refused instead.
_LOCAL_ONLY = {
    "VWM_HARNESS_IDLE_S": "Knative scales an idle session's pod to zero itself: set "
    "VWM_SESSION_IDLE_POD_S",
    "VWM_SANDBOX": "the session's pod is its CLI's boundary (the harness image runs with "
    "VWM_SANDBOX=none)",
    "VWM_SANDBOX_BWRAP": "no harness runs beside the control plane",
    "VWM_SANDBOX_SHOW": "no harness runs beside the control plane",
}


def _refuse_local_only(env: Mapping[str, str]) -> None:
    """With the Knative backend, a local-only setting given a value that would change
    something is refused, naming what to set instead (0 for a count or a delay is what Knative
    does anyway, so it passes)."""
    for name, instead in _LOCAL_ONLY.items():
        value = env.get(name, "").strip()
        if value and value != "0":
            raise SettingError(
                f"{name}={value!r} applies to the local runtime backend's harness processes, "
                f"not to VWM_RUNTIME_BACKEND=knative ({instead}): unset it"
            )


def _optional_seconds(env: Mapping[str, str], name: str) -> float | None:
    value = env.get(name, "").strip()
    if not value or value == "0":
        return None
    seconds = float(value)
    if not seconds > 0:
        raise SettingError(f"{name}={value!r}: use a number of seconds above 0 (0 or unset: never)")
    return seconds


def _whole(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    low: int = 0,
    high: int,
    what: str = "a whole number",
) -> int:
    """A whole number from `low` to `high` (`what` names it in the refusal)."""
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise SettingError(f"{name}={value!r}: use {what} from {low} to {high}")
    return int(value)


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, high: float = 86_400, zero: bool = False
) -> float:
    """A duration in seconds: above 0 (or 0 itself, with `zero`), at most `high`."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 if zero else seconds > 0) or not seconds <= high:
        lowest = "0 or more" if zero else "above 0"
        raise SettingError(f"{name}={value!r}: use a number of seconds {lowest}, at most {high:g}")
    return seconds


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={value!r}: use 1, true, yes, on or 0, false, no, off")


# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity): a decimal number
# with an optional binary (Ki..Ei), decimal (m, k, M..E) or exponent suffix.
_QUANTITY = re.compile(r"(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[mkMGTPE]|[eE][+-]?\d+)?")
# A DNS-1123 subdomain: the names of StorageClasses and ServiceAccounts.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# An OCI image reference, loosely: no spaces or shell characters, a repository, then an
# optional tag and digest (the registry decides the rest when it is pulled).
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._\-/:]*(:[\w][\w.-]{0,127})?(@sha256:[a-f0-9]{64})?")


def is_quantity(value: str) -> bool:
    """A positive Kubernetes quantity (``500m``, ``2``, ``4Gi``)."""
    if not _QUANTITY.fullmatch(value):
        return False
    digits = value.rstrip("KMGTPEimk")
    return any(c in "123456789" for c in digits.split("e")[0].split("E")[0])


def is_object_name(value: str) -> bool:
    return len(value) <= 253 and _OBJECT_NAME.fullmatch(value) is not None


def is_image_reference(value: str) -> bool:
    return len(value) <= 500 and _IMAGE.fullmatch(value) is not None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; the first when unset."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise SettingError(f"{name}={value!r}: use {', '.join(choices)}")
    return value


def _path(value: str | None) -> Path | None:
    return Path(value).resolve() if value else None
