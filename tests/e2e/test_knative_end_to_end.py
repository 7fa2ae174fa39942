"""VWM's production path on Knative, end to end without a cluster: `vwm up`'s control plane with
``VWM_RUNTIME_BACKEND=knative`` talks over HTTP to the fake Kubernetes API, where `FakeServing`
runs each session's Knative Service as a real harness (`python -m harness`) on a folder that
stands in for its PVC, with the real Claude Code CLI on the fake provider.

Everything is driven through the control plane's HTTP API, as a user would; the cluster is only
looked at (which objects exist) and broken (a pod killed, a Service deleted, as an operator or a
node failure would). One control plane and one cluster for the module; each test has its own
session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventing import signatures
from eventing.codec import to_binary
from eventing.events import PromptRequested, VwmEvent, new_event, prompt_job_id
from eventing.job_events import FINISHED
from functions.broker.knative_triggers import trigger_name
from functions.runtime.base import HarnessSpec
from functions.runtime.knative_objects import SessionNames, build
from functions.runtime.tokens import TokenKey
from functions.settings import KnativeSessionSettings
from tests.e2e.conftest import git, make_bare_repo
from tests.e2e.knative_plane import knative_plane
from tests.runtime.knative_cluster import (
    BROKER,
    HARNESS_IMAGE,
    NAMESPACE,
    TRIGGERS,
    Cluster,
    knative_cluster,
)
from tests.support.control_plane import ControlPlane, add_claude_workers, until
from tests.support.fake_broker import fake_broker
from tests.support.fake_knative import PVCS, SECRETS, SERVICES
from tests.support.sse import iter_sse

# One group: the module's tests share one cluster and one control plane, which must be the only
# one managing the namespace (its reconciler removes what no session of its own owns).
pytestmark = [pytest.mark.cli, pytest.mark.xdist_group("knative-end-to-end")]

USAGE = ("input", "cache_read", "cache_write", "output", "reasoning")
RETENTION = "VWM_SESSION_VOLUME_RETENTION"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("knative-e2e")


@pytest.fixture(scope="module")
def cluster(root: Path) -> Iterator[Cluster]:
    with knative_cluster(root / "cluster") as running:
        yield running


@pytest.fixture(scope="module")
def plane(root: Path, cluster: Cluster, fake_provider: Any) -> Iterator[ControlPlane]:
    with knative_plane(
        root,
        cluster,
        fake_provider.base_url,
        FAKE_PROVIDER_KEY=f"knative-{uuid.uuid4().hex[:8]}",
        VWM_EVENTING="knative",
    ) as plane:
        yield plane


def restarted(plane: ControlPlane, **env: str) -> ControlPlane:
    """The control plane stopped and started again with `env` changed."""
    plane.stop()
    plane.env.update(env)
    plane.start()
    return plane


@pytest.fixture
def deleting_plane(plane: ControlPlane) -> ControlPlane:
    """The control plane with the default volume retention (delete)."""
    if plane.env.get(RETENTION, "delete") != "delete":
        return restarted(plane, **{RETENTION: "delete"})
    return plane


def session_objects(cluster: Cluster, session_id: str) -> dict[str, dict[str, Any] | None]:
    """The session's objects in the cluster by kind (None: there is none)."""
    names = SessionNames.of(session_id)
    return {
        "pvc": cluster.api.get(PVCS, NAMESPACE, names.volume),
        "secret": cluster.api.get(SECRETS, NAMESPACE, names.secret),
        "service": cluster.api.get(SERVICES, NAMESPACE, names.service),
        "trigger": cluster.api.get(TRIGGERS, NAMESPACE, names.trigger),
    }


def start_session(client: httpx.Client, plane: ControlPlane, task_repo: Path) -> str:
    created = client.post(
        "/v1/sessions",
        json={"worker": "w", "session_repo": {"url": str(task_repo)}, "wait": False},
    )
    assert created.status_code == 202, created.text
    session_id = str(created.json()["id"])
    until(lambda: client.get(f"/v1/sessions/{session_id}").json()["status"] == "ready", plane)
    return session_id


def prompt(client: httpx.Client, session_id: str, text: str) -> dict[str, Any]:
    answer = client.post("/v1/prompts", json={"session_id": session_id, "prompt": text})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def finished(client: httpx.Client, job_id: str, plane: ControlPlane) -> dict[str, Any]:
    """The job once it has ended, polled as a client of an async prompt does."""

    def ended() -> dict[str, Any] | None:
        job = dict(client.get(f"/v1/jobs/{job_id}").json())
        return job if job["status"] in FINISHED else None

    return dict(until(ended, plane))


