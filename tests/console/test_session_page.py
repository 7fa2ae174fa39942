"""The session page (#/sessions/<id>): its facts and activity, its jobs, the prompt box (sync
mode here; the streamed mode is test_job_view's), refusals shown with their code, and ending the
session after a confirm step."""

from __future__ import annotations

import re

from tests.console.conftest import CONSOLE_GROUP, Console, screenshot, sign_in
from tests.console.live_sessions import (
    JOB_TIMEOUT_MS,
    end_session,
    job,
    prompt,
    running_session,
)

pytestmark = CONSOLE_GROUP


def open_session(page, console: Console, session_id: str) -> None:
    page.goto(f"{console.url}#/sessions/{session_id}")
    page.wait_for_selector("#session-facts dd")


def test_the_page_shows_the_session_runs_a_sync_prompt_and_lists_its_jobs(
    page, console: Console
) -> None:
    with running_session(console, budget={"tokens": 1_000_000}) as session:
        first = prompt(console, session["id"], "write notes.md")
        sign_in(page, console, console.client_key)
        open_session(page, console, session["id"])
        assert page.inner_text("#session-status") == "ready"
        assert page.inner_text("#session-worker") == "w"
        assert page.locator("#session-worker a").count() == 0  # a client key: no worker page
        assert page.inner_text("#activity-jobs") == "1"
        tokens = sum(first["result"]["usage"].values()) - first["result"]["usage"]["reasoning"]
        assert page.inner_text("#activity-tokens").startswith(f"{tokens:,}")
        assert page.inner_text("#activity-cost").startswith("$")
        assert "of 1,000,000 used" in page.inner_text("#session-budget")
        row = page.locator(f"#jobs tr[data-job='{first['id']}']")
        assert "succeeded" in row.inner_text() and "write notes.md" in row.inner_text()
        assert page.is_visible("#prompt-form")
        assert "waits until the job has finished" in page.inner_text("label:has(#mode-sync)")

        page.check("#mode-sync")
        page.fill("#prompt", "say hello")
        page.click("#run-prompt")
        page.wait_for_url(re.compile(r"#/jobs/[0-9a-f]+$"), timeout=JOB_TIMEOUT_MS)
        second = page.url.rsplit("/", 1)[1]
        # Sync answered when the job had ended: its view opens on a finished job.
        page.wait_for_selector("#job-status [data-status=succeeded]")
        assert job(console, second)["mode"] == "sync"
        page.wait_for_selector("#stream-state[data-state=ended]")
        assert page.locator("#events .event.assistant .text").all_inner_texts() == [
            "hello from fake model"
        ]

        page.click("#job-session")  # back to the session, whose jobs are newest first
        page.wait_for_selector(f"#jobs tr[data-job='{second}']")
        assert page.locator("#jobs tr[data-job]").evaluate_all(
            "rows => rows.map(r => r.dataset.job)"
        ) == [second, first["id"]]
        page.wait_for_function("document.querySelector('#activity-jobs').textContent === '2'")
        page.click(f"#jobs tr[data-job='{second}'] a")
        page.wait_for_selector("#job-status [data-status=succeeded]")
        page.go_back()
        page.wait_for_selector(f"#jobs tr[data-job='{second}']")
        page.fill("#prompt", "write notes.md")
        screenshot(page, "session-page")


def test_a_starting_session_is_followed_until_it_is_ready(page, console: Console) -> None:
    sign_in(page, console)  # first: the page opens while the harness still starts
    with console.plane.client() as admin:
        made = admin.post("/v1/sessions", json={"worker": "w", "wait": False})
        made.raise_for_status()
    session = made.json()
    try:
        assert session["status"] == "provisioning"
        open_session(page, console, session["id"])
        page.evaluate("window.stillTheSamePage = true")
        assert page.inner_text("#session-status") == "provisioning"
        assert page.is_hidden("#prompt-form") and page.is_disabled("#end-session")
        page.wait_for_selector("#session-status [data-status=ready]", timeout=JOB_TIMEOUT_MS)
        page.wait_for_selector("#prompt-form:not([hidden])")
        assert page.is_enabled("#end-session")
        assert page.evaluate("window.stillTheSamePage") is True  # refreshed, not reloaded
    finally:
        end_session(console, session["id"])


def test_a_refused_prompt_shows_the_apis_message_and_code(
    refusing_page, console: Console, live_session
) -> None:
    page = refusing_page
    busy = prompt(console, live_session["id"], "sleep 20", mode="async")
    try:
        sign_in(page, console)
        open_session(page, console, live_session["id"])
        page.fill("#prompt", "say hello")
        page.click("#run-prompt")
        page.wait_for_selector("#prompt-error:not([hidden])", timeout=JOB_TIMEOUT_MS)
        assert page.inner_text("#prompt-error").endswith("(session_busy)")
        assert 409 in page.refused
        assert page.url.endswith(f"#/sessions/{live_session['id']}")  # no job to open
        assert page.input_value("#prompt") == "say hello"  # kept, to try again
    finally:
        with console.plane.client() as admin:
            admin.post(f"/v1/jobs/{busy['id']}/cancel")


def test_ending_the_session_asks_first_and_can_skip_learning(
    page, console: Console, live_session
) -> None:
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    sign_in(page, console)
    open_session(page, console, live_session["id"])
    assert page.is_enabled("#end-session")
    page.click("#end-session")
    assert page.is_visible("#end-confirm") and page.is_checked("#end-learn")
    page.click("#end-confirm-no")  # changed its mind: nothing happens
    assert page.is_hidden("#end-confirm") and not deletes

    page.click("#end-session")
    page.uncheck("#end-learn")
    page.click("#end-confirm-yes")
    page.wait_for_selector("#session-status [data-status=ended]", timeout=JOB_TIMEOUT_MS)
    assert len(deletes) == 1
    assert deletes[0].endswith(f"/v1/sessions/{live_session['id']}?learn=false")
    assert "Session ended." in page.inner_text("#banner")
    assert page.is_disabled("#end-session")
    assert page.is_hidden("#prompt-form")
    assert page.is_hidden("#end-confirm")
    assert "session_repo" in page.inner_text("#session-result")
    page.click("#tab-files")
    assert "only while the session is ready; it is ended" in page.inner_text("#files-unavailable")
    assert page.is_hidden("#files-list")


def test_an_unknown_session_says_so(refusing_page, console: Console) -> None:
    sign_in(refusing_page, console)
    refusing_page.goto(f"{console.url}#/sessions/nosuchsession")
    refusing_page.wait_for_selector("main p.error")
    assert refusing_page.inner_text("main p.error").endswith("(not_found)")
    assert 404 in refusing_page.refused
