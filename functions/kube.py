"""The Kubernetes API for the control plane: namespaced objects (Knative Triggers and Services,
PVCs, Secrets) through the official `kubernetes` client. Callers:
`functions.broker.knative_triggers`, `functions.runtime.knative`.

`KubeApi` creates, replaces, patches, reads, deletes and lists one kind of object (`Resource`),
custom or core, through one path: the client's own request serialization, authentication and
TLS, with JSON in and out. The client is blocking, so every call runs in a worker thread
(`asyncio.to_thread`): the event loop never waits on the API server. Answers become this
package's errors, so callers branch on types and the HTTP edge answers with their code:

- 404 `KubeNotFound` (``not_found``) and 409 `KubeConflict` (``conflict``): the caller decides
  (a delete of what is gone is done; a create of what exists is a replace).
- 429, 5xx, no answer (connection refused or reset, a timeout, TLS failure): tried again
  `attempts` times in all with doubling waits (a 429's ``Retry-After`` when longer), then `KubernetesUnavailable`
  (``kubernetes_unavailable``, 503, retryable) saying what to check.
- Any other refusal (401, 403 for missing RBAC, 422 for an invalid object):
  `KubernetesRefused` (``kubernetes_refused``, 502), with the API server's reason and message.

Where the API server is, in this order (`KubeApi.from_environment`):

1. ``VWM_KUBE_API_URL``: that URL, without credentials. For `kubectl proxy`
   (``http://127.0.0.1:8001``) when running outside the cluster, and for tests, which point it
   at a fake API server.
2. In a pod (``KUBERNETES_SERVICE_HOST`` set): the pod's service account.
3. Otherwise the kubeconfig (``KUBECONFIG``, else ``~/.kube/config``), its current context.

Tests may also pass a `kubernetes.client.Configuration` of their own to `KubeApi`.

The `kubernetes` client is imported by the first call that needs it, never with this module:
it costs a cold start about 80 ms, and a function that imports this module (subscriptions, for
its Triggers) may serve many requests without one call to the API server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from eventing.errors import CONFLICT, NOT_FOUND
from functions.errors import FunctionsError

if TYPE_CHECKING:
    from kubernetes import client as kube_client
    from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

API_URL_ENV = "VWM_KUBE_API_URL"
# Statuses a later attempt may get past: the API server (or its etcd, or an aggregated API
# such as a webhook) is overloaded or restarting. 0 is the client's own "no HTTP answer" (TLS).
RETRIED_STATUSES = frozenset({0, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Resource:
    """One kind of namespaced object, as its REST paths name it: a custom or group kind under
    ``/apis/{group}/{version}/namespaces/{namespace}/{plural}``, a core kind (`group` empty)
    under ``/api/{version}/namespaces/{namespace}/{plural}``."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{path}/{quote(name, safe='')}" if name is not None else path

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}" if self.group else self.plural


PERSISTENT_VOLUME_CLAIMS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SECRETS = Resource("", "v1", "secrets", "Secret")
KNATIVE_SERVICES = Resource("serving.knative.dev", "v1", "services", "Service")
TRIGGERS = Resource("eventing.knative.dev", "v1", "triggers", "Trigger")


class KubeError(FunctionsError):
    """Base of the errors of a Kubernetes API call. `reason` is the API server's ``reason``
    (``NotFound``, ``AlreadyExists``, ``Forbidden``, ...) when it answered."""

    code = "kubernetes_failed"
    status = 502


class KubeNotFound(KubeError):
    code = NOT_FOUND
    status = 404


class KubeConflict(KubeError):
    """The object exists already (a create), or changed since it was read (a replace)."""

    code = CONFLICT
    status = 409


class KubernetesRefused(KubeError):
    """The API server answered with a refusal a retry will not change."""

    code = "kubernetes_refused"
    status = 502


class KubernetesUnavailable(KubeError):
    """The API server did not answer, or kept answering 429/5xx, through every attempt."""

    code = "kubernetes_unavailable"
    status = 503
    retryable = True


def load_configuration(env: Mapping[str, str] | None = None) -> kube_client.Configuration:
    """Where the API server is and how to authenticate, by the order in the module docstring.
    Raises `KubernetesUnavailable` when none of them is there."""
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    env = os.environ if env is None else env
    url = env.get(API_URL_ENV, "").strip()
    if url:
        return kube_client.Configuration(host=url.rstrip("/"))
    configuration = kube_client.Configuration()
    if env.get("KUBERNETES_SERVICE_HOST"):
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException as exc:
            raise KubernetesUnavailable(
                f"this pod's service account cannot be read ({exc}); check that the control "
                "plane's pod mounts its service account token (automountServiceAccountToken)"
            ) from None
        return configuration
    try:
        kube_config.load_kube_config(
            config_file=env.get("KUBECONFIG") or "~/.kube/config",
            client_configuration=configuration,
            persist_config=False,
        )
    except (kube_config.ConfigException, OSError) as exc:
        raise KubernetesUnavailable(
            f"no Kubernetes API server is configured ({exc}); run the control plane in the "
            f"cluster, give it a kubeconfig (KUBECONFIG), or set {API_URL_ENV} (e.g. to "
            "`kubectl proxy`'s http://127.0.0.1:8001)"
        ) from None
    return configuration