def billed(provider: Any, key: str) -> dict[str, int]:
    """What the provider billed for every model call made with `key`, side calls included."""
    return dict(provider.ledger.billed_usage(key=key).as_dict())


def telemetry_of(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    found = client.get("/v1/telemetry/requests", params={"session_id": session_id})
    return list(found.json()["items"])


def test_a_session_on_knative_prompts_survives_its_pod_and_service_and_ends_clean(
    deleting_plane: ControlPlane, cluster: Cluster, fake_provider: Any, root: Path
) -> None:
    plane = deleting_plane
    key = plane.env["FAKE_PROVIDER_KEY"]
    used_before = billed(fake_provider, key)
    task_repo = make_bare_repo(root / f"task-{uuid.uuid4().hex[:6]}.git", {"README.md": "# t\n"})
    with plane.client() as client:
        session_id = start_session(client, plane, task_repo)
        names = SessionNames.of(session_id)
        objects = session_objects(cluster, session_id)
        service, trigger = objects["service"], objects["trigger"]
        assert objects["pvc"] and objects["secret"] and service and trigger, objects
        assert trigger["spec"]["broker"] == BROKER
        assert trigger["spec"]["subscriber"]["ref"]["name"] == names.service
        assert cluster.serving.pods_of(names.service, NAMESPACE) == 1
        volume = cluster.serving.volume_path(NAMESPACE, names.volume)
        assert (volume / "session_repo" / "README.md").exists()  # cloned onto the claim

        # sync
        first = prompt(client, session_id, "write hello.txt")
        assert first["status"] == "succeeded", first
        assert first["result"]["final_text"] == "done: wrote hello.txt"
        cli_session = first["result"]["cli_session_id"]
        assert (volume / "session_repo" / "hello.txt").exists()

        # stream
        with client.stream(
            "POST",
            "/v1/prompts",
            json={"session_id": session_id, "prompt": "say hi", "mode": "stream"},
        ) as response:
            assert response.status_code == 200
            events = list(iter_sse(response))
        assert [events[0].event, events[-1].event] == ["job_started", "job_finished"]
        assert events[-1].json["data"]["summary"]["cli_session_id"] == cli_session

        # async: a prompt request, delivered to the session's harness; polled to its end
        queued = client.post(
            "/v1/prompts", json={"session_id": session_id, "prompt": "say hi", "mode": "async"}
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        job = finished(client, job_id, plane)
        assert job["status"] == "succeeded", job
        assert job["result"]["final_text"] == "hello from fake model"

        # The pod crashes: Knative starts another on the same claim; the CLI session resumes.
        killed = cluster.serving.kill_pod(names.service, NAMESPACE)
        after_crash = prompt(client, session_id, "say hi")
        assert after_crash["status"] == "succeeded", (after_crash, plane.log()[-4000:])
        assert after_crash["result"]["cli_session_id"] == cli_session
        assert cluster.serving.pid_of(names.service, NAMESPACE) not in (None, killed)

        # The Service is deleted (by an operator, or lost): the reconciler makes it again on
        # the same volume, and the CLI session resumes there.
        old_uid = service["metadata"]["uid"]
        deleted = httpx.delete(
            f"{cluster.url}/apis/serving.knative.dev/v1/namespaces/{NAMESPACE}/services/"
            f"{names.service}"
        )
        assert deleted.status_code == 200, deleted.text
        until(
            lambda: (
                (s := cluster.api.get(SERVICES, NAMESPACE, names.service)) is not None
                and s["metadata"]["uid"] != old_uid
            ),
            plane,
        )
        # Knative would hold a request to it until its pod is up; the fake gives it no address
        # before then.
        cluster.serving.wait_condition(names.service, "True", NAMESPACE, timeout=30)
        after_loss = prompt(client, session_id, "say hi")
        assert after_loss["status"] == "succeeded", (after_loss, plane.log()[-4000:])
        assert after_loss["result"]["cli_session_id"] == cli_session
        assert (volume / "session_repo" / "hello.txt").exists()

        ended = client.delete(f"/v1/sessions/{session_id}")
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended"
        assert session_objects(cluster, session_id) == dict.fromkeys(
            ("pvc", "secret", "service", "trigger")
        )
        refused = client.post("/v1/prompts", json={"session_id": session_id, "prompt": "say hi"})
        assert refused.status_code == 409

        records = telemetry_of(client, session_id)
        assert len(records) == 5
        total = {name: sum(r["tokens"][name] for r in records) for name in USAGE}
        used = billed(fake_provider, key)
        assert total == {name: used[name] - used_before[name] for name in USAGE}

    # The session's work was saved from the pod before its volume went.
    assert "hello.txt" in git("--git-dir", str(task_repo), "show", "--stat", "--format=%s", "main")
    until(lambda: not volume.exists(), plane, timeout=10)


def test_a_restarted_control_plane_keeps_the_pod_and_keep_retention_leaves_the_volume(
    plane: ControlPlane, cluster: Cluster, root: Path
) -> None:
    task_repo = make_bare_repo(root / f"task-{uuid.uuid4().hex[:6]}.git", {"README.md": "# t\n"})
    with plane.client() as client:
        session_id = start_session(client, plane, task_repo)
        first = prompt(client, session_id, "write hello.txt")
        assert first["status"] == "succeeded", first
    names = SessionNames.of(session_id)
    pod = cluster.serving.pid_of(names.service, NAMESPACE)

    # `vwm up` restarts mid-session, now keeping the volumes of ended sessions: the session's
    # healthy pod is found and kept, and its CLI session goes on.
    restarted(plane, **{RETENTION: "keep"})
    with plane.client() as client:
        again = prompt(client, session_id, "say hi")
        assert again["status"] == "succeeded", (again, plane.log()[-4000:])
        assert again["result"]["cli_session_id"] == first["result"]["cli_session_id"]
        assert cluster.serving.pid_of(names.service, NAMESPACE) == pod
        assert cluster.serving.revisions_of(names.service, NAMESPACE) == 1

        ended = client.delete(f"/v1/sessions/{session_id}")
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended"

    left = session_objects(cluster, session_id)
    assert (left["secret"], left["service"], left["trigger"]) == (None, None, None)
    assert left["pvc"] is not None  # kept for an operator, with the session's files on it
    volume = cluster.serving.volume_path(NAMESPACE, names.volume)
    assert (volume / "session_repo" / "hello.txt").read_text() == "hello from fake model\n"


def test_a_subscription_is_a_trigger_on_the_knative_broker(
    plane: ControlPlane, cluster: Cluster
) -> None:
    name = f"ends-{uuid.uuid4().hex[:6]}"
    trigger = trigger_name(name)
    with plane.client() as client:
        made = client.post(
            "/v1/subscriptions",
            json={
                "name": name,
                "filters": [{"exact": {"type": "dev.vwm.session.ended"}}],
                "sink": "http://127.0.0.1:9/ends",
            },
        )
        assert made.status_code == 201, made.text
        found = cluster.api.get(TRIGGERS, NAMESPACE, trigger)
        assert found is not None
        assert found["spec"]["broker"] == BROKER
        assert found["spec"]["subscriber"] == {"uri": "http://127.0.0.1:9/ends"}
        assert client.delete(f"/v1/subscriptions/{name}").status_code in (200, 204)
        assert cluster.api.get(TRIGGERS, NAMESPACE, trigger) is None


def test_a_prompt_request_reaches_the_harness_through_the_sessions_trigger(
    plane: ControlPlane, cluster: Cluster, root: Path
) -> None:
    """The production delivery path: a Knative Broker (the fake) delivers what the session's
    Trigger selects to its harness. Only requests signed for the session pass the filter; the
    harness runs the job inside the delivery and answers 202 with no body (nothing published
    back into the broker)."""
    task_repo = make_bare_repo(root / f"task-{uuid.uuid4().hex[:6]}.git", {"README.md": "# t\n"})
    with plane.client() as client:
        session_id = start_session(client, plane, task_repo)
        other_id = start_session(client, plane, task_repo)
    names = SessionNames.of(session_id)
    token = TokenKey.in_folder(plane.data_dir).token(session_id)

    def request(for_session: str, signed_with: str | None) -> VwmEvent:
        event = new_event(
            PromptRequested(prompt="say hi"),
            source="/tests/ticket-bot",
            session_id=for_session,
            event_id=f"req-{uuid.uuid4().hex[:12]}",
        )
        return signatures.signed(signed_with, event) if signed_with else event

    unsigned = request(session_id, None)
    for_another = request(other_id, token)  # signed with this session's token: not its own
    signed = request(session_id, token)
    with fake_broker(cluster.api, [(NAMESPACE, BROKER)], attempt_timeout_s=90) as broker:
        for event in (unsigned, for_another, signed):
            headers, body = to_binary(event)
            ingress = httpx.post(
                broker.ingress_url(NAMESPACE, BROKER), headers=headers, content=body
            )
            assert ingress.status_code == 202, ingress.text
        broker.wait_idle(timeout=90)

        delivered = broker.attempts_of(names.trigger)
        assert [(a.event_id, a.status) for a in delivered] == [(signed.id, 202)]
        # The other session's Trigger took its request (the filter is on sessionid), and its
        # harness refused it: the signature is not for that session. Never retried (401).
        other = broker.attempts_of(SessionNames.of(other_id).trigger)
        assert [(a.event_id, a.status) for a in other] == [(for_another.id, 401)]
        assert {event["id"] for _, event in broker.received} == {
            unsigned.id,
            for_another.id,
            signed.id,
        }  # no reply events

    service = cluster.api.get(SERVICES, NAMESPACE, names.service)
    assert service is not None
    job_id = prompt_job_id(signed.source, signed.id)
    job = httpx.get(
        f"{service['status']['address']['url']}/v1/jobs/{job_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "succeeded", job.json()
    with plane.client() as client:
        for ending in (session_id, other_id):
            assert client.delete(f"/v1/sessions/{ending}").status_code == 200


def test_the_reconciler_removes_what_no_session_owns(
    deleting_plane: ControlPlane, cluster: Cluster, root: Path
) -> None:
    """Objects of a session the control plane has no row for (another control plane's crash
    between its provision and the row's commit, a restored database): the Service, Trigger
    and Secret go at the next tick, and so does the volume (retention: delete)."""
    plane = deleting_plane
    stray = f"gone-{uuid.uuid4().hex[:8]}"
    objects = build(
        HarnessSpec(
            session_id=stray,
            cli="claude",
            cli_bin=None,
            model=None,
            provider_base_url=None,
            credential_env={},
            job_timeout_s=None,
            worker="w",
        ),
        token="t",
        namespace=NAMESPACE,
        broker=BROKER,
        sessions=KnativeSessionSettings(harness_image=HARNESS_IMAGE),
    )
    cluster.api.put(PVCS, NAMESPACE, objects.volume)
    cluster.api.put(SECRETS, NAMESPACE, objects.secret)
    cluster.api.put(TRIGGERS, NAMESPACE, objects.trigger)
    # Not ours at all (no VWM labels): never touched.
    cluster.api.put(
        PVCS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "someone-elses"},
            "spec": objects.volume["spec"],
        },
    )

    until(lambda: not any(session_objects(cluster, stray).values()), plane)
    assert cluster.api.get(PVCS, NAMESPACE, "someone-elses") is not None


def test_a_runtimes_image_and_limits_shape_its_sessions_pods(
    plane: ControlPlane, cluster: Cluster, fake_provider: Any, root: Path
) -> None:
    repo = make_bare_repo(root / f"small-{uuid.uuid4().hex[:6]}.git", {"README.md": "# k\n"})
    with plane.client() as admin:
        add_claude_workers(admin, fake_provider.base_url, repo, {"small-w": {}}, runtime="small")
        patched = admin.patch(
            "/v1/admin/runtimes/small",
            json={
                "image": "registry.example/vwm-harness-small:2",
                "limits": {"cpu": "250m", "memory": "768Mi"},
            },
        )
        assert patched.status_code == 200, patched.text
        created = admin.post("/v1/sessions", json={"worker": "small-w", "wait": False})
        assert created.status_code == 202, created.text
        session_id = str(created.json()["id"])
        until(lambda: admin.get(f"/v1/sessions/{session_id}").json()["status"] == "ready", plane)

        service = cluster.api.get(SERVICES, NAMESPACE, SessionNames.of(session_id).service)
        assert service is not None
        (container,) = service["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example/vwm-harness-small:2"
        assert container["resources"]["requests"] == {"cpu": "250m", "memory": "768Mi"}
        assert container["resources"]["limits"]["memory"] == "768Mi"
        assert admin.delete(f"/v1/sessions/{session_id}").status_code == 200
