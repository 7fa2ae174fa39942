"""The Knative runtime backend: each session's harness is a Knative Service bound to a PVC.

Production's `RuntimeBackend` (``VWM_RUNTIME_BACKEND=knative``; docs/operations.md, "Sessions
on Knative"). Per session it applies what `functions.runtime.knative_objects.build` makes: a
Secret (the harness token, the CLI's credentials), a ReadWriteOnce PVC mounted at
``/workspace``, the Service (``max-scale: "1"``, scale to zero when idle) and a Trigger that
delivers the session's signed prompt requests to it. Every API call goes through
`functions.kube.KubeApi` (the official client in a worker thread, with retries).

- **Ready** is read from the Service's status: its ``Ready`` condition for the current
  generation, then the harness behind ``status.address.url`` answering with the session's
  token (`functions.runtime.probe`). A Service that fails reports its condition's reason and
  message; one that never becomes ready times out with the last reason seen.
- **The endpoint** is the status address. `status` reads the Service, and each backend object
  remembers the address it last read, so `endpoint` needs no I/O; before any read it is the
  address Knative gives a cluster-local Service (``http://<name>.<namespace>.svc.cluster.local``).
- **Never patched.** A running session's Service template is never changed: a change is a new
  revision, and its pod would wait for the ReadWriteOnce volume the old pod holds. A Service that
  must change (it failed, vanished, or its harness is hung) is deleted and created again.
- **Handles** hold names only (`RuntimeHandle.state`), so a restarted control plane finds
  everything again; the token is derived from the session id, as locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from functions.kube import (
    KNATIVE_SERVICES,
    PERSISTENT_VOLUME_CLAIMS,
    SECRETS,
    TRIGGERS,
    KubeApi,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubernetesUnavailable,
    Resource,
)
from functions.metrics import HARNESS_RESTARTS, HARNESS_STARTS
from functions.runtime import probe
from functions.runtime.base import (
    RESERVED_ENV,
    HarnessEndpoint,
    HarnessSpec,
    HarnessStatus,
    PoolShape,
    RuntimeHandle,
    StillOwned,
    checked_session_id,
)
from functions.runtime.errors import (
    HarnessMissing,
    HarnessNotReady,
    HarnessStartFailed,
    InvalidHarnessSpec,
    RuntimeBackendError,
    SessionExists,
    TeardownFailed,
)
from functions.runtime.knative_objects import (
    SESSION_LABEL,
    SESSION_SELECTOR,
    SessionNames,
    SessionObjects,
    build,
    label_value,
    session_id_of,
)
from functions.runtime.knative_pool import ClaimRefused, WarmServices, claim_env
from functions.runtime.knative_status import address, readiness, terminating
from functions.runtime.tokens import TokenKey
from functions.settings import KnativeSessionSettings

logger = logging.getLogger(__name__)

_POLL_S = 0.25


class KnativeBackend:
    kind = "knative"

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        broker: str,
        sessions: KnativeSessionSettings,
        token_key: TokenKey,
        probe_timeout_s: float = 5.0,
        startup_grace_s: float = 30.0,
        delete_wait_s: float = 60.0,
        warm_services: int = 0,
    ) -> None:
        """`startup_grace_s`: how long a Service that is
        Ready may stay mute before `ensure_running` counts its harness as hung.
        `delete_wait_s`: how long a replacement waits for the old Service to be gone.
        `warm_services`: the members of each runtime shape's warm pool (0: none; every session
        starts cold), `functions.runtime.knative_pool`."""
        if not sessions.harness_image:
            raise InvalidHarnessSpec(
                "the Knative backend needs the harness image: set VWM_HARNESS_IMAGE",
                session_id="",
            )
        self.api = api
        self.namespace = namespace
        self.broker = broker
        self.sessions = sessions
        self._token_key = token_key
        self._probe_timeout_s = probe_timeout_s
        self._startup_grace_s = startup_grace_s
        self._delete_wait_s = delete_wait_s
        self._addresses: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.pool = WarmServices(
            api,
            namespace=namespace,
            sessions=sessions,
            token_key=token_key,
            size=warm_services,
            probe_timeout_s=probe_timeout_s,
        )

    # -- the objects ---------------------------------------------------------------------------

    def objects(self, spec: HarnessSpec, names: SessionNames | None = None) -> SessionObjects:
        """What this backend applies for `spec` (also what ``vwm`` prints for operators), named
        `names` (a claimed pool member's) or after the session."""
        return build(
            spec,
            token=self._token_key.token(spec.session_id),
            namespace=self.namespace,
            broker=self.broker,
            sessions=self.sessions,
            names=names,
        )

    # -- the contract --------------------------------------------------------------------------

    async def provision(self, spec: HarnessSpec) -> RuntimeHandle:
        _check_spec(spec)
        if self.pool.size and (claimed := await self._claim(spec)) is not None:
            return claimed
        objects = self.objects(spec)
        names = SessionNames.of(spec.session_id)
        async with self._lock(spec.session_id):
            try:
                await self.api.create(PERSISTENT_VOLUME_CLAIMS, self.namespace, objects.volume)
            except KubeConflict:
                raise SessionExists(
                    f"session {spec.session_id} already has a volume ({names.volume} in "
                    f"{self.namespace}); use its handle (ensure_running), or tear it down first",
                    session_id=spec.session_id,
                ) from None
            except KubeError as exc:
                raise _backend_error(exc, spec.session_id) from None
            try:
                await self._apply(SECRETS, objects.secret)
                await self._create_service(spec.session_id, objects.service)
                await self._apply(TRIGGERS, objects.trigger)
            except KubeError as exc:
                raise _backend_error(exc, spec.session_id) from None
        HARNESS_STARTS.labels(start="cold").inc()
        logger.info(
            "session provisioned on Knative",
            extra={"session_id": spec.session_id, "service": names.service},
        )
        return self._handle(spec)

    async def _claim(self, spec: HarnessSpec) -> RuntimeHandle | None:
        """The session made of a warm pool member of its shape (None: no member is ready, or
        the pool could not be read; start cold). Raises `SessionExists` as a cold provision
        would, when the session has a volume already."""
        try:
            if await self.api.list(PERSISTENT_VOLUME_CLAIMS, self.namespace, _of_session(spec)):
                raise SessionExists(
                    f"session {spec.session_id} already has a volume in {self.namespace}; use "
                    "its handle (ensure_running), or tear it down first",
                    session_id=spec.session_id,
                )
            taken = await self.pool.take(spec)
        except KubeError as exc:
            logger.warning(
                "could not take from the warm pool; starting cold",
                extra={"session_id": spec.session_id, "error": exc.message},
            )
            return None
        if taken is None:
            return None
        names, url = taken
        self.pool.refill_in_background(spec)
        env = claim_env(spec, self._token_key.token(spec.session_id))
        objects = self.objects(spec, names)
        async with self._lock(spec.session_id):
            try:
                # The Secret first: from now on a pod of the member starts as the session's.
                await self._apply(SECRETS, {**objects.secret, "stringData": env})
                await self.pool.relabel_volume(spec, names)
                await self._apply(TRIGGERS, objects.trigger)
            except KubeError as exc:
                raise _backend_error(exc, spec.session_id) from None
            try:
                async with probe.client(self._probe_timeout_s) as http:
                    await self.pool.hand_over(http, url, names, env)
            except ClaimRefused as exc:
                # The session's settings cannot start a harness. The member is made a cold
                # session's Service on its volume, whose pod then fails its start as any
                # session's would: `wait_ready` reports it, `ensure_running` retries it.
                logger.warning(
                    "a warm pool member refused its claim; starting the session's own Service",
                    extra={"session_id": spec.session_id, "error": str(exc)},
                )
                try:
                    await self._apply(SECRETS, objects.secret)
                    await self._create_service(spec.session_id, objects.service)
                except KubeError as error:
                    raise _backend_error(error, spec.session_id) from None
                url = ""  # the new Service's address is read by `wait_ready`
        start = "warm" if url else "cold"
        HARNESS_STARTS.labels(start=start).inc()
        if url:
            self._addresses[spec.session_id] = url
        logger.info(
            "session provisioned on a warm pool member's volume",
            extra={"session_id": spec.session_id, "service": names.service, "start": start},
        )
        return self._handle(spec, names)

    async def fill_pools(self, shapes: Collection[PoolShape]) -> int:
        try:
            return await self.pool.fill(shapes, prune=True)
        except KubeError as exc:
            raise _backend_error(exc, "") from None

    async def wait_ready(self, handle: RuntimeHandle, timeout_s: float) -> HarnessEndpoint:
        names = self._names(handle)
        deadline = time.monotonic() + timeout_s
        last = "the Service has no status yet"
        async with probe.client(self._probe_timeout_s) as http:
            while True:
                current = await self._service(handle.session_id, names.service)
                if current is None or terminating(current):
                    raise HarnessStartFailed(
                        f"the Knative Service {names.service} of session {handle.session_id} "
                        "is gone or being deleted; call ensure_running to create it again",
                        session_id=handle.session_id,
                        log_tail="",
                        retryable=True,
                    )
                state, reason, message = readiness(current)
                last = f"{reason}: {message}" if reason or message else last
                if state == "False":
                    raise HarnessStartFailed(
                        f"the Knative Service {names.service} of session {handle.session_id} "
                        f"failed: {last}",
                        session_id=handle.session_id,
                        log_tail=last,
                    )
                if state == "True" and (url := address(current)):
                    self._addresses[handle.session_id] = url
                    endpoint = self.endpoint(handle)
                    remaining = max(deadline - time.monotonic(), _POLL_S)
                    probe_s = min(self._probe_timeout_s, remaining)
                    if await probe.answers(http, endpoint, str(handle.state["cli"]), probe_s):
                        return endpoint
                    last = f"Ready, but the harness at {url} does not answer yet"
                if time.monotonic() >= deadline:
                    raise HarnessNotReady(
                        f"the Knative Service {names.service} of session {handle.session_id} "
                        f"was not ready within {timeout_s:g} s (last: {last}); wait longer, or "
                        "check the Service (kubectl describe ksvc) and its pods' events",
                        session_id=handle.session_id,
                    )
                await asyncio.sleep(_POLL_S)

    def endpoint(self, handle: RuntimeHandle) -> HarnessEndpoint:
        names = self._names(handle)
        url = self._addresses.get(handle.session_id) or (
            f"http://{names.service}.{self.namespace}.svc.cluster.local"
        )
        return HarnessEndpoint(url=url, token=self._token_key.token(handle.session_id))

    async def status(self, handle: RuntimeHandle) -> HarnessStatus:
        """``running`` while the Service exists and is not failed (scaled to zero counts: the
        next request wakes it), ``stopped`` when only the volume is left (or the Service
        failed), ``missing`` when the volume is gone too."""
        names = self._names(handle)
        current = await self._service(handle.session_id, names.service)
        if current is not None and not terminating(current):
            state, _, _ = readiness(current)
            if url := address(current):
                self._addresses[handle.session_id] = url
            if state != "False":
                return "running"
        return "stopped" if await self._volume_exists(handle) else "missing"

    async def ensure_running(self, handle: RuntimeHandle, spec: HarnessSpec) -> RuntimeHandle:
        _check_spec(spec)
        if spec.session_id != handle.session_id:
            raise InvalidHarnessSpec(
                f"the spec is for session {spec.session_id}, the handle for {handle.session_id}",
                session_id=handle.session_id,
            )
        names = self._names(handle)
        async with self._lock(handle.session_id):
            if not await self._volume_exists(handle):
                raise HarnessMissing(
                    f"the volume of session {handle.session_id} ({names.volume}) is gone; the "
                    "session cannot be revived, end it",
                    session_id=handle.session_id,
                )
            current = await self._service(handle.session_id, names.service)
            if current is not None and await self._healthy(handle, current):
                return self._handle(spec, names)
            objects = self.objects(spec, names)
            try:
                if current is not None:
                    # Failed, or Ready with a harness that does not answer: its pod goes with
                    # the Service, and only then may a new one mount the volume.
                    logger.warning(
                        "replacing the Knative Service of a session",
                        extra={"session_id": handle.session_id, "service": names.service},
                    )
                    await self._delete_and_wait(KNATIVE_SERVICES, names.service)
                else:
                    logger.warning(
                        "the Knative Service of a session vanished; creating it again on its "
                        "volume",
                        extra={"session_id": handle.session_id, "service": names.service},
                    )
                self._addresses.pop(handle.session_id, None)
                await self._apply(SECRETS, objects.secret)
                await self._create_service(handle.session_id, objects.service)
                await self._apply(TRIGGERS, objects.trigger)
                HARNESS_RESTARTS.inc()
                HARNESS_STARTS.labels(start="cold").inc()
            except KubeError as exc:
                raise _backend_error(exc, handle.session_id) from None
        return self._handle(spec, names)

    async def teardown(self, handle: RuntimeHandle, *, keep_workspace: bool = False) -> None:
        names = self._names(handle)
        keep_volume = keep_workspace or self.sessions.volume_retention == "keep"
        async with self._lock(handle.session_id):
            try:
                # The Trigger first: no prompt request is delivered to a Service going away.
                await self._delete(TRIGGERS, names.trigger)
                await self._stop_service(handle.session_id, names.service)
                await self._delete(SECRETS, names.secret)
                if not keep_volume:
                    await self._delete(PERSISTENT_VOLUME_CLAIMS, names.volume)
            except KubeError as exc:
                raise TeardownFailed(
                    f"could not remove every object of session {handle.session_id}: "
                    f"{exc.message}; tear down again",
                    session_id=handle.session_id,
                ) from None
        self._addresses.pop(handle.session_id, None)

    async def sweep(self, still_owned: StillOwned) -> list[str]:
        """Delete the Services, Triggers and Secrets of every session that may no longer run:
        what a control plane that died between a provision and the session's end left, or
        what belongs to a session whose row is gone. Volumes stay (their session's end, and
        the retention setting, decide)."""
        stopped: set[str] = set()
        try:
            found: list[tuple[Resource, str, str]] = []
            for resource in (TRIGGERS, KNATIVE_SERVICES, SECRETS):
                for obj in await self.api.list(resource, self.namespace, SESSION_SELECTOR):
                    session_id = session_id_of(obj)
                    if session_id is not None and not terminating(obj):
                        found.append((resource, obj["metadata"]["name"], session_id))
            if not found:
                return []
            owned = set(await still_owned({session_id for _, _, session_id in found}))
            for resource, name, session_id in found:
                if session_id in owned:
                    continue
                await self._delete(resource, name)
                if resource is KNATIVE_SERVICES:
                    stopped.add(session_id)
                    self._addresses.pop(session_id, None)
        except KubeError as exc:
            raise _backend_error(exc, "") from None
        return sorted(stopped)

    async def volumes(self) -> dict[str, str]:
        """The session volumes in the namespace, by session id: what `sweep` leaves."""
        try:
            found = await self.api.list(PERSISTENT_VOLUME_CLAIMS, self.namespace, SESSION_SELECTOR)
        except KubeError as exc:
            raise _backend_error(exc, "") from None
        return {
            session_id: obj["metadata"]["name"]
            for obj in found
            if (session_id := session_id_of(obj)) is not None
        }

    async def remove_volumes(self, session_ids: Collection[str]) -> list[str]:
        """Delete the volumes of sessions that no longer need them (no row, or ended), unless
        the retention setting keeps volumes for an operator."""
        if self.sessions.volume_retention == "keep":
            return []
        removed: list[str] = []
        try:
            # By the names they have: a session made of a pool member has the member's. One
            # not listed is gone already, or never was (deleting it again is harmless).
            found = await self.volumes()
            for session_id in sorted(session_ids):
                name = found.get(session_id) or SessionNames.of(session_id).volume
                await self._delete(PERSISTENT_VOLUME_CLAIMS, name)
                removed.append(session_id)
        except KubeError as exc:
            raise _backend_error(exc, "") from None
        return removed

    # -- helpers -------------------------------------------------------------------------------

    def _handle(self, spec: HarnessSpec, names: SessionNames | None = None) -> RuntimeHandle:
        names = names or SessionNames.of(spec.session_id)
        state = {
            "namespace": self.namespace,
            "service": names.service,
            "volume": names.volume,
            "workspace": names.volume,  # what the session's row and events show: the PVC
            "cli": spec.cli,
        }
        return RuntimeHandle(session_id=spec.session_id, backend=self.kind, state=state)

    def _names(self, handle: RuntimeHandle) -> SessionNames:
        if handle.backend != self.kind:
            raise InvalidHarnessSpec(
                f"the {handle.backend!r} handle of session {handle.session_id} cannot be used "
                f"by the {self.kind!r} backend; pass the handle that provision or "
                "ensure_running returned",
                session_id=handle.session_id,
            )
        namespace = handle.state.get("namespace", self.namespace)
        if namespace != self.namespace:
            raise InvalidHarnessSpec(
                f"session {handle.session_id} runs in namespace {namespace!r}, this control "
                f"plane manages {self.namespace!r}; set VWM_KNATIVE_NAMESPACE to it",
                session_id=handle.session_id,
            )
        # A session made of a warm pool member has the member's names (in its handle).
        service = handle.state.get("service")
        return SessionNames(str(service)) if service else SessionNames.of(handle.session_id)

    async def _healthy(self, handle: RuntimeHandle, current: Mapping[str, Any]) -> bool:
        """Ready, and its harness answers (within what is left of its startup grace)."""
        state, _, _ = readiness(current)
        if state == "False" or terminating(current):
            return False
        if state != "True":
            return True  # still deploying: wait_ready tells whether it comes up
        try:
            await self.wait_ready(handle, max(self._probe_timeout_s, self._startup_grace_s))
        except (HarnessNotReady, HarnessStartFailed):
            return False
        return True

    async def _service(self, session_id: str, name: str) -> dict[str, Any] | None:
        """The session's Knative Service as it is now, or None when there is none."""
        try:
            return await self.api.get(KNATIVE_SERVICES, self.namespace, name)
        except KubeNotFound:
            return None
        except KubeError as exc:
            raise _backend_error(exc, session_id) from None

    async def _volume_exists(self, handle: RuntimeHandle) -> bool:
        names = self._names(handle)
        try:
            await self.api.get(PERSISTENT_VOLUME_CLAIMS, self.namespace, names.volume)
        except KubeNotFound:
            return False
        except KubeError as exc:
            raise _backend_error(exc, handle.session_id) from None
        return True

    async def _create_service(self, session_id: str, body: Mapping[str, Any]) -> None:
        """Create the Service; one already there is a leftover (a half-done provision, or a
        session whose Service was never torn down), replaced by deletion, never patched."""
        name = body["metadata"]["name"]
        try:
            await self.api.create(KNATIVE_SERVICES, self.namespace, body)
            return
        except KubeConflict:
            logger.warning(
                "a Knative Service of that name exists already; replacing it",
                extra={"session_id": session_id, "service": name},
            )
        await self._delete_and_wait(KNATIVE_SERVICES, name)
        await self.api.create(KNATIVE_SERVICES, self.namespace, body)

    async def _apply(self, resource: Resource, body: Mapping[str, Any]) -> None:
        """Create, or replace what is there (Secrets and Triggers: no pod restarts for it)."""
        name = body["metadata"]["name"]
        try:
            await self.api.create(resource, self.namespace, body)
            return
        except KubeConflict:
            pass
        current = await self.api.get(resource, self.namespace, name)
        replaced = {**body, "metadata": {**body["metadata"]}}
        replaced["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.api.replace(resource, self.namespace, name, replaced)

    async def _delete(self, resource: Resource, name: str) -> None:
        # A Service in the foreground: it stays until its pods are gone, so waiting for it
        # to vanish (`_delete_and_wait`) means no pod of it still holds the volume.
        foreground = resource is KNATIVE_SERVICES
        with contextlib.suppress(KubeNotFound):
            await self.api.delete(resource, self.namespace, name, foreground=foreground)

    async def _stop_service(self, session_id: str, name: str) -> None:
        """Delete the session's Service and wait (a bounded time) until its pod has stopped.
        A pod slower than that is logged, not an error: the volume's protection keeps the
        claim until the pod lets go of it, and the pod stops on its own."""
        try:
            await self._delete_and_wait(KNATIVE_SERVICES, name)
        except KubernetesUnavailable:
            logger.warning(
                "the session's Service is still stopping; going on without it",
                extra={"session_id": session_id, "service": name},
            )

    async def _delete_and_wait(self, resource: Resource, name: str) -> None:
        await self._delete(resource, name)
        deadline = time.monotonic() + self._delete_wait_s
        while time.monotonic() < deadline:
            try:
                await self.api.get(resource, self.namespace, name)
            except KubeNotFound:
                return
            await asyncio.sleep(_POLL_S)
        raise KubernetesUnavailable(
            f"{resource} {self.namespace}/{name} was deleted but still exists after "
            f"{self._delete_wait_s:g} s (a finalizer, or a pod that does not stop); check it "
            "with kubectl and try again"
        )

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())


def _of_session(spec: HarnessSpec) -> str:
    """The label selector of the session's objects."""
    return f"{SESSION_SELECTOR},{SESSION_LABEL}={label_value(spec.session_id)}"


def _check_spec(spec: HarnessSpec) -> None:
    checked_session_id(spec.session_id)
    clashes = sorted(RESERVED_ENV & (set(spec.extra_env) | set(spec.credential_env)))
    if clashes:
        raise InvalidHarnessSpec(
            f"{', '.join(clashes)} are set by the runtime backend; remove them from the spec",
            session_id=spec.session_id,
        )


def _backend_error(exc: KubeError, session_id: str) -> RuntimeBackendError:
    """A Kubernetes API failure as the runtime contract's error: retryable when the API server
    was unavailable, not when it refused."""
    error = RuntimeBackendError(
        f"the Kubernetes API failed for session {session_id or '(sweep)'}: {exc.message}",
        session_id=session_id,
        retryable=isinstance(exc, KubernetesUnavailable),
    )
    error.code = exc.code if isinstance(exc, KubernetesUnavailable) else "kubernetes_refused"
    return error
