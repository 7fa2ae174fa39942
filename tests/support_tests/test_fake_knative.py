"""`FakeServing` (tests/support/fake_knative.py): Knative Services become local processes, with
the statuses Knative writes, driven through the real `kubernetes` client."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_knative import PVCS, SECRETS, SERVICES, FakeServing, ready_condition
from tests.support_tests.conftest import NAMESPACE, Cluster

# A pod: answers /healthz, /env/<NAME> and /cwd; writes WRITE_TO at start when it is set;
# exits with EXIT_CODE before listening when that is set; listens on HOST:PORT.
POD = r"""
import http.server, os, sys
if os.environ.get("EXIT_CODE"):
    print("cannot start: the database is down", flush=True)
    sys.exit(int(os.environ["EXIT_CODE"]))
if os.environ.get("WRITE_TO"):
    with open(os.environ["WRITE_TO"], "w") as out:
        out.write("written by the pod")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/cwd":
            body = os.getcwd().encode()
        elif self.path.startswith("/env/"):
            body = os.environ.get(self.path[5:], "<unset>").encode()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
host = os.environ.get("HOST", "127.0.0.1")
http.server.ThreadingHTTPServer((host, int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def knative(cluster: Cluster, tmp_path: Path) -> Iterator[FakeServing]:
    with FakeServing(cluster.fake, tmp_path, grace_s=2, env={"FROM_THE_TEST": "yes"}) as fake:
        yield fake


def service(
    name: str,
    env: list[dict[str, Any]] | None = None,
    claim: str | None = None,
    **container: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"image": "vwm/harness", "command": ["python", "-c", POD], "env": env or []} | container
        ]
    }
    if claim:
        spec["volumes"] = [{"name": "work", "persistentVolumeClaim": {"claimName": claim}}]
        for each in [spec["containers"][0], *spec.get("initContainers", [])]:
            each["volumeMounts"] = [{"name": "work", "mountPath": "/workspace"}]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": spec}},
    }


def create(cluster: Cluster, body: dict[str, Any]) -> None:
    cluster.custom.create_namespaced_custom_object(
        "serving.knative.dev", "v1", NAMESPACE, "services", body
    )


