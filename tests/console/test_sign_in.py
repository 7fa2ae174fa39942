"""Signing in to the console, the scopes it shows, and what the server sends with its files."""

from __future__ import annotations

import httpx

from tests.console.conftest import CONSOLE_GROUP, Console, sign_in

pytestmark = CONSOLE_GROUP


def test_the_console_files_need_no_key_and_carry_a_strict_policy(console: Console) -> None:
    base = console.plane.url
    redirect = httpx.get(f"{base}/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
    page = httpx.get(f"{base}/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{base}/ui/static/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{base}/ui/static/js/nothing.js").status_code == 404
    # Outside /ui everything still needs a key, including paths that only look like the console's.
    assert httpx.get(f"{base}/v1/sessions").status_code == 401
    assert httpx.get(f"{base}/uix").status_code == 401


def test_a_wrong_key_is_refused_with_what_to_do(page, console: Console) -> None:
    page.goto(console.url)
    page.fill("#api-key", "vwm_nosuchkey_0000")
    page.click("#sign-in button[type=submit]")
    error = page.locator("#sign-in-error")
    error.wait_for()
    assert "not known" in error.inner_text() and "vwm key create" in error.inner_text()
    assert page.locator("#nav").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_an_admin_key_sees_everything_and_stays_out_of_urls(page, console: Console) -> None:
    sign_in(page, console)
    for name in ("sessions", "telemetry", "workers", "runtimes", "instructions"):
        assert page.locator(f"[data-nav={name}]").is_visible(), name
    assert page.locator("#who").inner_text() == "admin key"
    assert console.plane.admin_key not in page.url
    assert page.evaluate("sessionStorage.getItem('vwm.apiKey')") == console.plane.admin_key
    page.reload()  # the tab keeps its key
    page.wait_for_selector("#sessions")
    page.click("#sign-out")
    page.wait_for_selector("#api-key")
    assert page.evaluate("sessionStorage.length") == 0


def test_a_client_key_sees_sessions_and_telemetry_only(page, console: Console) -> None:
    sign_in(page, console, console.client_key)
    assert page.locator("[data-nav=sessions]").is_visible()
    assert page.locator("[data-nav=telemetry]").is_visible()
    for name in ("workers", "runtimes", "instructions"):
        assert page.locator(f"[data-nav={name}]").is_hidden(), name
    page.goto(console.url + "#/workers")
    assert "needs an admin key" in page.locator("main").inner_text()


def test_a_new_tab_starts_signed_out(browser, page, console: Console) -> None:
    sign_in(page, console)
    other = browser.new_context().new_page()
    try:
        other.goto(console.url)
        other.wait_for_selector("#api-key")
    finally:
        other.context.close()
