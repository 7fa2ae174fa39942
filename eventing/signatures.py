"""Signed prompt requests: the `vwmauth` extension of a `dev.vwm.prompt.requested`.

A Knative Trigger delivers a session's prompt requests straight to its harness, and a Trigger
carries no credentials, so the harness cannot ask the delivery for its bearer token. Instead the
control plane signs each request it authorized with the session's token (which only it and the
session's harness know), and the harness checks the signature. Anyone else in the cluster can
post to the broker or to the harness's Service, but cannot sign.

The value is ``"v1." + base64url(HMAC-SHA256(session token, canonical))``, unpadded. `canonical`
covers what decides what runs and where (specversion, type, source, id, sessionid, and the
data), as a JSON array whose data is re-encoded from the decoded payload (sorted keys, compact):
a broker that re-encodes whitespace, reorders keys or switches binary and structured mode
does not break it. ``time`` and the transport's own extensions are left out. The ``v1.``
prefix names the scheme, so a Trigger filter ``{"prefix": {"vwmauth": "v1."}}`` selects signed
events, and a later scheme can live next to this one.

What a leaked signed event allows is its own re-delivery: the job's id is derived from
``source`` + ``id`` (`eventing.events.prompt_job_id`), so it joins or returns the job it
already named, and any change to it breaks the signature.

Used by the control plane (`functions.prompt_requests`: signs what it publishes and forwards,
refuses a wrong signature) and the harness (`harness.prompt_requests`: accepts a delivery
without its bearer token only when signed for its session). Never log a value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from eventing.events import PROMPT_REQUESTED, SPEC_VERSION, EventError, VwmEvent

SCHEME = "v1."
# Domain separation: the session token is also a bearer token, so what it signs says what it is.
_LABEL = "vwmauth/v1"
_DIGEST_CHARS = 43  # 32 bytes, base64url without padding
INVALID_SIGNATURE = "invalid_signature"


def canonical(event: VwmEvent) -> bytes:
    """The bytes a signature covers: one JSON array, so no two events share them."""
    covered = [
        _LABEL,
        SPEC_VERSION,
        event.type,
        event.source,
        event.id,
        event.sessionid,
        event.data_json(),
    ]
    return json.dumps(covered, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(token: str, event: VwmEvent) -> str:
    """The `vwmauth` value of `event` under the session token `token` (any `vwmauth` it
    already has is not covered)."""
    digest = hmac.new(token.encode(), canonical(event), hashlib.sha256).digest()
    return SCHEME + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(token: str, event: VwmEvent) -> bool:
    """Whether `event` carries a valid `vwmauth` under `token`. False for a missing or
    malformed value, or one of another scheme; the comparison takes constant time."""
    presented = event.vwmauth
    if not token or presented is None or not presented.isascii():
        return False
    if not presented.startswith(SCHEME) or len(presented) != len(SCHEME) + _DIGEST_CHARS:
        return False
    return hmac.compare_digest(presented.encode(), sign(token, event).encode())


def signed(token: str, event: VwmEvent) -> VwmEvent:
    """`event` with its `vwmauth`: the same id, source, data and extensions."""
    if event.type != PROMPT_REQUESTED:
        raise EventError(
            "invalid_extension",
            f"only {PROMPT_REQUESTED} events are signed, not {event.type}",
            type=event.type,
            extension="vwmauth",
        )
    return event.model_copy(update={"vwmauth": sign(token, event)})


def check(token: str, event: VwmEvent) -> bool:
    """True for an event validly signed under `token`, False for an unsigned one; an event
    whose `vwmauth` is there but wrong (forged, tampered with, signed for another session) is
    refused with `EventError` ``invalid_signature`` (401: never retried)."""
    if event.vwmauth is None:
        return False
    if verify(token, event):
        return True
    raise EventError(
        INVALID_SIGNATURE,
        f"the event's vwmauth signature does not verify for session {event.sessionid}: it was "
        "changed after signing, or signed for another session. Send it unsigned (without "
        "vwmauth) to the broker; the control plane signs what it accepts",
        status=401,
        sessionid=event.sessionid,
    )
