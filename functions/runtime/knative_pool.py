"""The Knative backend's warm pool: session Services made before any session asks for one.

A session started cold on Knative waits for its PVC to be bound, its Service's first revision
and its pod (image pulled, volume attached, harness imported): seconds at best. A pool member is
all of that done ahead: a PVC, a Secret and a Service whose pod is up and waits for a session
(`harness.pool_member`). There is a pool per harness shape (`PoolShape`: image, CPU, memory,
what a Service's template fixes), of ``VWM_WARM_HARNESSES`` members each, for the shapes of the
runtimes there are; the reconciler fills them (`WarmServices.fill`) and a claim starts a refill.

A member is generic: its template's environment is what every pod gets (`POD_ENV`) and an
``envFrom`` of its Secret, which holds only its pool token until the claim. The claim
(`WarmServices.take`, then `KnativeBackend` finishes it):

1. takes the member: a merge patch of its Service's labels to the session's, made with the
   ``resourceVersion`` it was listed at, so of two control planes claiming the same member
   one gets a conflict and takes another;
2. writes the session's whole environment into the member's Secret, relabels its PVC, and
   creates the session's Trigger (naming the member's Service);
3. posts the same environment to the member's harness (``POST /v1/claim``), which becomes the
   session's harness in place.

The template never changes (a new revision would wait for the ReadWriteOnce volume the pod
holds): a pod that restarts reads the Secret and comes up as the session's harness directly.
From the claim on the member is the session's: its handle names its objects, and everything the
backend does to a session (ready, ensure_running, teardown, sweep) works on them.

A member is never given back: it serves one session and goes with it, so no session finds
another's leftovers. Knative scales an idle pod to zero like any session's; the fill's probe of
each member counts as traffic, so members stay up while the reconciler runs more often than
``VWM_SESSION_IDLE_POD_S`` (it runs every minute by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from eventing.harness_api import CLAIM_PATH, POOL_TOKEN_ENV, PoolClaim
from functions.kube import (
    KNATIVE_SERVICES,
    PERSISTENT_VOLUME_CLAIMS,
    SECRETS,
    KubeApi,
    KubeConflict,
    KubeError,
    KubeNotFound,
)
from functions.runtime import probe
from functions.runtime.base import HarnessSpec, PoolShape, spec_env
from functions.runtime.errors import RuntimeBackendError
from functions.runtime.knative_objects import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    POD_ENV,
    TOKEN_ENV,
    SessionNames,
    metadata,
    service_of,
    volume_claim_of,
)
from functions.runtime.knative_status import ready_address, terminating
from functions.runtime.tokens import TokenKey
from functions.settings import KnativeSessionSettings

logger = logging.getLogger(__name__)

MEMBER_COMPONENT = "pool-member"
POOL_LABEL = "vwm.dev/pool"
MEMBER_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={MEMBER_COMPONENT}"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
# How old a member's PVC or Secret without its Service must be to count as left over.
STRAY_GRACE_S = 600.0
_MEMBER_PREFIX = "vwm-w-"


@dataclass(frozen=True)
class Shape:
    """A pool's harness shape, with the backend's defaults filled in."""

    image: str
    cpu: str
    memory: str

    @classmethod
    def of(cls, shape: PoolShape, sessions: KnativeSessionSettings) -> Shape:
        return cls(
            shape.image or sessions.harness_image,
            shape.cpu or sessions.cpu,
            shape.memory or sessions.memory,
        )

    @property
    def key(self) -> str:
        """The pool's label value: a hash of the shape (an image reference is no label)."""
        text = f"{self.image}\n{self.cpu}\n{self.memory}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def member_token_id(service: str) -> str:
    """What a member's pool token is derived from: no session id has a ``/``."""
    return f"pool/{service}"


def claim_env(spec: HarnessSpec, token: str) -> dict[str, str]:
    """The session's harness environment beyond `POD_ENV`: what a claim sends and what the
    member's Secret holds from then on."""
    return {**spec_env(spec), TOKEN_ENV: token, **spec.credential_env}


class ClaimRefused(RuntimeBackendError):
    """A member's harness refused the session's environment: its pod would refuse it from the
    Secret too. The backend answers it by starting the session's own Service instead."""

    code = "claim_refused"


