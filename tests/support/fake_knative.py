"""Knative Serving, and the kubelet under it, played with local processes on top of a
`FakeKubeApi`, for tests of a runtime backend that creates Knative Services.

`FakeServing` watches the fake API (`FakeKubeApi.on_change`, handed to its own controller
thread, so it never holds up the API's request handling) and does what the cluster would:

- A PersistentVolumeClaim gets ``status.phase: Bound`` and a folder
  ``<root>/volumes/<namespace>/<claim>/``. Deleting the claim removes the folder, once no
  process uses it (a claim in use would stay Terminating in a cluster; the fake API removes
  the object at once, the folder waits for the last pod).
- A Knative Service (``serving.knative.dev/v1``) gets one local process, its "pod", per
  revision: ``containers[0]``'s ``command`` + ``args`` (a leading ``python``/``python3`` is
  this interpreter), or the FakeServing's ``default_command`` + ``args`` when it gives no
  command (the image's entrypoint). ``initContainers`` run first, in order, to completion.
  Each process gets its container's ``env``/``envFrom`` resolved (values, Secret and ConfigMap
  keys, ``fieldRef``; ``$(VAR)`` references), what Knative sets (``PORT``, ``K_SERVICE``,
  ``K_CONFIGURATION``, ``K_REVISION``), ``PATH``/``HOME``/``LANG`` of the test process and the
  FakeServing's ``env``. A volume mount's path is its folder here: a container's env value or
  argument equal to a ``mountPath`` or under it is rewritten to the folder, and the cwd is the
  first PVC mount's folder. The fake listens on loopback only, so a container value
  ``0.0.0.0`` (or ``::``) becomes ``127.0.0.1``. Output goes to ``<root>/logs/<ns>-<name>.log``.
- Readiness: the port answers ``GET /healthz`` (or the container's ``readinessProbe.httpGet``
  path; a ``tcpSocket`` probe only connects) with 2xx/3xx. Then the Service's status is
  Knative's: ConfigurationsReady, RoutesReady and Ready ``"True"``, the revision names, and
  ``url``/``address.url`` ``http://127.0.0.1:<PORT>``. Until then Ready is ``"Unknown"``
  (``RevisionMissing``); a pod that exits before it is ready makes Ready ``"False"``
  (``RevisionFailed``, with the exit code and the end of its log) until the template changes.
- A pod that dies after it was ready is started again on the same port, as a Deployment does
  (with a growing delay if it keeps dying); the status stays Ready.
- A deleted Service's process group gets SIGTERM, then SIGKILL after ``grace_s``. Deleted in
  the foreground, the Service stays Terminating until its pod has stopped, as the garbage
  collector keeps it until its pods are gone.

Where the fake differs from a cluster:
- A template change stops the old pod before the new one starts (so ``PORT`` stays the same);
  Knative starts the new revision first and drains the old one after, which on a
  ReadWriteOnce claim across nodes hangs. `FakeServing.overlaps` records any two pods live on
  one claim at once (two Services on one claim, a Service recreated while its old pod is still
  stopping); `revisions_of` tells a test whether a template was changed at all.
- The Service's ``url`` appears only once it is Ready (Knative sets it earlier).
- A missing Secret, ConfigMap or claim keeps the pod waiting (Ready ``"Unknown"``, retried, a
  ``[fake-kubelet]`` line in the log); Knative would turn that into ``"False"`` after its
  progress deadline (10 minutes by default).
- Knative's default probe is a TCP connect; the fake's is ``default_probe_path``.
- No scaling: exactly one pod while the Service exists, whatever the autoscaling annotations.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import itertools
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.fake_kube_api import Change, FakeKubeApi, Kind, Validate

log = logging.getLogger(__name__)

SERVICES = Kind("serving.knative.dev", "v1", "services", "Service")
PVCS = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SECRETS = Kind("", "v1", "secrets", "Secret")
CONFIG_MAPS = Kind("", "v1", "configmaps", "ConfigMap")

ServiceMatch = str | Callable[[dict[str, Any]], bool]  # a Service's name, or a test on it

_LOOPBACK = "127.0.0.1"
_ANY_HOST = frozenset({"0.0.0.0", "::", "[::]"})
_HOST_ENV = ("PATH", "HOME", "LANG")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_LOG_TAIL_LINES = 8
_MAX_RESTART_DELAY_S = 2.0


def serving_kinds(
    *,
    validate_service: Validate | None = None,
    validate_pvc: Validate | None = None,
    validate_secret: Validate | None = None,
) -> list[Kind]:
    """The kinds a FakeKubeApi must serve for FakeServing (it registers any missing itself)."""
    return [
        Kind(*_fields(SERVICES), validate=validate_service),
        Kind(*_fields(PVCS), validate=validate_pvc),
        Kind(*_fields(SECRETS), validate=validate_secret),
        CONFIG_MAPS,
    ]


def _fields(kind: Kind) -> tuple[str, str, str, str]:
    return kind.group, kind.version, kind.plural, kind.kind


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.create_server((_LOOPBACK, 0)) as sock:
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Overlap:
    """Two pods that were live on one claim at the same time."""

    claim: str  # "<namespace>/<claimName>"
    running: str  # the pod already there
    started: str  # the pod that started beside it


class _Waiting(Exception):
    """The pod cannot start yet (a missing Secret or claim); the kubelet tries again."""


class _Failed(Exception):
    """The pod cannot start or failed before it was ready; waits for a new revision."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace_s`, reaped; stragglers in the
    group are killed too."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class _Pod:
    name: str
    claims: list[str]
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False


