"""A user subscription as a Knative Trigger, for production (``VWM_EVENTING=knative``), where
the Knative Broker delivers instead of the embedded one. Callers: `functions.subscriptions`
(``POST`` applies the Trigger, ``DELETE`` deletes it).

The Trigger (``eventing.knative.dev/v1``) lives in ``settings().knative_namespace`` on
``settings().knative_broker``, with the subscription's ``filters`` as given, its sink as
``subscriber.uri`` and its ``delivery`` (a plain-string ``deadLetterSink`` written as
``{uri: ...}``, Knative's only form). Its name is `trigger_name`; its labels say VWM manages it
and which subscription it is, and the annotation `SUBSCRIPTION_ANNOTATION` keeps the exact name.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from functions.context import settings
from functions.kube import TRIGGERS, KubeApi, KubeConflict, KubeNotFound, KubernetesRefused

PREFIX = "vwm-sub-"
MAX_NAME = 63  # a DNS-1035 label, as Knative names must be
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "vwm"
SUBSCRIPTION_LABEL = "vwm.dev/subscription"
SUBSCRIPTION_ANNOTATION = "vwm.dev/subscription-name"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{SUBSCRIPTION_LABEL}"

# 64 bits of SHA-256: finding another name with the same suffix is out of reach.
_HASH_CHARS = 16
_INVALID = re.compile(r"[^a-z0-9-]+")
# A name that already ends the way a hashed one does is hashed too, so a plain Trigger name
# never equals the hashed name of another subscription.
_LOOKS_HASHED = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}$")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
# Rounds of create-else-replace against a Trigger that keeps changing between read and write.
_APPLY_ATTEMPTS = 3


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def trigger_name(subscription: str) -> str:
    """A DNS-1035 label of at most 63 characters: ``vwm-sub-<name>`` when that is one as it
    stands, else the name lower-cased, other characters replaced by ``-``, cut to fit, and
    ``-<hash of the exact name>`` added, so two subscriptions never share a Trigger."""
    plain = PREFIX + subscription
    if (
        len(plain) <= MAX_NAME
        and _INVALID.search(subscription) is None
        and subscription[-1:].isalnum()
        and _LOOKS_HASHED.search(plain) is None
    ):
        return plain
    suffix = "-" + _digest(subscription)[:_HASH_CHARS]
    stem = _INVALID.sub("-", subscription.lower())
    stem = stem[: MAX_NAME - len(PREFIX) - len(suffix)].strip("-")
    return f"{PREFIX}{stem}{suffix}" if stem else f"{PREFIX.rstrip('-')}{suffix}"


def subscription_label(subscription: str) -> str:
    """The name itself when it is a valid label value, else ``h-`` and a hash of it."""
    if _LABEL_VALUE.fullmatch(subscription) and len(subscription) <= MAX_NAME:
        return subscription
    return "h-" + _digest(subscription)[:32]


def knative_delivery(delivery: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription's ``delivery`` as Knative's DeliverySpec: the same keys, a plain-string
    dead-letter sink written as a Destination."""
    spec = dict(delivery)
    dead_letter = spec.get("deadLetterSink")
    if isinstance(dead_letter, str):
        spec["deadLetterSink"] = {"uri": dead_letter}
    return spec


class Subscription(Protocol):
    """What a Trigger is made of, as `functions.db.models.UserSubscription` has it."""

    @property
    def name(self) -> str: ...
    @property
    def filters(self) -> list[Any]: ...
    @property
    def sink(self) -> str: ...
    @property
    def delivery(self) -> dict[str, Any] | None: ...


def trigger_body(subscription: Subscription, *, namespace: str, broker: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "broker": broker,
        "filters": list(subscription.filters),
        "subscriber": {"uri": subscription.sink},
    }
    if subscription.delivery is not None:
        spec["delivery"] = knative_delivery(subscription.delivery)
    return {
        "apiVersion": TRIGGERS.api_version,
        "kind": TRIGGERS.kind,
        "metadata": {
            "name": trigger_name(subscription.name),
            "namespace": namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                SUBSCRIPTION_LABEL: subscription_label(subscription.name),
            },
            "annotations": {SUBSCRIPTION_ANNOTATION: subscription.name},
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class SubscriptionTriggers:
    """The Triggers of user subscriptions on one Broker of one namespace."""

    api: KubeApi
    namespace: str
    broker: str

    async def apply(self, subscription: Subscription) -> dict[str, Any]:
        """Create the subscription's Trigger, or replace the one of that name: a Trigger left
        behind by an earlier subscription of the same name takes the new spec."""
        body = trigger_body(subscription, namespace=self.namespace, broker=self.broker)
        name = body["metadata"]["name"]
        for attempt in range(1, _APPLY_ATTEMPTS + 1):
            last = attempt == _APPLY_ATTEMPTS
            body["metadata"].pop("resourceVersion", None)
            try:
                return await self.api.create(TRIGGERS, self.namespace, body)
            except KubeConflict:
                pass
            except KubeNotFound as exc:
                raise KubernetesRefused(
                    f"{exc.message}; check that namespace {self.namespace!r} exists and that "
                    "Knative Eventing (the Trigger kind) is installed in the cluster",
                    reason=exc.details.get("reason", ""),
                    api_status=404,
                ) from None
            try:  # it exists: replace it at the version just read
                current = await self.api.get(TRIGGERS, self.namespace, name)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                return await self.api.replace(TRIGGERS, self.namespace, name, body)
            except (KubeConflict, KubeNotFound):  # changed or deleted since: again
                if last:
                    raise
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def delete(self, subscription: str) -> None:
        """Delete the subscription's Trigger; one already gone is fine."""
        with contextlib.suppress(KubeNotFound):
            await self.api.delete(TRIGGERS, self.namespace, trigger_name(subscription))

    async def list(self) -> list[dict[str, Any]]:
        """The Triggers VWM made for user subscriptions in the namespace."""
        return await self.api.list(TRIGGERS, self.namespace, MANAGED_SELECTOR)


def from_settings() -> SubscriptionTriggers:
    """The Triggers of the serving app: its namespace and Broker, the API server found as
    `functions.kube.load_configuration` finds it."""
    current = settings()
    return SubscriptionTriggers(
        KubeApi.from_environment(), current.knative_namespace, current.knative_broker
    )


async def apply_trigger(row: Subscription) -> dict[str, Any]:
    """Create or replace the Trigger of `row` (a `UserSubscription`)."""
    return await from_settings().apply(row)


async def delete_trigger(name: str) -> None:
    await from_settings().delete(name)


async def list_triggers() -> list[dict[str, Any]]:
    return await from_settings().list()
