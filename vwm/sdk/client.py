"""The connection to a VWM control plane: authentication, JSON requests, error mapping, paging.

`Client` is what every other SDK object holds. It turns error answers into the typed errors of
`vwm.errors`, transport failures into `UnreachableError`, and is the factory for workers, sessions
and jobs. Admin and telemetry calls hang off it as `client.admin` and `client.telemetry`, event
subscriptions as `client.subscribe` and `client.subscriptions`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx
from opentelemetry.propagate import inject

from vwm.errors import ConfigError, ProtocolError, UnreachableError, VWMError, error_for
from vwm.sdk.admin import AdminAPI
from vwm.sdk.answers import next_cursor, rows_of
from vwm.sdk.jobs import Job
from vwm.sdk.models import Subscription
from vwm.sdk.sessions import VirtualWorker, VWSession
from vwm.sdk.sse import StreamSettings
from vwm.sdk.subscriptions import SubscriptionsAPI, event_filters
from vwm.sdk.telemetry import TelemetryAPI

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0

try:
    _VERSION = version("vwm")
except PackageNotFoundError:  # running from a checkout that is not installed
    _VERSION = "0+unknown"

_CLIENT_DEFAULT: Any = httpx.USE_CLIENT_DEFAULT  # "the client's own timeout", unlike None (none)


class Client:
    """A control plane at ``base_url``, called with ``api_key``.

    ``timeout`` (seconds, or an ``httpx.Timeout``) bounds ordinary calls; calls that wait for a
    job or a session have their own, longer limits. ``transport`` replaces the network, for tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        stream_settings: StreamSettings | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("no API key: pass one, or set VWM_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.stream_settings = stream_settings or StreamSettings()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": f"vwm-sdk/{_VERSION}"},
            timeout=timeout,
            transport=transport,
            verify=_tls_verification(self.base_url),
            # The caller's trace goes on in the control plane's (docs/tracing.md): the W3C
            # traceparent of the caller's current span, when its application traces.
            event_hooks={"request": [_with_trace_context]},
        )
        self.admin = AdminAPI(self)
        self.telemetry = TelemetryAPI(self)
        self.subscriptions = SubscriptionsAPI(self)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client for ``VWM_URL`` (default ``http://127.0.0.1:8000``) with key ``VWM_API_KEY``."""
        api_key = os.environ.get("VWM_API_KEY", "")
        if not api_key:
            raise ConfigError("VWM_API_KEY is not set: export the key `vwm up` printed")
        return cls(os.environ.get("VWM_URL") or DEFAULT_URL, api_key, **kwargs)

    # Objects of the API.

    def worker(self, name: str) -> VirtualWorker:
        """A handle on worker ``name``; nothing is fetched."""
        return VirtualWorker(name, self)

    def get_session(self, session_id: str) -> VWSession:
        return VWSession(self, self.request("GET", f"/v1/sessions/{session_id}"))

    def sessions(
        self, *, worker: str | None = None, status: str | None = None, page_size: int | None = None
    ) -> Iterator[VWSession]:
        """Every session matching the filters, fetched a page at a time."""
        params = {"worker": worker, "status": status, "limit": page_size}
        for item in self.paginate("/v1/sessions", params):
            yield VWSession(self, item)

    def get_job(self, job_id: str) -> Job:
        return Job(self, self.request("GET", f"/v1/jobs/{job_id}"))

    def calls(self, job_id: str, *, page_size: int | None = None) -> list[dict[str, Any]]:
        """The job's metered model calls in order (``seq``, ``api``, ``model``, ``status``,
        ``outcome``, ``usage``, ``latency_ms``, ...), stored when it finished; none for a job
        still running or run without a meter. `NotFoundError` for an unknown job."""
        return list(self.paginate(f"/v1/jobs/{job_id}/calls", {"limit": page_size}))

    def subscribe(
        self,
        name: str,
        sink: str,
        *,
        filters: Sequence[Mapping[str, Any]] | None = None,
        session: str | VWSession | None = None,
        type_prefix: str | None = None,
        delivery: Mapping[str, Any] | None = None,
    ) -> Subscription:
        """Have the control plane POST VWM's CloudEvents to ``sink`` (an http(s) URL), at least
        once. Only events that pass every filter: ``filters`` (Knative Trigger filters, as
        given), ``session`` (its ``sessionid``), ``type_prefix`` (e.g. ``"dev.vwm.job."``).
        ``delivery`` is Knative's retry spec. `ConflictError` if ``name`` is taken."""
        spec = event_filters(session=session, type_prefix=type_prefix, filters=filters)
        return self.subscriptions.create(name, sink, spec, delivery)

    # Plumbing used by the objects above.

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | httpx.Timeout | None = _CLIENT_DEFAULT,
    ) -> Any:
        """Send one call and return its decoded JSON answer (None for an empty one)."""
        try:
            response = self._http.request(
                method, path, json=json, params=_clean(params), timeout=timeout
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
            ) from exc

    def send_bytes(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> bytes:
        """Send one call with a raw body (or none) and return the raw answer (files)."""
        return self.exchange(method, path, params=params, content=content).content

    def exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send one call with a raw body (or none) and return the whole answer, for callers that
        read its status or headers (an upload's 200 or 201, a download's checksum)."""
        headers = {"content-type": "application/octet-stream"} if content is not None else None
        try:
            response = self._http.request(
                method, path, params=_clean(params), content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise error_from_response(response)
        return response

    @contextmanager
    def open_stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """An open ``text/event-stream`` answer; errors are raised before anything is read."""
        timeout = self.read_timeout(self.stream_settings.idle_timeout_s)
        request = self._http.build_request(
            method,
            path,
            json=json,
            headers={"Accept": "text/event-stream", **(headers or {})},
            timeout=timeout,
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        try:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise ProtocolError(
                    f"{method} {path} answered {content_type or 'no content type'}, "
                    "not an event stream",
                    status=response.status_code,
                )
            yield response
        finally:
            response.close()

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """The items of a listing answered as ``{items, next_cursor}``, one page at a time."""
        query = dict(params or {})
        while True:
            page = self.request("GET", path, params=query)
            yield from rows_of(page)
            cursor = next_cursor(page)
            if cursor is None:
                return
            query["cursor"] = cursor

    def read_timeout(self, read_s: float | None) -> httpx.Timeout:
        """The client's timeouts with another read limit (None: none), for calls that wait."""
        base = self._http.timeout
        return httpx.Timeout(connect=base.connect, read=read_s, write=base.write, pool=base.pool)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def _unreachable(self, exc: httpx.TransportError) -> UnreachableError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        return UnreachableError(
            f"the call to the control plane at {self.base_url} {kind}: {exc or type(exc).__name__}; "
            "check the URL and that the control plane is running (`vwm up`)"
        )


def error_from_response(response: httpx.Response) -> VWMError:
    """The typed error for an error answer, reading ``{"error": {code, message, details}}``."""
    code, message, details = None, None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code, message, details = error.get("code"), error.get("message"), error.get("details")
    if not message:
        text = "" if body is not None else response.text.strip()[:300]  # e.g. a proxy's page
        message = text or f"{response.status_code} {response.reason_phrase}"
    return error_for(
        response.status_code, code, str(message), details if isinstance(details, dict) else None
    )


def _with_trace_context(request: httpx.Request) -> None:
    """Put the current span's trace context (OpenTelemetry's propagators: W3C ``traceparent``
    by default) on `request`. Nothing when the application has no tracing or no span."""
    inject(request.headers)


def _tls_verification(base_url: str) -> ssl.SSLContext | bool:
    """Certificate checks for https; for plain http a context that trusts nothing, because
    loading the CA bundle costs ~30 ms per client and nothing here would use it (fail-closed)."""
    if base_url.lower().startswith("https://"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the unset ones."""
    if params is None:
        return None
    return {key: value for key, value in params.items() if value is not None}
