"""A fake Kubernetes API server for namespaced objects, on a real socket in a thread, for the
real `kubernetes` client (and a control plane in a subprocess) to talk to.

It serves ``/apis/{group}/{version}/namespaces/{namespace}/{plural}[/{name}[/status]]`` for the
custom kinds a test registers, and ``/api/v1/namespaces/{namespace}/{plural}[...]`` for core
kinds (a `Kind` whose group is ``""``: PersistentVolumeClaims, Secrets, ...). It answers as
kube-apiserver does: create (201; 409 ``AlreadyExists``), get (404 ``NotFound``), replace
(``metadata.resourceVersion`` required, 409 ``Conflict`` when stale), patch (merge patch, JSON
patch, and strategic merge patch for core kinds taken as a merge patch; a stale
``resourceVersion`` in it is a 409), delete (200 ``Success`` Status, or for a claim the object
with a ``deletionTimestamp``; see Deletion below), list with a label selector; ``Status``
bodies on every failure;
404 for an unknown kind or namespace; 400 for an ``apiVersion``/``kind`` or namespace that does
not match the path; 422 ``Invalid`` for a bad name, bad labels, or (stricter than a real
server, which prunes unknown fields unless asked not to) a body against the kind's schema.
Every kind has a status subresource: a write of the object keeps ``.status``; ``PUT``/``PATCH``
of ``.../{name}/status`` (or `FakeKubeApi.set_status`) changes only ``.status``. A Secret's
``stringData`` is stored base64-encoded in ``data``, as the API server does.
`faults` are statuses answered instead, one per request, before anything is done.

Deletion: a DeleteOptions ``propagationPolicy`` of ``Foreground`` on a kind in `owners` (one
whose dependents a fake controller runs, e.g. a Knative Service's pods) keeps the object,
Terminating (``deletionTimestamp``, the ``foregroundDeletion`` finalizer, a ``terminating``
`Change`), answering 200 with it, until that controller calls `FakeKubeApi.finish_deletion`
once the dependents are gone; a create of its name meanwhile is a 409, as on a cluster. Any
other delete removes the object at once (the garbage collector's background work is unseen).

Fake controllers react through `FakeKubeApi.on_change`: after each successful write, every
callback gets a `Change`. Callbacks run outside the store's lock, one change at a time in the
order the writes happened, in the thread that made the write (the server's event loop thread
for HTTP requests): they must return at once (hand the change to a queue of their own) and
may call back into the fake.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import itertools
import json
import logging
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

log = logging.getLogger(__name__)

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
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# What the client sends for a map patch of a core kind. Treated as a merge patch: lists are
# replaced whole, not merged by their key as the real server's strategic merge does (nor are
# ``$patch`` directives known). Custom kinds refuse it (415), as a real server does.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# Kinds whose delete answers with the object, Terminating (a finalizer holds it in a real
# cluster; the fake removes it at once), not a Status: the client parses it as the kind.
_DELETE_ANSWERS_OBJECT = {"PersistentVolumeClaim", "PersistentVolume", "Pod", "Namespace"}


@dataclass(frozen=True)
class Kind:
    group: str  # "" for a core kind (served under /api/v1)
    version: str
    plural: str
    kind: str
    validate: Validate | None = None  # problems with a body; any → 422 Invalid

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class Change:
    """One successful write: ``verb`` is create, replace, patch, status (only ``.status``
    changed), terminating (a foreground deletion began) or delete; ``obj`` is a copy of the object after it (before it, for a delete)."""

    verb: str
    kind: Kind
    namespace: str
    name: str
    obj: dict[str, Any]


OnChange = Callable[[Change], None]


class PatchError(ValueError):
    """A patch that cannot apply: the API server answers 422 (or 400 for a malformed one)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PatchError(f"path not found: /{'/'.join(parts)}") from exc
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    node = _parent(doc, parts)
    try:
        return node[int(parts[-1])] if isinstance(node, list) else node[parts[-1]]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise PatchError(f"path not found: /{'/'.join(parts)}") from exc


def _remove(doc: Any, parts: list[str]) -> Any:
    value = _get(doc, parts)
    node = _parent(doc, parts)
    if isinstance(node, list):
        del node[int(parts[-1])]
    else:
        del node[parts[-1]]
    return value


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    node = _parent(doc, parts)
    if isinstance(node, list):
        index = len(node) if parts[-1] == "-" else int(parts[-1])
        if not 0 <= index <= len(node):
            raise PatchError(f"index out of range: /{'/'.join(parts)}")
        node.insert(index, value)
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise PatchError(f"cannot add under a scalar: /{'/'.join(parts)}")
    return doc