def claim(cluster: Cluster, name: str) -> None:
    cluster.core.create_namespaced_persistent_volume_claim(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def eventually(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_service_becomes_ready_with_knatives_status_and_env(
    cluster: Cluster, knative: FakeServing
) -> None:
    cluster.core.create_namespaced_secret(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys"},
            "stringData": {"api-key": "s3cret"},
        },
    )
    env = [
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api-key"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "GREETING", "value": "hello $(POD_NS)"},
    ]
    create(cluster, service("s-1", env))

    ready = knative.wait_condition("s-1")

    status = ready["status"]
    url = status["url"]
    assert url.startswith("http://127.0.0.1:") and status["address"]["url"] == url
    assert status["observedGeneration"] == ready["metadata"]["generation"] == 1
    assert status["latestCreatedRevisionName"] == status["latestReadyRevisionName"] == "s-1-00001"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {t: c["status"] for t, c in conditions.items()} == {
        "ConfigurationsReady": "True",
        "Ready": "True",
        "RoutesReady": "True",
    }
    assert all(c["lastTransitionTime"] for c in conditions.values())
    assert get(url + "/env/PORT") == url.rsplit(":", 1)[1]
    assert get(url + "/env/API_KEY") == "s3cret"
    assert get(url + "/env/POD_NS") == NAMESPACE
    assert get(url + "/env/POD_NAME").startswith("s-1-00001-deployment-")
    assert get(url + "/env/GREETING") == f"hello {NAMESPACE}"
    assert get(url + "/env/K_SERVICE") == get(url + "/env/K_CONFIGURATION") == "s-1"
    assert get(url + "/env/K_REVISION") == "s-1-00001"
    assert get(url + "/env/FROM_THE_TEST") == "yes"
    assert get(url + "/env/PATH") == os.environ["PATH"]
    assert get(url + "/env/HOST") == "127.0.0.1"  # the fake listens on loopback only
    assert knative.pods_of("s-1") == 1 and knative.revisions_of("s-1") == 1


def test_a_claim_is_bound_to_a_folder_that_the_mount_path_maps_to(
    cluster: Cluster, knative: FakeServing, tmp_path: Path
) -> None:
    claim(cluster, "work-s-2")
    folder = knative.volume_path(NAMESPACE, "work-s-2")
    bound = eventually(
        lambda: (cluster.fake.get(PVCS, NAMESPACE, "work-s-2") or {}).get("status", {})
    )
    assert bound == {
        "phase": "Bound",
        "accessModes": ["ReadWriteOnce"],
        "capacity": {"storage": "1Gi"},
    }
    create(
        cluster, service("s-2", [{"name": "WRITE_TO", "value": "/workspace/out.txt"}], "work-s-2")
    )

    url = knative.wait_condition("s-2")["status"]["url"]

    assert (folder / "out.txt").read_text() == "written by the pod"
    assert get(url + "/cwd") == str(folder)
    assert get(url + "/env/WRITE_TO") == str(folder / "out.txt")
    assert folder.is_relative_to(tmp_path)


def test_init_containers_run_first_on_the_same_volume(
    cluster: Cluster, knative: FakeServing
) -> None:
    claim(cluster, "work-s-3")
    body = service("s-3", [{"name": "WRITE_TO", "value": "/workspace/main.txt"}], "work-s-3")
    init = {
        "name": "seed",
        "image": "vwm/harness",
        "command": ["python", "-c", "import sys; open(sys.argv[1], 'w').write('seeded')"],
        "args": ["/workspace/seed.txt"],
        "volumeMounts": [{"name": "work", "mountPath": "/workspace"}],
    }
    body["spec"]["template"]["spec"]["initContainers"] = [init]
    create(cluster, body)

    knative.wait_condition("s-3")

    assert (knative.volume_path(NAMESPACE, "work-s-3") / "seed.txt").read_text() == "seeded"

    failing = service("s-3b")
    failing["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "migrate", "image": "x", "command": ["python", "-c", "raise SystemExit(4)"]}
    ]
    create(cluster, failing)
    failed = ready_condition(knative.wait_condition("s-3b", "False"))
    assert failed["reason"] == "RevisionFailed"
    assert "Init container migrate failed with: exit code 4" in failed["message"]
    assert knative.pid_of("s-3b") is None


def test_a_pod_that_exits_before_ready_fails_the_revision_with_its_log(
    cluster: Cluster, knative: FakeServing
) -> None:
    create(cluster, service("s-4", [{"name": "EXIT_CODE", "value": "3"}]))

    failed = knative.wait_condition("s-4", "False")

    ready = ready_condition(failed)
    assert ready["reason"] == "RevisionFailed"
    assert ready["message"].startswith('Revision "s-4-00001" failed with message: Container failed')
    assert "exit code 3" in ready["message"]
    assert "the database is down" in ready["message"]
    assert "url" not in failed["status"]
    time.sleep(0.3)
    assert knative.pods_of("s-4") == 1  # a revision that never got ready is not restarted


def test_held_and_refused_services(cluster: Cluster, knative: FakeServing) -> None:
    knative.hold("s-held")
    knative.refuse(
        lambda svc: svc["metadata"]["name"].endswith("-bad"), "ExceedsQuota", "no more pods"
    )
    create(cluster, service("s-held"))
    create(cluster, service("s-bad"))

    refused = ready_condition(knative.wait_condition("s-bad", "False"))
    held = ready_condition(knative.wait_condition("s-held", "Unknown"))
    time.sleep(0.5)

    assert (refused["reason"], refused["message"]) == ("ExceedsQuota", "no more pods")
    assert held["reason"] == "RevisionMissing"
    assert held["message"] == 'Configuration "s-held" is waiting for a Revision to become ready.'
    assert ready_condition(cluster.fake.get(SERVICES, NAMESPACE, "s-held") or {}) == held
    assert knative.pods_of("s-held") == knative.pods_of("s-bad") == 0

    knative.release("s-held")
    knative.wait_condition("s-held")


def test_a_missing_secret_keeps_the_pod_waiting_until_it_comes(
    cluster: Cluster, knative: FakeServing
) -> None:
    ref = {"secretKeyRef": {"name": "late", "key": "token"}}
    create(cluster, service("s-5", [{"name": "TOKEN", "valueFrom": ref}]))
    knative.wait_condition("s-5", "Unknown")
    time.sleep(0.3)
    assert knative.pods_of("s-5") == 0
    assert 'secret "late" not found' in knative.log_of("s-5")

    cluster.fake.put(
        SECRETS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "late"},
            "data": {"token": "dG9r"},
        },
    )

    url = knative.wait_condition("s-5")["status"]["url"]
    assert get(url + "/env/TOKEN") == "tok"