class WarmServices:
    """Fills, probes and takes from the pools of one namespace."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        sessions: KnativeSessionSettings,
        token_key: TokenKey,
        size: int,
        probe_timeout_s: float = 5.0,
        stray_grace_s: float = STRAY_GRACE_S,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.sessions = sessions
        self.size = size
        self._token_key = token_key
        self._probe_timeout_s = probe_timeout_s
        self.stray_grace_s = stray_grace_s
        self._filling = asyncio.Lock()
        self._refills: set[asyncio.Task[None]] = set()

    # -- making members --------------------------------------------------------------------------

    def member_objects(self, shape: Shape, service: str) -> list[dict[str, Any]]:
        """A member's Secret, PVC and Service, in the order to create them."""
        names = SessionNames(service)
        labels = {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: MEMBER_COMPONENT}
        labels[POOL_LABEL] = shape.key

        def meta(name: str) -> dict[str, Any]:
            return {"name": name, "namespace": self.namespace, "labels": dict(labels)}

        token = self._token_key.token(member_token_id(service))
        secret = {
            "apiVersion": SECRETS.api_version,
            "kind": SECRETS.kind,
            "metadata": meta(names.secret),
            "type": "Opaque",
            "stringData": {POOL_TOKEN_ENV: token},
        }
        volume = volume_claim_of(meta(names.volume), self.sessions)
        container = {
            "image": shape.image,
            "env": [{"name": name, "value": value} for name, value in sorted(POD_ENV.items())],
            "envFrom": [{"secretRef": {"name": names.secret}}],
        }
        resources = {"cpu": shape.cpu, "memory": shape.memory}
        service_body = service_of(meta(service), names, container, resources, self.sessions)
        return [secret, volume, service_body]

    async def fill(self, shapes: Iterable[PoolShape], *, prune: bool = False) -> int:
        """Make members until each shape's pool has `size`, and probe those that are ready
        (which keeps their pods up). `prune`: `shapes` are all the shapes wanted, so the members
        of any other shape, and those past `size`, are deleted, and so are members' PVCs and
        Secrets left without a Service. Returns how many were made."""
        wanted = {shape.key: shape for shape in (Shape.of(s, self.sessions) for s in shapes)}
        async with self._filling:
            services = await self.api.list(KNATIVE_SERVICES, self.namespace, MANAGED_SELECTOR)
            members = [s for s in services if _is_member(s)]
            by_pool: dict[str, list[dict[str, Any]]] = {}
            for member in members:
                by_pool.setdefault(_pool_of(member), []).append(member)
            made = 0
            for key, shape in wanted.items():
                have = by_pool.get(key, [])
                for _ in range(self.size - len(have)):
                    await self._make(shape)
                    made += 1
            if prune:
                for key, have in by_pool.items():
                    keep = self.size if key in wanted else 0
                    for member in sorted(have, key=_created)[keep:]:
                        await self.remove(member["metadata"]["name"])
                await self._remove_strays({s["metadata"]["name"] for s in services})
            await self._probe([url for m in members if (url := ready_address(m))])
        return made

    def refill_in_background(self, spec: HarnessSpec) -> None:
        """After a claim: make the taken member's replacement without holding up the session
        (the reconciler's fill makes it too, should this process stop first)."""
        task = asyncio.create_task(self._refill(PoolShape.of(spec)), name="warm-services-refill")
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill(self, shape: PoolShape) -> None:
        try:
            await self.fill([shape])
        except KubeError as exc:
            logger.warning("could not refill the warm pool", extra={"error": exc.message})

    async def _make(self, shape: Shape) -> None:
        service = _MEMBER_PREFIX + uuid.uuid4().hex[:16]
        secret, volume, service_body = self.member_objects(shape, service)
        await self.api.create(SECRETS, self.namespace, secret)
        await self.api.create(PERSISTENT_VOLUME_CLAIMS, self.namespace, volume)
        await self.api.create(KNATIVE_SERVICES, self.namespace, service_body)
        logger.info("warm pool member made", extra={"service": service, "pool": shape.key})

    async def remove(self, service: str) -> None:
        """Delete a member that no session took: its Service, Secret and PVC."""
        names = SessionNames(service)
        for resource, name in (
            (KNATIVE_SERVICES, names.service),
            (SECRETS, names.secret),
            (PERSISTENT_VOLUME_CLAIMS, names.volume),
        ):
            with contextlib.suppress(KubeNotFound):
                await self.api.delete(resource, self.namespace, name)

    async def _remove_strays(self, services: set[str]) -> None:
        """Delete a member's PVC or Secret left without its Service (`services`: the names of
        every Service of ours, a session's too), made longer than the grace ago (a member being
        made has them a moment before its Service): what a fill cut off half-way left, or a
        claim cut off before it relabelled the volume."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stray_grace_s)
        for resource, suffix in ((PERSISTENT_VOLUME_CLAIMS, "-workspace"), (SECRETS, "-env")):
            for obj in await self.api.list(resource, self.namespace, MEMBER_SELECTOR):
                name = obj["metadata"]["name"]
                service = name.removesuffix(suffix)
                if service in services or not _made_before(obj, cutoff):
                    continue
                logger.warning(
                    "removing what is left of a warm pool member", extra={"object": name}
                )
                with contextlib.suppress(KubeNotFound):
                    await self.api.delete(resource, self.namespace, name)

    # -- taking one ------------------------------------------------------------------------------

    async def take(self, spec: HarnessSpec) -> tuple[SessionNames, str] | None:
        """A ready member of the spec's shape and its address, its Service relabelled as the
        session's (None: the pool has no ready member; start cold). The relabelling is made at
        the version the member was listed at: a member another control plane took meanwhile is
        a conflict, and the next one is tried."""
        selector = (
            f"{MEMBER_SELECTOR},{POOL_LABEL}={Shape.of(PoolShape.of(spec), self.sessions).key}"
        )
        candidates = await self.api.list(KNATIVE_SERVICES, self.namespace, selector)
        ready = [(m, url) for m in candidates if (url := ready_address(m))]
        for member, url in sorted(ready, key=lambda found: _created(found[0])):
            name = member["metadata"]["name"]
            patch = self._as_sessions(spec, name)
            patch["metadata"]["resourceVersion"] = member["metadata"].get("resourceVersion")
            try:
                await self.api.patch(KNATIVE_SERVICES, self.namespace, name, patch)
            except (KubeConflict, KubeNotFound):
                continue  # taken by another, or removed: the next one
            return SessionNames(name), url
        return None

    async def relabel_volume(self, spec: HarnessSpec, names: SessionNames) -> None:
        """The member's PVC as the session's, so the volume reconciler finds it."""
        patch = self._as_sessions(spec, names.volume)
        await self.api.patch(PERSISTENT_VOLUME_CLAIMS, self.namespace, names.volume, patch)

    def _as_sessions(self, spec: HarnessSpec, name: str) -> dict[str, Any]:
        """The merge patch that makes a member's object the session's: its labels and
        annotations (the pool's label removed), nothing else."""
        session_meta = metadata(spec, name, self.namespace)
        labels = {**session_meta["labels"], POOL_LABEL: None}
        return {"metadata": {"labels": labels, "annotations": session_meta["annotations"]}}

    async def hand_over(
        self, http: httpx.AsyncClient, url: str, names: SessionNames, env: Mapping[str, str]
    ) -> bool:
        """Post the session's environment to the member's harness: True when it took it now.
        False when it did not answer the claim (restarted, or scaled to zero, it comes up as
        the session's from the Secret; a harness that does not come up fails `wait_ready`)."""
        token = self._token_key.token(member_token_id(names.service))
        try:
            response = await http.post(
                url + CLAIM_PATH,
                json=PoolClaim(env=dict(env)).model_dump(),
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._probe_timeout_s,
            )
        except httpx.HTTPError as exc:
            logger.warning(
                "a warm pool member did not take its claim; its pod starts as the session's",
                extra={"service": names.service, "error": str(exc)},
            )
            return False
        if response.status_code in (401, 404):  # no claim route, or not the pool's token
            logger.info(
                "a warm pool member answered its claim with %s; it is the session's already",
                response.status_code,
                extra={"service": names.service},
            )
            return False
        if response.status_code != 200:
            raise ClaimRefused(
                f"the warm pool member {names.service} refused the session's environment "
                f"({response.status_code}): {response.text[:2000]}",
                session_id=env.get("VWM_SESSION_ID", ""),
            )
        return True

    # -- reading ---------------------------------------------------------------------------------

    async def _probe(self, urls: Collection[str]) -> None:
        """``GET /healthz`` of each ready member: traffic, so Knative keeps its pod up."""
        if not urls:
            return
        async with probe.client(self._probe_timeout_s) as http:

            async def one(url: str) -> None:
                # A member whose pod is starting again does not answer: the next fill probes it.
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(url + "/healthz")

            await asyncio.gather(*(one(url) for url in urls))


def _is_member(service: Mapping[str, Any]) -> bool:
    """An unclaimed member, not being deleted."""
    labels = (service.get("metadata") or {}).get("labels") or {}
    return labels.get(COMPONENT_LABEL) == MEMBER_COMPONENT and not terminating(service)


def _pool_of(member: Mapping[str, Any]) -> str:
    return str(((member.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL, ""))


def _made_before(obj: Mapping[str, Any], cutoff: datetime) -> bool:
    made = (obj.get("metadata") or {}).get("creationTimestamp")
    if not made:
        return False  # not known: left alone
    return datetime.fromisoformat(str(made).replace("Z", "+00:00")) < cutoff


def _created(member: Mapping[str, Any]) -> str:
    return str((member.get("metadata") or {}).get("creationTimestamp") or "")