@dataclass
class _Fault:
    match: ServiceMatch
    reason: str = ""
    message: str = ""

    def matches(self, service: dict[str, Any]) -> bool:
        if isinstance(self.match, str):
            return bool(service["metadata"]["name"] == self.match)
        return bool(self.match(service))


class FakeServing:
    """Knative Serving + kubelet over `api`; see the module docstring. Use it as a context
    manager: every process is stopped and reaped on exit."""

    def __init__(
        self,
        api: FakeKubeApi,
        root: Path,
        *,
        default_command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        grace_s: float = 3.0,
        poll_s: float = 0.05,
        default_probe_path: str | None = "/healthz",
    ) -> None:
        self.api = api
        self.root = Path(root)
        self.default_command = list(default_command) if default_command else None
        self.env = dict(env or {})
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.default_probe_path = default_probe_path
        self.overlaps: list[Overlap] = []
        self.errors: list[str] = []  # the fake's own failures; raised on exit
        self._lock = threading.Lock()
        self._changes: queue.Queue[Change | None] = queue.Queue()
        self._supervisors: dict[tuple[str, str], list[_Supervisor]] = {}
        self._pods: Counter[tuple[str, str]] = Counter()
        self._revisions: Counter[tuple[str, str]] = Counter()
        self._claims_in_use: dict[str, set[str]] = {}
        self._doomed_claims: set[str] = set()
        self._refused: list[_Fault] = []
        self._held: list[_Fault] = []
        self._pod_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._controller = threading.Thread(target=self._run, name="fake-serving", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeServing:
        self.api.register(*serving_kinds())
        self.api.owners.add(SERVICES.resource)
        for folder in ("volumes", "logs", "pods"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.api.on_change(self._changes.put)
        self._controller.start()
        for namespace in sorted(self.api.namespaces):  # what was there before us
            for name in self.api.objects(PVCS, namespace):
                self._changes.put(Change("create", PVCS, namespace, name, {}))
            for name in self.api.objects(SERVICES, namespace):
                self._changes.put(Change("create", SERVICES, namespace, name, {}))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._changes.put(None)
        self._controller.join(10)
        for supervisor in self._all_supervisors():
            supervisor.wake.set()
        for supervisor in self._all_supervisors():
            supervisor.join(self.grace_s + 10)
            if supervisor.is_alive():
                self.errors.append(f"the pod supervisor of {supervisor.key} did not stop")
        if self.errors and exc_info[0] is None:
            raise RuntimeError("FakeServing failed: " + "; ".join(self.errors))

    def _all_supervisors(self) -> list[_Supervisor]:
        with self._lock:
            return [s for group in self._supervisors.values() for s in group]

    # -- faults ----------------------------------------------------------------------------

    def refuse(
        self,
        match: ServiceMatch,
        reason: str = "RevisionFailed",
        message: str = "refused by the test",
    ) -> None:
        """Matching Services never start (a running pod is stopped): Ready False with
        `reason` and `message`."""
        with self._lock:
            self._refused.append(_Fault(match, reason, message))
        self._wake_all()

    def hold(self, match: ServiceMatch) -> None:
        """Matching Services that are not running yet never start: Ready stays Unknown."""
        with self._lock:
            self._held.append(_Fault(match))

    def release(self, match: ServiceMatch) -> None:
        """Undo `hold` (and `refuse`) for exactly this `match`."""
        with self._lock:
            self._held = [f for f in self._held if f.match != match]
            self._refused = [f for f in self._refused if f.match != match]
        self._wake_all()

    def kill_pod(self, name: str, namespace: str | None = None) -> int:
        """SIGKILL the Service's running pod, a crash; returns its pid. It is started again."""
        pod = self._supervisor(name, namespace).pod
        if pod is None or pod.proc is None or pod.proc.poll() is not None:
            raise LookupError(f"Service {name!r} has no running pod")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pod.proc.pid, signal.SIGKILL)
        return pod.proc.pid

    # -- observations ----------------------------------------------------------------------

    def pods_of(self, name: str, namespace: str | None = None) -> int:
        """How many pods (main processes) were started for Services of this name."""
        return self._count(self._pods, name, namespace)

    def revisions_of(self, name: str, namespace: str | None = None) -> int:
        """How many revisions were created for Services of this name (across recreations)."""
        return self._count(self._revisions, name, namespace)

    def pid_of(self, name: str, namespace: str | None = None) -> int | None:
        """The pid of the Service's live pod, or None."""
        with contextlib.suppress(LookupError):
            pod = self._supervisor(name, namespace).pod
            if pod is not None and pod.proc is not None and pod.proc.poll() is None:
                return pod.proc.pid
        return None

    def log_path(self, name: str, namespace: str | None = None) -> Path:
        namespace = namespace or self._namespace_of(name)
        return self.root / "logs" / f"{namespace}-{name}.log"

    def log_of(self, name: str, namespace: str | None = None) -> str:
        """Everything the Service's processes (and the fake kubelet) wrote."""
        path = self.log_path(name, namespace)
        return path.read_text(errors="replace") if path.exists() else ""

    def volume_path(self, namespace: str, claim: str) -> Path:
        return self.root / "volumes" / namespace / claim

    def wait_condition(
        self, name: str, ready: str = "True", namespace: str | None = None, timeout: float = 10
    ) -> dict[str, Any]:
        """The Service once its Ready condition is `ready`; TimeoutError (with its log)."""
        deadline = time.monotonic() + timeout
        service: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(LookupError):  # not picked up by the controller yet
                namespace = namespace or self._namespace_of(name)
            service = self.api.get(SERVICES, namespace, name) if namespace else None
            if service is not None and ready_condition(service).get("status") == ready:
                return service
            time.sleep(self.poll_s)
        raise TimeoutError(
            f"Service {namespace}/{name} not Ready={ready} in {timeout}s; status "
            f"{json.dumps((service or {}).get('status'))}; log:\n{self.log_of(name, namespace)}"
        )

    def _count(self, counter: Counter[tuple[str, str]], name: str, namespace: str | None) -> int:
        with self._lock:
            return sum(
                n for (ns, nm), n in counter.items() if nm == name and namespace in (None, ns)
            )

    def _namespace_of(self, name: str) -> str:
        with self._lock:
            found = {ns for ns, nm in self._supervisors if nm == name}
        if len(found) != 1:
            raise LookupError(f"say the namespace of Service {name!r} (found in {sorted(found)})")
        return found.pop()

    def _supervisor(self, name: str, namespace: str | None) -> _Supervisor:
        namespace = namespace or self._namespace_of(name)
        with self._lock:
            live = [s for s in self._supervisors.get((namespace, name), []) if s.is_alive()]
        if not live:
            raise LookupError(f"no Service {namespace}/{name}")
        return live[-1]

    # -- the controller --------------------------------------------------------------------

    def _run(self) -> None:
        while (change := self._changes.get()) is not None:
            try:
                self._react(change)
            except Exception as exc:
                log.exception("fake Serving failed on %s", change)
                self.errors.append(f"{change.verb} {change.kind.plural} {change.name}: {exc!r}")

    def _react(self, change: Change) -> None:
        if self._stopping.is_set():
            return
        if change.kind.resource == PVCS.resource and change.verb != "status":
            self._reconcile_claim(change)
        elif change.kind.resource == SERVICES.resource and change.verb != "status":
            service = self.api.get(SERVICES, change.namespace, change.name)
            if service is not None:
                self._ensure_supervisor(change.namespace, service)
        self._wake_all(change.namespace)

    def _ensure_supervisor(self, namespace: str, service: dict[str, Any]) -> None:
        name, uid = service["metadata"]["name"], service["metadata"]["uid"]
        key = (namespace, name)
        with self._lock:
            group = self._supervisors.setdefault(key, [])
            if any(s.uid == uid for s in group):
                return  # supervised: if it is Terminating, its supervisor finishes it
            supervisor = None if _terminating(service) else _Supervisor(self, namespace, service)
            if supervisor is not None:
                group.append(supervisor)
        if supervisor is None:  # deleted before any pod ran: nothing holds the deletion
            self.api.finish_deletion(SERVICES, namespace, name, uid)
            return
        supervisor.start()

    def _wake_all(self, namespace: str | None = None) -> None:
        for supervisor in self._all_supervisors():
            if namespace in (None, supervisor.namespace):
                supervisor.wake.set()

    def _reconcile_claim(self, change: Change) -> None:
        claim = f"{change.namespace}/{change.name}"
        folder = self.volume_path(change.namespace, change.name)
        pvc = self.api.get(PVCS, change.namespace, change.name)
        with self._lock:
            if pvc is None:
                if self._claims_in_use.get(claim):
                    self._doomed_claims.add(claim)  # removed when its last pod stops
                    return
                shutil.rmtree(folder, ignore_errors=True)
                return
            self._doomed_claims.discard(claim)
        folder.mkdir(parents=True, exist_ok=True)
        if (pvc.get("status") or {}).get("phase") != "Bound":
            spec = pvc.get("spec") or {}
            bound = {
                "phase": "Bound",
                "accessModes": spec.get("accessModes", []),
                "capacity": (spec.get("resources") or {}).get("requests", {}),
            }
            with contextlib.suppress(KeyError):
                self.api.set_status(PVCS, change.namespace, change.name, bound)

    # -- what supervisors share ------------------------------------------------------------

    def fault_of(self, service: dict[str, Any]) -> tuple[_Fault | None, bool]:
        """The refusal that applies to `service`, and whether it is held."""
        with self._lock:
            refused = next((f for f in self._refused if f.matches(service)), None)
            held = any(f.matches(service) for f in self._held)
        return refused, held

    def count_revision(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._revisions[key] += 1

    def next_pod_name(self, revision: str, key: tuple[str, str]) -> str:
        with self._lock:
            self._pods[key] += 1
            return f"{revision}-deployment-{next(self._pod_ids):05d}"

    def claim(self, pod: str, claims: list[str]) -> None:
        with self._lock:
            for claim in claims:
                users = self._claims_in_use.setdefault(claim, set())
                self.overlaps += [Overlap(claim, other, pod) for other in sorted(users)]
                users.add(pod)

    def unclaim(self, pod: str, claims: list[str]) -> None:
        with self._lock:
            for claim in claims:
                users = self._claims_in_use.get(claim, set())
                users.discard(pod)
                if not users and claim in self._doomed_claims:
                    self._doomed_claims.discard(claim)
                    namespace, name = claim.split("/", 1)
                    shutil.rmtree(self.volume_path(namespace, name), ignore_errors=True)


def _terminating(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def ready_condition(service: dict[str, Any]) -> dict[str, Any]:
    for condition in (service.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return {}


class _Supervisor(threading.Thread):
    """One Service (one uid): its revisions, its pod, its status. Polls the API every
    ``poll_s`` and when woken; ends (stopping its pod) when the Service is gone."""

    def __init__(self, serving: FakeServing, namespace: str, service: dict[str, Any]) -> None:
        self.serving = serving
        self.namespace = namespace
        self.service_name: str = service["metadata"]["name"]
        self.key = (namespace, self.service_name)
        self.uid: str = service["metadata"]["uid"]
        super().__init__(name=f"fake-pod-{namespace}-{self.service_name}", daemon=True)
        self.wake = threading.Event()
        self.port = free_port()
        self.url = f"http://{_LOOPBACK}:{self.port}"
        self.template_key: str | None = None
        self.revision_number = 0
        self.revision = ""
        self.pod: _Pod | None = None
        self.ready = False  # the current revision has been ready
        self.failure: _Failed | None = None
        self.crashes = 0
        self.not_before = 0.0
        self.written: dict[str, Any] | None = None

    def run(self) -> None:
        try:
            while not self.serving._stopping.is_set():
                service = self.current()
                if service is None:
                    break
                self.step(service)
                self.wake.wait(self.serving.poll_s)
                self.wake.clear()
        except Exception as exc:
            log.exception("pod supervisor of %s failed", self.key)
            self.serving.errors.append(f"Service {self.key}: {exc!r}")
        finally:
            self.stop_pod()
            # A foreground deletion waited for the pod: it is gone now.
            self.serving.api.finish_deletion(SERVICES, self.namespace, self.service_name, self.uid)

    def current(self) -> dict[str, Any] | None:
        """The Service this supervises; None once it is gone, replaced or being deleted."""
        service = self.serving.api.get(SERVICES, self.namespace, self.service_name)
        if service is None or service["metadata"]["uid"] != self.uid or _terminating(service):
            return None
        return service

    def gone(self) -> bool:
        return self.serving._stopping.is_set() or self.current() is None

    def step(self, service: dict[str, Any]) -> None:
        template = (service.get("spec") or {}).get("template") or {}
        template_key = json.dumps(template, sort_keys=True)
        if template_key != self.template_key:
            self.new_revision(template, template_key)
        refused, held = self.serving.fault_of(service)
        if refused is not None:
            self.stop_pod()
            self.publish(service, _Failed(refused.reason, refused.message))
            return
        if self.failure is not None:
            self.publish(service, self.failure)
            return
        if self.pod is None and not held and time.monotonic() >= self.not_before:
            self.start_pod(service, template)
        pod = self.pod
        if pod is not None and pod.proc is not None and pod.proc.poll() is not None:
            self.pod_exited(pod)
        elif pod is not None and pod.proc is not None and not pod.ready:
            pod.ready = self.probe(template)
            if pod.ready:
                self.ready, self.crashes = True, 0
        self.publish(service, self.failure)

    def new_revision(self, template: dict[str, Any], template_key: str) -> None:
        self.stop_pod()  # before the new one: see the module docstring
        self.template_key = template_key
        self.revision_number += 1
        named = (template.get("metadata") or {}).get("name")
        self.revision = named or f"{self.service_name}-{self.revision_number:05d}"
        self.ready, self.failure, self.crashes, self.not_before = False, None, 0, 0.0
        self.serving.count_revision(self.key)
        self.kubelet_says(f"revision {self.revision} created")

    def start_pod(self, service: dict[str, Any], template: dict[str, Any]) -> None:
        try:
            launch = _Launch(self, service, template)
        except _Waiting as waiting:
            self.kubelet_says(f"waiting: {waiting}")
            self.not_before = time.monotonic() + 0.5
            return
        except _Failed as failure:
            self.failure = failure
            return
        pod = _Pod(self.serving.next_pod_name(self.revision, self.key), launch.claims)
        self.serving.claim(pod.name, pod.claims)
        self.pod = pod
        try:
            launch.run(pod)
        except _Failed as failure:
            self.stop_pod()
            self.failure = failure

    def pod_exited(self, pod: _Pod) -> None:
        code = pod.proc.returncode if pod.proc is not None else None
        self.kubelet_says(f"pod {pod.name} exited with code {code}")
        self.stop_pod()
        if self.ready:  # a Deployment replaces a pod that dies; Ready stays as it was
            self.crashes += 1
            delay = min(0.1 * 2 ** (self.crashes - 1), _MAX_RESTART_DELAY_S)
            self.not_before = time.monotonic() + (delay if self.crashes > 1 else 0)
            return
        self.failure = _Failed(
            "RevisionFailed",
            f'Revision "{self.revision}" failed with message: Container failed with: '
            f"exit code {code}: {self.log_tail()}.",
        )

    def probe(self, template: dict[str, Any]) -> bool:
        containers = (template.get("spec") or {}).get("containers") or [{}]
        probe = containers[0].get("readinessProbe") or {}
        path = (probe.get("httpGet") or {}).get("path", self.serving.default_probe_path)
        if "tcpSocket" in probe:
            path = None
        try:
            if path is None:
                with socket.create_connection((_LOOPBACK, self.port), timeout=0.5):
                    return True
            connection = http.client.HTTPConnection(_LOOPBACK, self.port, timeout=0.5)
            try:
                connection.request("GET", path)
                return 200 <= connection.getresponse().status < 400
            finally:
                connection.close()
        except OSError:
            return False

    def stop_pod(self) -> None:
        pod, self.pod = self.pod, None
        if pod is None:
            return
        if pod.proc is not None:
            _terminate(pod.proc, self.serving.grace_s)
        self.serving.unclaim(pod.name, pod.claims)

    def kubelet_says(self, line: str) -> None:
        with self.serving.log_path(self.service_name, self.namespace).open("a") as out:
            out.write(f"[fake-kubelet] {line}\n")

    def log_tail(self) -> str:
        lines = self.serving.log_of(self.service_name, self.namespace).splitlines()
        tail = [line for line in lines if not line.startswith("[fake-kubelet]")]
        return "\n".join(tail[-_LOG_TAIL_LINES:])[-1000:]

    def publish(self, service: dict[str, Any], failure: _Failed | None) -> None:
        """Write the Service's status as Knative would, when it changed."""
        config_msg = (
            f'Configuration "{self.service_name}" is waiting for a Revision to become ready.'
        )
        if failure is not None:
            state = ("False", failure.reason, failure.message)
        elif self.ready:
            state = ("True", "", "")
        else:
            state = ("Unknown", "RevisionMissing", config_msg)
        wanted: dict[str, Any] = {
            "observedGeneration": service["metadata"].get("generation", 1),
            "latestCreatedRevisionName": self.revision,
            "conditions": [
                self.condition(kind, *state) for kind in ("ConfigurationsReady", "Ready")
            ],
        }
        routes = state if failure is None else ("False", failure.reason, failure.message)
        wanted["conditions"].append(self.condition("RoutesReady", *routes))
        if self.ready and failure is None:
            wanted.update(
                latestReadyRevisionName=self.revision,
                url=self.url,
                address={"url": self.url},
                traffic=[{"revisionName": self.revision, "latestRevision": True, "percent": 100}],
            )
        if wanted != self.written:
            with contextlib.suppress(KeyError):  # deleted meanwhile
                self.serving.api.set_status(SERVICES, self.namespace, self.service_name, wanted)
            self.written = wanted

    def condition(self, kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        previous: dict[str, Any] = next(
            (c for c in (self.written or {}).get("conditions", []) if c["type"] == kind), {}
        )
        condition = {"type": kind, "status": status}
        if reason:
            condition.update(reason=reason, message=message)
        same = previous.get("status") == status
        condition["lastTransitionTime"] = previous["lastTransitionTime"] if same else _now()
        return condition


class _Launch:
    """How to run one pod of a revision: argv, env, cwd of each container, resolved against
    the API. Raises `_Waiting` for what may still come (a Secret, a claim) and `_Failed` for
    what will not."""

    def __init__(
        self, supervisor: _Supervisor, service: dict[str, Any], template: dict[str, Any]
    ) -> None:
        self.supervisor = supervisor
        self.serving = supervisor.serving
        self.namespace = supervisor.namespace
        self.service = service
        self.template = template
        self.spec = template.get("spec") or {}
        self.pod_uid = str(uuid.uuid4())
        self.pod_name = f"{supervisor.revision}-deployment-pending"
        self.volumes = {v.get("name"): v for v in self.spec.get("volumes") or []}
        containers = self.spec.get("containers") or []
        if not containers:
            raise _Failed("RevisionFailed", "spec.template.spec.containers: Required value")
        self.inits = list(self.spec.get("initContainers") or [])
        self.main = containers[0]
        self.claims = [f"{self.namespace}/{name}" for name in self.claim_names()]
        for name in self.claim_names():
            if self.serving.api.get(PVCS, self.namespace, name) is None:
                raise _Waiting(f'persistentvolumeclaim "{name}" not found')
        for container in [*self.inits, self.main]:
            self.prepare(container)  # a missing Secret keeps the pod from starting at all

    def claim_names(self) -> list[str]:
        names = set()
        for container in [*self.inits, self.main]:
            for mount in container.get("volumeMounts") or []:
                volume = self.volumes.get(mount.get("name")) or {}
                if "persistentVolumeClaim" in volume:
                    names.add(volume["persistentVolumeClaim"]["claimName"])
        return sorted(names)

    def run(self, pod: _Pod) -> None:
        """Init containers to completion, then the main one, left running in `pod.proc`."""
        self.pod_name = pod.name  # what a fieldRef to metadata.name gives from now on
        for container in self.inits:
            init_argv, init_env, init_cwd = self.prepare(container)
            self.supervisor.kubelet_says(f"init container {container.get('name')}: {init_argv}")
            pod.proc = self.spawn(init_argv, init_env, init_cwd)
            while pod.proc.poll() is None:
                if self.supervisor.gone():
                    return  # the supervisor stops what is running
                time.sleep(self.serving.poll_s)
            if pod.proc.returncode != 0:
                raise _Failed(
                    "RevisionFailed",
                    f'Revision "{self.supervisor.revision}" failed with message: Init container '
                    f"{container.get('name')} failed with: exit code {pod.proc.returncode}: "
                    f"{self.supervisor.log_tail()}.",
                )
        argv, env, cwd = self.prepare(self.main)
        self.supervisor.kubelet_says(f"pod {pod.name} started on port {self.supervisor.port}")
        pod.proc = self.spawn(argv, env, cwd)

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        with self.serving.log_path(self.supervisor.service_name, self.namespace).open("ab") as out:
            try:
                return subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
            except OSError as exc:
                raise _Failed(
                    "RevisionFailed",
                    f'Revision "{self.supervisor.revision}" failed with message: '
                    f"Container failed with: cannot run {argv[0]!r}: {exc}.",
                ) from exc

    def prepare(self, container: dict[str, Any]) -> tuple[list[str], dict[str, str], Path]:
        mounts = self.mounts(container)
        env = {k: os.environ[k] for k in _HOST_ENV if k in os.environ}
        env.update(self.serving.env)
        own: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            own.update(self.env_from(source))
        for var in container.get("env") or []:
            value = self.env_value(var, {**env, **own})
            if value is not None:
                own[var["name"]] = value
        env.update({k: self.local(v, mounts) for k, v in own.items()})
        env.update(
            PORT=str(self.supervisor.port),
            K_SERVICE=self.supervisor.service_name,
            K_CONFIGURATION=self.supervisor.service_name,
            K_REVISION=self.supervisor.revision,
        )
        command, args = container.get("command"), container.get("args") or []
        if command:
            argv = [*command, *args]
        elif self.serving.default_command:
            argv = [*self.serving.default_command, *args]
        else:
            raise _Failed("RevisionFailed", "the container has no command and no default is set")
        argv = [self.local(_expand(a, env), mounts) for a in argv]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        claims = [path for path, is_claim in mounts.values() if is_claim]
        cwd = claims[0] if claims else self.serving.root / "pods" / self.supervisor.service_name
        cwd.mkdir(parents=True, exist_ok=True)
        return argv, env, cwd

    def mounts(self, container: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
        """Each mountPath → (its folder here, whether it is a claim), in mount order."""
        found: dict[str, tuple[Path, bool]] = {}
        for mount in container.get("volumeMounts") or []:
            volume = self.volumes.get(mount.get("name"))
            if volume is None:
                raise _Failed("RevisionFailed", f"volumeMounts: no volume {mount.get('name')!r}")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                folder, is_claim = self.serving.volume_path(self.namespace, claim), True
            else:
                folder, is_claim = self.scratch_volume(volume), False
            if mount.get("subPath"):
                folder = folder / mount["subPath"]
            folder.mkdir(parents=True, exist_ok=True)
            found[mount["mountPath"].rstrip("/") or "/"] = (folder, is_claim)
        return found

    def scratch_volume(self, volume: dict[str, Any]) -> Path:
        """emptyDir: an empty folder per Service; secret/configMap: their keys as files."""
        folder = (
            self.serving.root / "pods" / self.supervisor.service_name / "volumes" / volume["name"]
        )
        folder.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            data = self.object_data(SECRETS, volume["secret"].get("secretName", ""), volume)
        elif "configMap" in volume:
            data = self.object_data(CONFIG_MAPS, volume["configMap"].get("name", ""), volume)
        else:
            return folder
        for key, value in data.items():
            (folder / key).write_text(value)
        return folder

    def object_data(self, kind: Kind, name: str, volume: dict[str, Any]) -> dict[str, str]:
        obj = self.serving.api.get(kind, self.namespace, name)
        optional = (volume.get("secret") or volume.get("configMap") or {}).get("optional")
        if obj is None:
            if optional:
                return {}
            raise _Waiting(f'{kind.kind.lower()} "{name}" not found')
        return _decoded(kind, obj)

    def env_from(self, source: dict[str, Any]) -> dict[str, str]:
        ref, kind = (
            (source["secretRef"], SECRETS) if "secretRef" in source else
            (source.get("configMapRef") or {}, CONFIG_MAPS)
        )  # fmt: skip
        obj = self.serving.api.get(kind, self.namespace, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise _Waiting(f'{kind.kind.lower()} "{ref.get("name")}" not found')
        prefix = source.get("prefix", "")
        return {
            prefix + k: v for k, v in _decoded(kind, obj).items() if _ENV_NAME.fullmatch(prefix + k)
        }

    def env_value(self, var: dict[str, Any], defined: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return _expand(str(var.get("value", "")), defined)
        source = var["valueFrom"]
        for ref_name, kind in (("secretKeyRef", SECRETS), ("configMapKeyRef", CONFIG_MAPS)):
            if ref_name in source:
                return self.key_ref(source[ref_name], kind)
        if "fieldRef" in source:
            return self.field(source["fieldRef"].get("fieldPath", ""))
        raise _Failed("RevisionFailed", f"env {var.get('name')}: unsupported source {source}")

    def key_ref(self, ref: dict[str, Any], kind: Kind) -> str | None:
        name, key = ref.get("name", ""), ref.get("key", "")
        obj = self.serving.api.get(kind, self.namespace, name)
        data = _decoded(kind, obj) if obj is not None else None
        if data is None or key not in data:
            if ref.get("optional"):
                return None
            if data is None:
                raise _Waiting(f'{kind.kind.lower()} "{name}" not found')
            raise _Waiting(f"couldn't find key {key} in {kind.kind} {self.namespace}/{name}")
        return data[key]

    def field(self, path: str) -> str:
        meta = self.template.get("metadata") or {}
        labels = {
            **(meta.get("labels") or {}),
            "serving.knative.dev/service": self.supervisor.service_name,
            "serving.knative.dev/configuration": self.supervisor.service_name,
            "serving.knative.dev/revision": self.supervisor.revision,
        }
        fields = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.pod_uid,
            "spec.nodeName": "fake-node",
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": _LOOPBACK,
            "status.hostIP": _LOOPBACK,
        }
        fields.update({f"metadata.labels['{k}']": v for k, v in labels.items()})
        annotations = meta.get("annotations") or {}
        fields.update({f"metadata.annotations['{k}']": v for k, v in annotations.items()})
        if path not in fields:
            raise _Failed("RevisionFailed", f"fieldRef {path!r}: not supported by the fake")
        return str(fields[path])

    @staticmethod
    def local(value: str, mounts: dict[str, tuple[Path, bool]]) -> str:
        """A container's path as the folder here; a listen-on-all host as loopback."""
        if value in _ANY_HOST:
            return _LOOPBACK
        for mount_path, (folder, _) in mounts.items():
            if value == mount_path:
                return str(folder)
            if value.startswith(mount_path.rstrip("/") + "/"):
                return str(folder / value[len(mount_path.rstrip("/")) + 1 :])
        return value


def _decoded(kind: Kind, obj: dict[str, Any]) -> dict[str, str]:
    data = obj.get("data") or {}
    if kind.resource != SECRETS.resource:
        return {k: str(v) for k, v in data.items()}
    decoded = {}
    for key, value in data.items():
        with contextlib.suppress(binascii.Error, ValueError):
            decoded[key] = base64.b64decode(value).decode(errors="replace")
    return decoded


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references to variables defined before; ``$$`` is ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, value)


@contextlib.contextmanager
def fake_serving(api: FakeKubeApi, root: Path, **options: Any) -> Iterator[FakeServing]:
    """`FakeServing` as a context manager function, for fixtures that prefer one."""
    with FakeServing(api, root, **options) as serving:
        yield serving
