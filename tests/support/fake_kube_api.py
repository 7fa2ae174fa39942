"""A fake Kubernetes API server for namespaced custom objects, on a real socket in a thread, for
the real `kubernetes` client (and a control plane in a subprocess) to talk to.

It serves ``/apis/{group}/{version}/namespaces/{namespace}/{plural}[/{name}]`` for the kinds a
test registers, and answers as kube-apiserver does: create (201; 409 ``AlreadyExists``), get
(404 ``NotFound``), replace (``metadata.resourceVersion`` required, 409 ``Conflict`` when
stale), delete (200 ``Success`` Status), list with a label selector; ``Status`` bodies on every
failure; 404 for an unknown kind or namespace; 400 for an ``apiVersion``/``kind`` or namespace
that does not match the path; 422 ``Invalid`` for a bad name, bad labels, or (stricter than a
real server, which prunes unknown fields unless asked not to) a body against the kind's schema.
`faults` are statuses answered instead, one per request, before anything is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Validate = Callable[[dict[str, Any]], list[str]]

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_FAULT_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    validate: Validate | None = None  # problems with a body; any → 422 Invalid

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}"


def status(code: int, reason: str, message: str, **details: Any) -> JSONResponse:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


def label_problems(labels: Any) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return ["metadata.labels: must be a map of strings"]
    found = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix))) or not (
            len(name) <= 63 and _QUALIFIED.fullmatch(name)
        ):
            found.append(f"metadata.labels: Invalid value: {key!r}: not a qualified name")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            found.append(f"metadata.labels: Invalid value: {value!r}: not a valid label value")
    return found


def selected(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma-ANDed."""
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class FakeKubeApi:
    kinds: list[Kind] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    faults: deque[int] = field(default_factory=deque)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of each
    _objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def objects(self, kind: Kind, namespace: str) -> dict[str, dict[str, Any]]:
        """The stored objects of `kind` in `namespace`, by name (copies)."""
        with self._lock:
            return {
                name: json.loads(json.dumps(obj))
                for (resource, ns, name), obj in self._objects.items()
                if resource == kind.resource and ns == namespace
            }

    def put(self, kind: Kind, namespace: str, obj: dict[str, Any]) -> None:
        """Store an object as if someone else had created it."""
        with self._lock:
            obj = self._stamped(obj, namespace)
            self._objects[(kind.resource, namespace, obj["metadata"]["name"])] = obj

    def _stamped(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(self._versions)),
            generation=1,
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return obj

    def _kind(self, request: Request) -> Kind | None:
        params = request.path_params
        for kind in self.kinds:
            if (kind.group, kind.version, kind.plural) == (
                params["group"],
                params["version"],
                params["plural"],
            ):
                return kind
        return None

    async def _body(self, request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _invalid(self, kind: Kind, name: str, problems: list[str]) -> JSONResponse:
        return status(
            422,
            "Invalid",
            f'{kind.kind}.{kind.group} "{name}" is invalid: {"; ".join(problems)}',
            name=name,
            group=kind.group,
            kind=kind.kind,
            causes=[{"reason": "FieldValueInvalid", "message": p} for p in problems],
        )

    def _check_body(
        self, kind: Kind, namespace: str, body: dict[str, Any] | None
    ) -> JSONResponse | None:
        if body is None:
            return status(400, "BadRequest", "the body of the request was not a JSON object")
        if (body.get("apiVersion"), body.get("kind")) != (
            f"{kind.group}/{kind.version}",
            kind.kind,
        ):
            return status(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({kind.group}/{kind.version})",
            )
        meta = body.get("metadata") or {}
        if meta.get("namespace", namespace) != namespace:
            return status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        name = meta.get("name")
        problems = []
        if not isinstance(name, str) or not name:
            problems.append("metadata.name: Required value: name or generateName is required")
        elif len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 name")
        problems += label_problems(meta.get("labels"))
        if kind.validate is not None:
            problems += kind.validate(body)
        return self._invalid(kind, str(name), problems) if problems else None

    async def handle(self, request: Request) -> JSONResponse:
        self.requests.append((request.method, request.url.path))
        if self.faults:
            code = self.faults.popleft()
            reason = _FAULT_REASONS.get(code, "InternalError")
            response = status(code, reason, f"injected fault: {reason}")
            if code == 429:
                response.headers["Retry-After"] = "1"
            return response
        kind = self._kind(request)
        if kind is None:
            return status(404, "NotFound", "the server could not find the requested resource")
        namespace = request.path_params["namespace"]
        if namespace not in self.namespaces:
            return status(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        name = request.path_params.get("name")
        body = await self._body(request) if request.method in ("POST", "PUT") else None
        with self._lock:
            if name is None:
                if request.method == "POST":
                    return self._create(kind, namespace, body)
                return self._list(kind, namespace, request.query_params.get("labelSelector", ""))
            key = (kind.resource, namespace, name)
            current = self._objects.get(key)
            if request.method == "PUT":
                return self._replace(kind, namespace, name, current, body)
            if current is None:
                return status(
                    404,
                    "NotFound",
                    f'{kind.resource} "{name}" not found',
                    name=name,
                    group=kind.group,
                    kind=kind.plural,
                )
            if request.method == "DELETE":
                del self._objects[key]
                details = {"name": name, "group": kind.group, "kind": kind.plural}
                details["uid"] = current["metadata"]["uid"]
                return JSONResponse(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": details,
                    }
                )
            return JSONResponse(current)

    def _create(self, kind: Kind, namespace: str, body: dict[str, Any] | None) -> JSONResponse:
        refused = self._check_body(kind, namespace, body)
        if refused is not None or body is None:
            return refused or status(400, "BadRequest", "no body")
        name = body["metadata"]["name"]
        if "resourceVersion" in body["metadata"]:
            return self._invalid(
                kind, name, ["metadata.resourceVersion: Invalid value: must not be set on create"]
            )
        key = (kind.resource, namespace, name)
        if key in self._objects:
            return status(
                409,
                "AlreadyExists",
                f'{kind.resource} "{name}" already exists',
                name=name,
                group=kind.group,
                kind=kind.plural,
            )
        self._objects[key] = self._stamped(body, namespace)
        return JSONResponse(self._objects[key], status_code=201)

    def _replace(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        current: dict[str, Any] | None,
        body: dict[str, Any] | None,
    ) -> JSONResponse:
        refused = self._check_body(kind, namespace, body)
        if refused is not None or body is None:
            return refused or status(400, "BadRequest", "no body")
        if body["metadata"]["name"] != name:
            return status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            )
        if current is None:
            return status(
                404,
                "NotFound",
                f'{kind.resource} "{name}" not found',
                name=name,
                group=kind.group,
                kind=kind.plural,
            )
        version = body["metadata"].get("resourceVersion")
        if not version:
            return self._invalid(
                kind,
                name,
                ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
            )
        old = current["metadata"]
        if version != old["resourceVersion"]:
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                name=name,
                group=kind.group,
                kind=kind.plural,
            )
        replaced = json.loads(json.dumps(body))
        changed = replaced.get("spec") != current.get("spec")
        replaced["metadata"].update(
            namespace=namespace,
            uid=old["uid"],
            creationTimestamp=old["creationTimestamp"],
            generation=old["generation"] + (1 if changed else 0),
            resourceVersion=str(next(self._versions)),
        )
        if "status" in current:  # the status subresource: a PUT of the object keeps it
            replaced["status"] = current["status"]
        self._objects[(kind.resource, namespace, name)] = replaced
        return JSONResponse(replaced)

    def _list(self, kind: Kind, namespace: str, selector: str) -> JSONResponse:
        items = [
            obj
            for (resource, ns, _), obj in sorted(self._objects.items())
            if resource == kind.resource
            and ns == namespace
            and selected(obj["metadata"].get("labels") or {}, selector)
        ]
        return JSONResponse(
            {
                "apiVersion": f"{kind.group}/{kind.version}",
                "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(next(self._versions))},
                "items": items,
            }
        )

    def app(self) -> Starlette:
        base = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"
        return Starlette(
            routes=[
                Route(base, self.handle, methods=["GET", "POST"]),
                Route(base + "/{name}", self.handle, methods=["GET", "PUT", "DELETE"]),
            ]
        )


@contextlib.contextmanager
def serving(fake: FakeKubeApi) -> Iterator[str]:
    """`fake` on a free loopback port in a thread for the block; yields its URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started:
                break
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the fake Kubernetes API server did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def unused_url() -> str:
    """A loopback URL nothing listens on: an API server that is down."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