class KubeApi:
    """Namespaced objects on one API server. Each call opens its own client and closes
    it, so an instance holds no connections and may be built per request.

    `attempts` bounds the tries of one call (at least 1); the wait before try *n* is
    ``first_delay_s * 2^(n-2)``. `timeout_s` bounds each try: connecting, then reading."""

    def __init__(
        self,
        configuration: kube_client.Configuration,
        *,
        attempts: int = 4,
        first_delay_s: float = 0.25,
        timeout_s: float = 10.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.configuration = copy.deepcopy(configuration)
        # urllib3 would otherwise retry on its own, at once and also on reads: only our loop
        # retries, with backoff, and says so when it gives up.
        self.configuration.retries = False
        self.attempts = attempts
        self.first_delay_s = first_delay_s
        self.timeout_s = timeout_s

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None, **options: Any) -> KubeApi:
        return cls(load_configuration(env), **options)

    @property
    def host(self) -> str:
        return str(self.configuration.host)

    async def create(
        self, resource: Resource, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._call(
            f"create {resource} in {namespace}", "POST", resource.path(namespace), body=body
        )

    async def replace(
        self, resource: Resource, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace the whole object. `body` carries the ``metadata.resourceVersion`` it was read
        at (the API server refuses a custom object's update without one): `KubeConflict` when
        it changed since."""
        return await self._call(
            f"replace {resource} {namespace}/{name}",
            "PUT",
            resource.path(namespace, name),
            body=body,
        )

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): the keys given replace, ``None`` removes."""
        return await self._call(
            f"patch {resource} {namespace}/{name}",
            "PATCH",
            resource.path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        return await self._call(
            f"get {resource} {namespace}/{name}", "GET", resource.path(namespace, name)
        )

    async def delete(
        self, resource: Resource, namespace: str, name: str, *, foreground: bool = False
    ) -> None:
        """Delete the object; `KubeNotFound` if it is gone. Its dependents go in the background,
        or, with `foreground`, first: the object stays (Terminating, with a ``deletionTimestamp``)
        until the garbage collector has removed them, pods included, so its disappearance
        means nothing of it still runs."""
        policy = "Foreground" if foreground else "Background"
        await self._call(
            f"delete {resource} {namespace}/{name}",
            "DELETE",
            resource.path(namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy},
        )

    async def list(
        self, resource: Resource, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """The objects of `namespace` that match `label_selector` (``key=value,key2``)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        answer = await self._call(
            f"list {resource} in {namespace}", "GET", resource.path(namespace), query=query
        )
        return list(answer.get("items") or [])

    async def _call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """The answer (a JSON object) to one request, tried `attempts` times while the failure
        is one a later try may get past. A 429's ``Retry-After`` (capped) replaces the wait."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        problem = ""
        wait_s = 0.0
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(max(wait_s, self.first_delay_s * 2 ** (attempt - 2)))
            wait_s = 0.0
            try:
                answer = await asyncio.to_thread(
                    self._once, method, path, body, query, content_type
                )
                return answer if isinstance(answer, dict) else {}
            except ApiException as exc:
                if exc.status not in RETRIED_STATUSES:
                    raise _refusal(what, exc) from None
                problem = f"answered {exc.status} {_status_text(exc)}"
                wait_s = _retry_after_s(exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                problem = f"did not answer ({type(exc).__name__}: {exc})"
            log.warning(
                "Kubernetes API call failed; retrying"
                if attempt < self.attempts
                else "Kubernetes API call failed; giving up",
                extra={"call": what, "attempt": attempt, "problem": problem[:500]},
            )
        raise KubernetesUnavailable(
            f"{what}: after {self.attempts} tries the Kubernetes API server at {self.host} "
            f"still {problem}; check that the API server is up and reachable from the "
            "control plane, then try again",
            call=what,
            attempts=self.attempts,
        )

    def _once(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        query: Sequence[tuple[str, str]],
        content_type: str,
    ) -> object:
        """One request through the client's own serialization, authentication and TLS."""
        from kubernetes import client as kube_client

        with kube_client.ApiClient(self.configuration) as api_client:
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = content_type
            request = api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response = api_client.call_api(*request, _request_timeout=self.timeout_s)
            response.read()
            return api_client.response_deserialize(response, {"2XX": "object"}).data


# A 429's Retry-After is honoured up to this; an API server asking for longer is better
# reported as unavailable than waited on while a request of ours is open.
_MAX_RETRY_AFTER_S = 10.0


def _retry_after_s(exc: ApiException) -> float:
    value = (exc.headers or {}).get("Retry-After", "") if exc.status == 429 else ""
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


def _status_text(exc: ApiException) -> str:
    """The API server's ``reason: message`` from its Status body, else the HTTP reason."""
    status = _status_body(exc)
    reason = status.get("reason") or exc.reason or ""
    message = status.get("message") or ""
    return f"{reason}: {message}" if message else str(reason)


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or b"")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


def _refusal(what: str, exc: ApiException) -> KubeError:
    status = _status_body(exc)
    reason = str(status.get("reason") or exc.reason or "")
    message = f"{what}: the Kubernetes API server answered {exc.status} {_status_text(exc)}"
    if exc.status == 404:
        return KubeNotFound(message, reason=reason)
    if exc.status == 409:
        return KubeConflict(message, reason=reason)
    if exc.status in (401, 403):
        message += (
            "; check the control plane's credentials and that its service account's Role "
            "allows this verb on this resource"
        )
    return KubernetesRefused(message, reason=reason, api_status=exc.status)
