"""Subscriptions to VWM's CloudEvents (`client.subscribe`, `client.subscriptions`).

A subscription has the control plane's broker POST every event that passes its Knative Trigger
``filters`` to a ``sink`` URL, at least once (docs/events.md, "Subscribing"). `event_filters`
builds those filters from what callers usually mean: one session's events, or the types under a
prefix. Errors are the SDK's usual ones: `ConflictError` (``subscription_exists``) for a name in
use, `NotFoundError` for an unknown name, `ValidationError` for a filter, sink or delivery the
control plane refuses (``details`` says which), `AuthError` for a key without the client scope.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from vwm.errors import NotFoundError
from vwm.sdk.models import Subscription

if TYPE_CHECKING:
    from vwm.sdk.client import Client
    from vwm.sdk.sessions import VWSession

PATH = "/v1/subscriptions"


def event_filters(
    *,
    session: str | VWSession | None = None,
    type_prefix: str | None = None,
    filters: Iterable[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Knative ``filters`` (a list, ANDed): ``filters`` as given, then an exact match on the
    ``sessionid`` extension, then a prefix match on ``type``. Nothing given: every event."""
    combined = [dict(entry) for entry in filters or ()]
    if session is not None:
        session_id = session if isinstance(session, str) else session.id
        combined.append({"exact": {"sessionid": session_id}})
    if type_prefix:
        combined.append({"prefix": {"type": type_prefix}})
    return combined


class SubscriptionsAPI:
    """The subscriptions of the key's control plane, by name."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        sink: str,
        filters: list[dict[str, Any]],
        delivery: Mapping[str, Any] | None = None,
    ) -> Subscription:
        """Subscribe ``sink`` with these exact ``filters``; `Client.subscribe` builds them."""
        body: dict[str, Any] = {"name": name, "filters": filters, "sink": sink}
        if delivery is not None:
            body["delivery"] = dict(delivery)
        return Subscription.from_document(self._client.request("POST", PATH, json=body))

    def list(self) -> builtins.list[Subscription]:
        return [Subscription.from_document(item) for item in self._client.paginate(PATH)]

    def get(self, name: str) -> Subscription:
        return Subscription.from_document(self._client.request("GET", f"{PATH}/{name}"))

    def delete(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove the subscription; deliveries still pending to it are dropped. With
        ``missing_ok`` a subscription that is already gone is not an error."""
        try:
            self._client.request("DELETE", f"{PATH}/{name}")
        except NotFoundError:
            if not missing_ok:
                raise
