"""Workers, sessions and the three prompt modes against the fake control plane."""

from __future__ import annotations

import httpx
import pytest

from tests.sdk.fake_control_plane import FakeControlPlane
from vwm import (
    Client,
    ConflictError,
    JobResult,
    NotFoundError,
    ServerError,
    SessionBusyError,
    ValidationError,
)
from vwm.errors import SessionFailedError, WaitTimeoutError
from vwm.sdk.models import Event


class TestSessions:
    def test_start_waits_for_a_ready_session(
        self, client: Client, worker_ready: str, fake: FakeControlPlane
    ):
        repo = {"url": "file:///task.git", "branch": "main"}
        session = client.worker(worker_ready).session(session_repo=repo)
        assert (session.id, session.status, session.worker) == ("ses_1", "ready", "reviewer")
        assert fake.recorded("POST", "/v1/sessions")[0].body == {
            "worker": "reviewer",
            "wait": True,
            "session_repo": repo,
        }

    def test_start_without_waiting_then_wait_ready(self, client: Client, worker_ready: str):
        session = client.worker(worker_ready).session(wait=False)
        assert session.status == "provisioning"
        assert session.wait_ready(poll_s=0.01).status == "ready"

    def test_wait_ready_on_a_failed_session(
        self, client: Client, worker_ready: str, fake: FakeControlPlane
    ):
        session = client.worker(worker_ready).session(wait=False)
        fake.sessions[session.id]["status"] = "failed"
        with pytest.raises(SessionFailedError):
            session.wait_ready(poll_s=0.01)

    def test_an_unknown_worker(self, client: Client):
        with pytest.raises(NotFoundError, match="no worker 'ghost'"):
            client.worker("ghost").session()

    def test_listing_follows_pages(self, client: Client, worker_ready: str, fake: FakeControlPlane):
        worker = client.worker(worker_ready)
        started = [worker.session().id for _ in range(5)]
        assert [s.id for s in worker.sessions()] == started
        cursors = [r.query.get("cursor") for r in fake.recorded("GET", "/v1/sessions")]
        assert cursors == [None, "2", "4"]  # pages of two
        assert all(r.query["worker"] == "reviewer" for r in fake.recorded("GET", "/v1/sessions"))

    def test_listing_by_status(self, client: Client, worker_ready: str):
        worker = client.worker(worker_ready)
        first, _second = worker.session(), worker.session()
        first.end()
        assert [s.id for s in worker.sessions(status="ended")] == [first.id]

    def test_the_context_manager_ends_the_session(
        self, client: Client, worker_ready: str, fake: FakeControlPlane
    ):
        with client.worker(worker_ready).session() as session:
            assert session.status == "ready"
        assert session.status == "ended"
        assert fake.sessions[session.id]["status"] == "ended"

    def test_the_context_manager_does_not_hide_the_bodys_error(
        self, client: Client, worker_ready: str, fake: FakeControlPlane
    ):
        with (
            pytest.raises(RuntimeError, match="boom") as caught,
            client.worker(worker_ready).session() as session,
        ):
            del fake.sessions[session.id]  # ending it will now fail with not_found
            raise RuntimeError("boom")
        assert caught.value.__notes__ == [
            f"ending session {session.id} failed too: [not_found] no session 'ses_1'"
        ]

    def test_ending_twice_is_harmless(self, client: Client, worker_ready: str):
        session = client.worker(worker_ready).session()
        assert session.end().status == "ended"
        assert session.end().status == "ended"

    def test_an_end_that_fails(self, client: Client, worker_ready: str, fake: FakeControlPlane):
        session = client.worker(worker_ready).session()
        fake.end_fails = True
        with pytest.raises(ServerError) as caught:
            session.end()
        assert (caught.value.status, caught.value.code) == (502, "push_failed")
        assert caught.value.message == "the push was rejected"

    def test_refresh_and_get(self, client: Client, worker_ready: str, fake: FakeControlPlane):
        session = client.worker(worker_ready).session()
        fake.sessions[session.id]["status"] = "ending"
        assert session.refresh().status == "ending"
        assert client.get_session(session.id).status == "ending"


@pytest.fixture
def session(client: Client, worker_ready: str):
    return client.worker(worker_ready).session()