def test_a_killed_pod_comes_back_on_the_same_port(cluster: Cluster, knative: FakeServing) -> None:
    create(cluster, service("s-6"))
    url = knative.wait_condition("s-6")["status"]["url"]
    before = cluster.fake.get(SERVICES, NAMESPACE, "s-6") or {}

    killed = knative.kill_pod("s-6")

    assert eventually(lambda: not alive(killed))
    assert eventually(lambda: knative.pid_of("s-6") not in (None, killed))
    assert eventually(lambda: _answers(url + "/healthz"))
    assert knative.pods_of("s-6") == 2 and knative.revisions_of("s-6") == 1
    after = cluster.fake.get(SERVICES, NAMESPACE, "s-6") or {}
    assert after["status"] == before["status"]  # Ready throughout, same url


def test_deleting_a_service_stops_its_process_and_a_claim_its_folder(
    cluster: Cluster, knative: FakeServing
) -> None:
    claim(cluster, "work-s-7")
    create(cluster, service("s-7", claim="work-s-7"))
    knative.wait_condition("s-7")
    pid = knative.pid_of("s-7")
    assert pid is not None
    folder = knative.volume_path(NAMESPACE, "work-s-7")

    cluster.core.delete_namespaced_persistent_volume_claim("work-s-7", NAMESPACE)
    time.sleep(0.3)
    assert folder.is_dir()  # still used by the pod: kept until it stops

    cluster.custom.delete_namespaced_custom_object(
        "serving.knative.dev", "v1", NAMESPACE, "services", "s-7"
    )

    assert eventually(lambda: not alive(pid))
    assert eventually(lambda: not folder.exists())


def test_a_template_change_is_a_new_revision_that_replaces_the_pod(
    cluster: Cluster, knative: FakeServing
) -> None:
    claim(cluster, "work-s-8")
    create(cluster, service("s-8", claim="work-s-8"))
    knative.wait_condition("s-8")
    first = knative.pid_of("s-8")
    current = cluster.custom.get_namespaced_custom_object(
        "serving.knative.dev", "v1", NAMESPACE, "services", "s-8"
    )
    container = current["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "MODEL", "value": "bigger"}]
    cluster.custom.replace_namespaced_custom_object(
        "serving.knative.dev", "v1", NAMESPACE, "services", "s-8", current
    )

    def on_new_revision() -> dict[str, Any] | None:
        svc = cluster.fake.get(SERVICES, NAMESPACE, "s-8") or {}
        status = svc.get("status", {})
        done = status.get("latestReadyRevisionName") == "s-8-00002"
        return svc if done and status.get("observedGeneration") == 2 else None

    updated = eventually(on_new_revision)
    assert updated, cluster.fake.get(SERVICES, NAMESPACE, "s-8")
    url = updated["status"]["url"]
    assert get(url + "/env/MODEL") == "bigger"
    assert get(url + "/env/K_REVISION") == "s-8-00002"
    assert first is not None and not alive(first)
    assert knative.revisions_of("s-8") == 2 and knative.pods_of("s-8") == 2
    assert knative.overlaps == []

    create(cluster, service("s-8-twin", claim="work-s-8"))  # a second pod on the same claim
    knative.wait_condition("s-8-twin")
    assert [(o.claim, o.started.startswith("s-8-twin-")) for o in knative.overlaps] == [
        (f"{NAMESPACE}/work-s-8", True)
    ]


def test_no_process_outlives_the_fake(cluster: Cluster, tmp_path: Path) -> None:
    with FakeServing(cluster.fake, tmp_path) as knative:
        create(cluster, service("s-9"))
        knative.wait_condition("s-9")
        pid = knative.pid_of("s-9")
    assert pid is not None and not alive(pid)


def _answers(url: str) -> bool:
    try:
        return get(url) == "ok"
    except OSError:
        return False