def json_patch(doc: Any, operations: list[Any]) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test) on a copy of `doc`."""
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"malformed operation {op!r}")
        parts = _pointer(op["path"])
        match op["op"]:
            case "add":
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
            case "remove":
                _remove(doc, parts)
            case "replace":
                _get(doc, parts)
                if parts:
                    _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
            case "move":
                doc = _add(doc, parts, _remove(doc, _pointer(op["from"])))
            case "copy":
                doc = _add(doc, parts, copy.deepcopy(_get(doc, _pointer(op["from"]))))
            case "test":
                if (_get(doc, parts) if parts else doc) != op.get("value"):
                    raise PatchError(f"test failed at {op['path']}")
            case other:
                raise PatchError(f"unknown operation {other!r}")
    return doc


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


def _is_secret(kind: Kind) -> bool:
    return (kind.group, kind.kind) == ("", "Secret")


def _secret_stored(body: dict[str, Any]) -> list[str]:
    """As the API server stores a Secret: ``stringData`` folded into ``data`` base64-encoded
    (it wins over the same key in ``data``), then dropped; every ``data`` value must be base64."""
    data = body.get("data") or {}
    string_data = body.pop("stringData", None) or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        return ["data: must be a map of strings"]
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    problems = []
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"data[{key}]: Invalid value: illegal base64 data")
    if data:
        body["data"] = data
    body.setdefault("type", "Opaque")
    return problems


def _not_found(kind: Kind, name: str) -> JSONResponse:
    return status(
        404,
        "NotFound",
        f'{kind.resource} "{name}" not found',
        name=name,
        group=kind.group,
        kind=kind.plural,
    )


def _conflict(kind: Kind, name: str) -> JSONResponse:
    return status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        name=name,
        group=kind.group,
        kind=kind.plural,
    )


@dataclass
class FakeKubeApi:
    kinds: list[Kind] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    faults: deque[int] = field(default_factory=deque)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of each
    patches: list[tuple[str, Any]] = field(default_factory=list)  # (path, body) of each PATCH
    _objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _callbacks: list[OnChange] = field(default_factory=list)
    # Kinds (by `Kind.resource`) whose foreground deletion waits for `finish_deletion`.
    owners: set[str] = field(default_factory=set)
    _changes: deque[Change] = field(default_factory=deque)
    # Reentrant: a callback may write to the fake, which dispatches again in the same thread.
    _dispatching: threading.RLock = field(default_factory=threading.RLock)

    def register(self, *kinds: Kind) -> None:
        """Serve `kinds` too, unless a kind with the same group, version and plural is served."""
        for kind in kinds:
            if self.find_kind(kind.group, kind.version, kind.plural) is None:
                self.kinds.append(kind)

    def find_kind(self, group: str, version: str, plural: str) -> Kind | None:
        for kind in self.kinds:
            if (kind.group, kind.version, kind.plural) == (group, version, plural):
                return kind
        return None

    def on_change(self, callback: OnChange) -> None:
        """Call `callback` with every later `Change` (see the module docstring for how)."""
        with self._dispatching:
            self._callbacks.append(callback)

    def objects(self, kind: Kind, namespace: str) -> dict[str, dict[str, Any]]:
        """The stored objects of `kind` in `namespace`, by name (copies)."""
        with self._lock:
            return {
                name: copy.deepcopy(obj)
                for (resource, ns, name), obj in self._objects.items()
                if resource == kind.resource and ns == namespace
            }

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of one stored object, or None."""
        with self._lock:
            obj = self._objects.get((kind.resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def put(self, kind: Kind, namespace: str, obj: dict[str, Any]) -> None:
        """Store an object as if someone else had created it."""
        with self._lock:
            obj = self._stamped(obj, namespace)
            key = (kind.resource, namespace, obj["metadata"]["name"])
            verb = "replace" if key in self._objects else "create"
            self._objects[key] = obj
            self._record(verb, kind, namespace, obj)
        self._dispatch()

    def set_status(self, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write `.status` as a controller does (a new resourceVersion). KeyError when the
        object is not there (a controller racing a delete must expect it)."""
        with self._lock:
            obj = self._objects[(kind.resource, namespace, name)]
            obj["status"] = copy.deepcopy(status)
            obj["metadata"]["resourceVersion"] = str(next(self._versions))
            self._record("status", kind, namespace, obj)
        self._dispatch()

    def finish_deletion(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        """Remove a Terminating object (its dependents are gone), as the garbage collector does
        when it drops the ``foregroundDeletion`` finalizer; nothing if it is not that object
        or not Terminating."""
        with self._lock:
            key = (kind.resource, namespace, name)
            obj = self._objects.get(key)
            if obj is None or obj["metadata"]["uid"] != uid:
                return
            if not obj["metadata"].get("deletionTimestamp"):
                return
            del self._objects[key]
            self._record("delete", kind, namespace, obj)
        self._dispatch()

    def _record(self, verb: str, kind: Kind, namespace: str, obj: dict[str, Any]) -> None:
        """Queue a change (under `_lock`) for `_dispatch` to hand out once the lock is free."""
        if self._callbacks:
            change = Change(verb, kind, namespace, obj["metadata"]["name"], copy.deepcopy(obj))
            self._changes.append(change)

    def _dispatch(self) -> None:
        with self._dispatching:
            while True:
                with self._lock:
                    if not self._changes:
                        return
                    change = self._changes.popleft()
                for callback in list(self._callbacks):
                    try:
                        callback(change)
                    except Exception:  # a broken observer must not fail the API call
                        log.exception("on_change callback failed on %s", change.verb)

    def _stamped(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
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
        return self.find_kind(params.get("group", ""), params["version"], params["plural"])

    async def _body(self, request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            return None

    def _invalid(self, kind: Kind, name: str, problems: list[str]) -> JSONResponse:
        return status(
            422,
            "Invalid",
            f'{kind.kind}{"." + kind.group if kind.group else ""} "{name}" is invalid: '
            f"{'; '.join(problems)}",
            name=name,
            group=kind.group,
            kind=kind.kind,
            causes=[{"reason": "FieldValueInvalid", "message": p} for p in problems],
        )

    def _check_body(self, kind: Kind, namespace: str, body: Any) -> JSONResponse | None:
        """Refuses what the API server refuses; a Secret's body is also normalized in place."""
        if not isinstance(body, dict):
            return status(400, "BadRequest", "the body of the request was not a JSON object")
        if (body.get("apiVersion"), body.get("kind")) != (kind.api_version, kind.kind):
            return status(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({kind.api_version})",
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
        if _is_secret(kind):
            problems += _secret_stored(body)
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
        subresource = request.url.path.endswith("/status") and "name" in request.path_params
        with_body = ("POST", "PUT", "PATCH", "DELETE")
        body = await self._body(request) if request.method in with_body else None
        if request.method == "PATCH":
            self.patches.append((request.url.path, body))
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            with self._lock:
                return self._answer(
                    request.method, kind, namespace, name, body, content_type, subresource,
                    request.query_params.get("labelSelector", ""),
                )  # fmt: skip
        finally:
            self._dispatch()

    def _answer(
        self,
        method: str,
        kind: Kind,
        namespace: str,
        name: str | None,
        body: Any,
        content_type: str,
        subresource: bool,
        selector: str,
    ) -> JSONResponse:
        if name is None:
            if method == "POST":
                return self._create(kind, namespace, body)
            return self._list(kind, namespace, selector)
        key = (kind.resource, namespace, name)
        current = self._objects.get(key)
        if method == "PUT":
            if subresource:
                return self._replace_status(kind, namespace, name, current, body)
            return self._replace(kind, namespace, name, current, body)
        if current is None:
            return _not_found(kind, name)
        if method == "PATCH":
            return self._patch(kind, namespace, name, current, body, content_type, subresource)
        if method == "DELETE":
            policy = body.get("propagationPolicy") if isinstance(body, dict) else None
            if policy == "Foreground" and kind.resource in self.owners:
                return self._terminate(kind, namespace, current)
            del self._objects[key]
            self._record("delete", kind, namespace, current)
            if kind.group == "" and kind.kind in _DELETE_ANSWERS_OBJECT:
                current["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
                return JSONResponse(current)
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

    def _terminate(self, kind: Kind, namespace: str, current: dict[str, Any]) -> JSONResponse:
        """A foreground deletion: the object stays, Terminating, until `finish_deletion`."""
        meta = current["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
            meta["resourceVersion"] = str(next(self._versions))
            self._record("terminating", kind, namespace, current)
        return JSONResponse(current)

    def _create(self, kind: Kind, namespace: str, body: Any) -> JSONResponse:
        refused = self._check_body(kind, namespace, body)
        if refused is not None:
            return refused
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
        self._record("create", kind, namespace, self._objects[key])
        return JSONResponse(self._objects[key], status_code=201)

    def _replace(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        current: dict[str, Any] | None,
        body: Any,
    ) -> JSONResponse:
        refused = self._check_body(kind, namespace, body)
        if refused is not None:
            return refused
        if body["metadata"]["name"] != name:
            return status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            )
        if current is None:
            return _not_found(kind, name)
        version = body["metadata"].get("resourceVersion")
        if not version:
            return self._invalid(
                kind,
                name,
                ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
            )
        if version != current["metadata"]["resourceVersion"]:
            return _conflict(kind, name)
        return self._store("replace", kind, namespace, current, body)

    def _store(
        self, verb: str, kind: Kind, namespace: str, current: dict[str, Any], new: dict[str, Any]
    ) -> JSONResponse:
        """`new` in place of `current`: what the server owns kept, the generation bumped when
        the spec changed, ``.status`` kept (it has its own subresource)."""
        stored = copy.deepcopy(new)
        old = current["metadata"]
        changed = stored.get("spec") != current.get("spec")
        stored["metadata"].update(
            name=old["name"],
            namespace=namespace,
            uid=old["uid"],
            creationTimestamp=old["creationTimestamp"],
            generation=old["generation"] + (1 if changed else 0),
            resourceVersion=str(next(self._versions)),
        )
        stored.pop("status", None)
        if "status" in current:
            stored["status"] = current["status"]
        self._objects[(kind.resource, namespace, old["name"])] = stored
        self._record(verb, kind, namespace, stored)
        return JSONResponse(stored)

    def _replace_status(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        current: dict[str, Any] | None,
        body: Any,
    ) -> JSONResponse:
        """``PUT .../status``: only ``.status`` is taken from the body. A missing
        ``resourceVersion`` is an unconditional write (a stale one is a 409)."""
        refused = self._check_body(kind, namespace, body)
        if refused is not None:
            return refused
        if current is None:
            return _not_found(kind, name)
        version = body["metadata"].get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            return _conflict(kind, name)
        return self._write_status(kind, namespace, current, body.get("status"))

    def _write_status(
        self, kind: Kind, namespace: str, current: dict[str, Any], new_status: Any
    ) -> JSONResponse:
        if new_status is None:
            current.pop("status", None)
        else:
            current["status"] = copy.deepcopy(new_status)
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        self._record("status", kind, namespace, current)
        return JSONResponse(current)

    def _patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        current: dict[str, Any],
        body: Any,
        content_type: str,
        subresource: bool,
    ) -> JSONResponse:
        if content_type == STRATEGIC_MERGE_PATCH and kind.group:
            return status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml",
            )
        try:
            if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
                if not isinstance(body, dict):
                    raise PatchError("a merge patch must be a JSON object")
                patched = merge_patch(current, body)
            elif content_type == JSON_PATCH:
                if not isinstance(body, list):  # what kube-apiserver says to a map
                    return status(
                        400,
                        "BadRequest",
                        "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                    )
                patched = json_patch(current, body)
            else:
                return status(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}",
                )
        except PatchError as exc:
            return self._invalid(kind, name, [str(exc)])
        meta = body.get("metadata") if isinstance(body, dict) else None
        requested = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if requested and requested != current["metadata"]["resourceVersion"]:
            return _conflict(kind, name)
        refused = self._check_body(kind, namespace, patched)
        if refused is not None:
            return refused
        if subresource:
            return self._write_status(kind, namespace, current, patched.get("status"))
        return self._store("patch", kind, namespace, current, patched)

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
                "apiVersion": kind.api_version,
                "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(next(self._versions))},
                "items": items,
            }
        )

    def app(self) -> Starlette:
        routes = []
        for base in (
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
            "/api/{version}/namespaces/{namespace}/{plural}",
        ):
            item = base + "/{name}"
            routes += [
                Route(base, self.handle, methods=["GET", "POST"]),
                Route(item, self.handle, methods=["GET", "PUT", "PATCH", "DELETE"]),
                Route(item + "/status", self.handle, methods=["GET", "PUT", "PATCH"]),
            ]
        return Starlette(routes=routes)


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
