"""The session page's file browser: folders, breadcrumbs, a file a job wrote, binary and large
files, a diff's link to its file, and paths outside the workspace refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import CONSOLE_GROUP, Console, screenshot, sign_in
from tests.console.live_sessions import JOB_TIMEOUT_MS, prompt, running_session

pytestmark = CONSOLE_GROUP

SHOWN_BYTES = 256 * 1024  # what the browser shows of one file (file_browser.js MAX_SHOWN_BYTES)


@pytest.fixture
def written_session(console: Console) -> Iterator[dict[str, Any]]:
    """A ready session whose job wrote session_repo/notes.md; `job_id` is that job's."""
    with running_session(console) as session:
        written = prompt(console, session["id"], "write notes.md")
        assert written["status"] == "succeeded", written
        yield {**session, "job_id": written["id"]}


def put_file(console: Console, session_id: str, path: str, data: bytes) -> None:
    with console.plane.client() as admin:
        admin.put(
            f"/v1/sessions/{session_id}/files/content", params={"path": path}, content=data
        ).raise_for_status()


def crumbs(page) -> list[str]:
    return page.locator("#files-crumbs [data-crumb]").all_inner_texts()


def test_browse_to_the_file_a_job_wrote_and_back_up(
    page, console: Console, written_session
) -> None:
    sign_in(page, console)
    page.goto(f"{console.url}#/sessions/{written_session['id']}")
    page.click("#tab-files")
    page.wait_for_selector("#files-list tr[data-entry=session_repo][data-type=dir]")
    assert crumbs(page) == ["workspace"]
    assert page.locator("#files-list tr[data-entry=worker_repo]").count() == 1
    page.click("#files-list tr[data-entry=session_repo] a")
    page.wait_for_selector("#files-list tr[data-entry='session_repo/notes.md']")
    assert crumbs(page) == ["workspace", "session_repo"]
    page.click("#files-list tr[data-entry='session_repo/notes.md'] a")
    page.wait_for_selector("#file-content")
    assert page.inner_text("#file-content") == "hello from fake model\n"
    assert page.inner_text("#file-path") == "session_repo/notes.md"
    # Where the browser is stays in the URL: a reload lands on the same file.
    assert "tab=files" in page.url and "file=session_repo%2Fnotes.md" in page.url
    screenshot(page, "file-browser")
    page.reload()
    page.wait_for_selector("#file-content")
    assert page.inner_text("#file-content") == "hello from fake model\n"
    assert crumbs(page) == ["workspace", "session_repo"]

    page.click("#files-crumbs a[data-crumb='.']")  # back up to the workspace's root
    page.wait_for_selector("#files-list tr[data-entry=worker_repo]")
    assert crumbs(page) == ["workspace"]
    assert page.locator("#file-content").count() == 0
    # Read-only: nothing offers to write or delete.
    assert (
        page.locator("#files-panel button, #files-panel input, #files-panel textarea").count() == 0
    )


def test_binary_and_large_files_are_shown_safely(page, console: Console, live_session) -> None:
    session_id = live_session["id"]
    put_file(console, session_id, "session_repo/logo.bin", bytes(range(256)) * 4)
    large = "".join(f"line {n:07d}\n" for n in range(40_000)).encode()  # 520,000 bytes
    put_file(console, session_id, "session_repo/big.txt", large)
    put_file(console, session_id, "session_repo/docs/héllo.md", "# ünïcode ✓\n".encode())
    sign_in(page, console)
    page.goto(f"{console.url}#/sessions/{session_id}?tab=files&path=session_repo")
    page.wait_for_selector("#files-list tr[data-entry='session_repo/logo.bin']")

    page.click("#files-list tr[data-entry='session_repo/logo.bin'] a")
    page.wait_for_selector("#file-binary")
    assert page.inner_text("#file-binary") == "binary file, 1,024 bytes"
    assert page.locator("#file-content").count() == 0

    page.click("#files-list tr[data-entry='session_repo/big.txt'] a")
    page.wait_for_selector("#file-content")
    assert page.inner_text("#file-note") == ("A large file: showing the first 256 KiB of 508 KiB.")
    shown = page.eval_on_selector("#file-content", "el => el.textContent")
    assert len(shown) == SHOWN_BYTES and large.decode().startswith(shown)

    page.click("#files-list tr[data-entry='session_repo/docs'] a")
    page.click("#files-list tr[data-entry='session_repo/docs/héllo.md'] a")
    page.wait_for_selector("#file-content")
    assert page.inner_text("#file-content") == "# ünïcode ✓\n"
    assert crumbs(page) == ["workspace", "session_repo", "docs"]
    page.click("#files-crumbs a[data-crumb=session_repo]")
    page.wait_for_selector("#files-list tr[data-entry='session_repo/big.txt']")


def test_a_diff_in_the_job_view_opens_its_file(page, console: Console, written_session) -> None:
    sign_in(page, console)
    page.goto(f"{console.url}#/jobs/{written_session['job_id']}")
    link = page.locator("#events .diff-head a")
    link.wait_for(timeout=JOB_TIMEOUT_MS)
    assert link.inner_text() == "session_repo/notes.md"
    link.click()
    page.wait_for_selector("#file-content")
    assert page.inner_text("#file-content") == "hello from fake model\n"
    assert page.get_attribute("#tab-files", "aria-selected") == "true"
    assert page.locator("#files-list tr.selected").get_attribute("data-entry") == (
        "session_repo/notes.md"
    )


def test_a_path_outside_the_workspace_cannot_be_reached(
    refusing_page, console: Console, live_session
) -> None:
    page = refusing_page
    sign_in(page, console)
    for place in (
        "path=..",
        "path=%2Fetc",
        "path=session_repo%2F..%2F..",
        "file=..%2F..%2Fetc%2Fpasswd",
    ):
        page.goto(f"{console.url}#/sessions/{live_session['id']}?tab=files&{place}")
        page.reload()  # the same document otherwise: start afresh at the place the URL names
        refused = page.locator("#files-error:not([hidden]), #file-error").first
        refused.wait_for()
        assert refused.inner_text().endswith("(path_outside_workspace)"), (
            place,
            refused.inner_text(),
        )
        assert page.locator("#file-content").count() == 0
        assert page.locator("#files-list tr[data-entry]").count() == 0
    assert 400 in page.refused