class TestPrompts:
    def test_a_sync_prompt_returns_the_result(self, session, fake: FakeControlPlane):
        result = session.prompt("say hello", timeout_s=30)
        assert result.ok
        assert (result.job_id, result.status, result.final_text) == (
            "job_1",
            "succeeded",
            "Hello, world\nDone.",
        )
        assert (result.usage.input, result.usage.cache_read, result.usage.output) == (10, 100, 20)
        assert (result.cost_usd, result.cost_source, result.cli_session_id) == (
            0.0123,
            "reported",
            "cli-1",
        )
        assert result.error is None
        body = fake.recorded("POST", "/v1/prompts")[0].body
        assert body == {
            "session_id": session.id,
            "prompt": "say hello",
            "mode": "sync",
            "timeout_s": 30,
        }

    def test_a_failed_job_is_a_result_not_an_exception(self, session):
        result = session.prompt("fail please")
        assert (result.ok, result.status, result.error) == (False, "failed", "the model refused")

    def test_the_idempotency_key_is_passed_through(self, session, fake: FakeControlPlane):
        first = session.submit("say hello", idempotency_key="retry-1")
        again = session.submit("say hello", idempotency_key="retry-1")
        assert first.id == again.id == "job_1"
        assert [r.body["idempotency_key"] for r in fake.recorded("POST", "/v1/prompts")] == [
            "retry-1"
        ] * 2
        first.wait(poll_s=0.01)
        assert session.prompt("x", idempotency_key="k").job_id == "job_2"
        assert list(session.stream("y", idempotency_key="k2"))[-1].job_id == "job_3"
        assert [r.body.get("idempotency_key") for r in fake.recorded("POST", "/v1/prompts")][
            2:
        ] == ["k", "k2"]

    def test_a_busy_session(self, session, fake: FakeControlPlane):
        fake.async_polls = 5
        session.submit("long work")
        with pytest.raises(SessionBusyError) as caught:
            session.prompt("another")
        assert (caught.value.status, caught.value.code) == (409, "session_busy")

    def test_an_invalid_prompt(self, session):
        with pytest.raises(ValidationError):
            session.prompt("")

    def test_submit_then_wait(self, session, fake: FakeControlPlane):
        fake.async_polls = 2
        job = session.submit("say hello")
        assert (job.id, job.status, job.session_id) == ("job_1", "queued", session.id)
        result = job.wait(poll_s=0.01)
        assert (result.status, result.final_text) == ("succeeded", "Hello, world\nDone.")
        assert len(fake.recorded("GET", "/v1/jobs/job_1")) == 3  # running, running, succeeded

    def test_wait_gives_up_at_its_timeout(self, session, fake: FakeControlPlane):
        fake.async_polls = 1000
        job = session.submit("say hello")
        with pytest.raises(WaitTimeoutError):
            job.wait(poll_s=0.01, timeout_s=0.05)
        assert job.status == "running"

    def test_cancel(self, session, client: Client, fake: FakeControlPlane):
        fake.async_polls = 5
        job = session.submit("say hello")
        assert job.cancel().status == "cancelled"
        assert client.get_job(job.id).status == "cancelled"

    def test_an_unknown_job(self, client: Client):
        with pytest.raises(NotFoundError):
            client.get_job("job_nope")

    def test_a_prompt_to_an_ended_session(self, session):
        session.end()
        with pytest.raises(ConflictError, match="ended"):
            session.prompt("hello")


class TestJobResult:
    def test_a_flat_job_document(self):
        result = JobResult.from_job(
            {
                "id": "job_9",
                "status": "succeeded",
                "final_text": "ok",
                "usage": {"input": 1, "output": 2},
                "cost_usd": None,
                "cost_source": None,
                "cli_session_id": "abc",
            }
        )
        assert (result.job_id, result.final_text, result.usage.output, result.cost_usd) == (
            "job_9",
            "ok",
            2,
            None,
        )

    def test_the_harness_shape(self):
        result = JobResult.from_job(
            {
                "job_id": "job_8",
                "status": "failed",
                "summary": {"final_text": "", "error": "cli died"},
                "error": None,
            }
        )
        assert (result.job_id, result.status, result.error) == ("job_8", "failed", "cli died")

    def test_from_an_event_that_is_not_the_end(self):
        with pytest.raises(ValueError, match="job_finished"):
            JobResult.from_event(Event(seq=1, kind="job_started"))


def test_a_sync_prompt_has_no_read_timeout_without_timeout_s():
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "job_1", "status": "succeeded"})

    with Client("http://cp.test", "vwm_k_s", transport=httpx.MockTransport(handle)) as client:
        from vwm import VWSession

        session = VWSession(client, {"id": "ses_1"})
        session.prompt("a")
        session.prompt("b", timeout_s=100)
    assert seen[0].extensions["timeout"]["read"] is None
    assert seen[1].extensions["timeout"]["read"] == 160
