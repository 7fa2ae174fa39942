"""The sessions list: what each row says (checked against the API), its filters, and that it
follows changes without a reload."""

from __future__ import annotations

from tests.console.conftest import CONSOLE_GROUP, Console, screenshot, sign_in
from tests.console.live_sessions import end_session, prompt, running_session

pytestmark = CONSOLE_GROUP


def _row(page, session_id: str):
    return page.locator(f"#sessions tr[data-session='{session_id}']")


def _cells(page, session_id: str) -> dict[str, str]:
    headings = page.locator("#sessions th").all_inner_texts()
    return dict(zip(headings, _row(page, session_id).locator("td").all_inner_texts(), strict=True))


def test_a_row_says_what_the_session_did_and_follows_it_live(page, console: Console) -> None:
    with running_session(console) as session:
        sid = session["id"]
        prompt(console, sid, "say hello")
        with console.plane.client() as admin:
            activity = admin.get(f"/v1/sessions/{sid}").json()["activity"]
        sign_in(page, console, console.client_key)
        _row(page, sid).wait_for()
        cells = _cells(page, sid)
        assert cells["Worker"] == "w" and cells["Status"] == "ready"
        assert cells["Jobs"] == "1"
        tokens = activity["tokens"]
        total = tokens["input"] + tokens["cache_read"] + tokens["cache_write"] + tokens["output"]
        assert total > 0 and cells["Tokens"] == f"{total:,}"
        assert cells["Cost"].startswith("$") or cells["Cost"] == "cost unknown"
        assert cells["Last activity"].endswith("ago")
        screenshot(page, "sessions")

        end_session(console, sid)  # the open page sees it end, without a reload
        _row(page, sid).locator("[data-status=ended]").wait_for(timeout=30_000)


def test_filters_narrow_the_list_and_stay_in_the_url(page, console: Console) -> None:
    with running_session(console) as session:
        sid = session["id"]
        sign_in(page, console)
        _row(page, sid).wait_for()

        page.select_option("#filter-status", "ended")
        _row(page, sid).wait_for(state="detached")
        assert "status=ended" in page.url

        page.select_option("#filter-status", "ready")
        _row(page, sid).wait_for()
        page.reload()  # the filter is kept in the URL
        _row(page, sid).wait_for()
        assert page.locator("#filter-status").input_value() == "ready"

        page.fill("#filter-worker", "nobody")
        page.press("#filter-worker", "Enter")
        page.get_by_text("No sessions match").wait_for()
        assert "worker=nobody" in page.url
