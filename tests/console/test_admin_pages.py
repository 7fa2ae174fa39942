"""The console's admin pages: workers and runtimes listed and edited in the browser (the change
read back through the API; a value the API refuses shows its 422 beside the field and changes
nothing), and the global instructions with their version history, diff and restore."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.console.conftest import (
    CONSOLE_GROUP,
    Console,
    allow_http_errors,
    screenshot,
    sign_in,
)

pytestmark = CONSOLE_GROUP

WORKER = "console-edit"
RUNTIME = "console-rt"
UNSET_VARIABLE = "VWM_CONSOLE_TEST_UNSET_KEY"


@pytest.fixture(scope="module")
def editable(console: Console) -> Iterator[None]:
    """A runtime and a worker of their own to edit (copies of `c` and `w`), so the other console
    tests keep `w` as it was."""
    with console.plane.client() as admin:
        base = admin.get("/v1/admin/runtimes/c").json()
        fields = ("cli", "cli_version", "default_model", "provider_base_url", "credential_ref")
        admin.post(
            "/v1/admin/runtimes", json={"name": RUNTIME, **{k: base[k] for k in fields}}
        ).raise_for_status()
        worker = admin.get("/v1/admin/workers/w").json()
        admin.post(
            "/v1/admin/workers",
            json={
                "name": WORKER,
                "runtime": RUNTIME,
                "repo_url": worker["repo_url"],
                "instructions": "Answer in English.",
            },
        ).raise_for_status()
        yield
        admin.delete(f"/v1/admin/workers/{WORKER}")
        admin.delete(f"/v1/admin/runtimes/{RUNTIME}")


def api_get(console: Console, path: str) -> dict:
    with console.plane.client() as admin:
        answer = admin.get(path)
    answer.raise_for_status()
    return answer.json()


def saved(page, text: str) -> None:
    expect(page.locator("#banner.info")).to_contain_text(text)


def test_edit_a_worker(page, console: Console, editable: None) -> None:
    allow_http_errors(page, 422)  # the refused timeout below
    sign_in(page, console)
    page.goto(console.url + "#/workers")
    row = page.locator(f"tr[data-worker='{WORKER}']")
    expect(row).to_contain_text(RUNTIME)
    expect(row).to_contain_text("off")  # learning
    expect(row).to_contain_text("no limits")  # budget
    expect(page.locator("tr[data-worker=w]")).to_be_visible()
    screenshot(page, "workers")

    row.locator(f"a[data-worker-link='{WORKER}']").click()
    form = page.locator("#worker-form")
    expect(form.locator("#worker-form-instructions")).to_have_value("Answer in English.")
    before = api_get(console, f"/v1/admin/workers/{WORKER}")
    form.locator("#worker-form-instructions").fill("Answer in French.\nBe brief.")
    form.locator("#worker-form-timeouts-job_s").fill("120")
    form.locator("#worker-form-auto_learning").check()
    form.locator("#worker-form-learning_mode").select_option("review")
    form.locator("button[type=submit]").click()
    saved(page, f"Saved worker {WORKER}")

    after = api_get(console, f"/v1/admin/workers/{WORKER}")
    assert after["instructions"] == "Answer in French.\nBe brief."
    assert after["timeouts"]["job_s"] == 120
    assert after["auto_learning"] is True and after["learning_mode"] == "review"
    assert after["revision"] > before["revision"]
    assert after["repo_url"] == before["repo_url"]  # only what changed was sent
    expect(page.locator("#worker-revision")).to_have_text(str(after["revision"]))

    # A timeout the API refuses: its message beside the field, and nothing saved, not even the
    # instructions changed in the same submit.
    form.locator("#worker-form-instructions").fill("Answer in German.")
    form.locator("#worker-form-timeouts-job_s").fill("-5")
    form.locator("button[type=submit]").click()
    problem = form.locator("[data-error-for='timeouts.job_s']")
    expect(problem).to_contain_text("greater than 0")
    expect(form.locator("#worker-form-error")).to_contain_text("invalid_request")
    assert api_get(console, f"/v1/admin/workers/{WORKER}") == after

    # Correcting it saves what the form still holds, the instructions too.
    form.locator("#worker-form-timeouts-job_s").fill("")
    form.locator("button[type=submit]").click()
    saved(page, f"Saved worker {WORKER}")
    fixed = api_get(console, f"/v1/admin/workers/{WORKER}")
    assert fixed["timeouts"]["job_s"] is None
    assert fixed["instructions"] == "Answer in German."
    expect(form.locator("[data-error-for='timeouts.job_s']")).to_be_empty()


def test_edit_a_runtime(page, console: Console, editable: None) -> None:
    allow_http_errors(page, 422)  # the refused values below
    sign_in(page, console)
    page.goto(console.url + "#/runtimes")
    page.locator(f"a[data-runtime-link='{RUNTIME}']").click()
    form = page.locator("#runtime-form")
    for name, value in (("input", "3"), ("cache_read", "0.3"), ("cache_write", "3.75")):
        form.locator(f"#runtime-form-prices-{name}").fill(value)
    form.locator("#runtime-form-prices-output").fill("15")
    form.locator("#runtime-form-limits-job_timeout_s").fill("900")
    form.locator("#runtime-form-limits-cpu").fill("500m")
    form.locator("button[type=submit]").click()
    saved(page, f"Saved runtime {RUNTIME}")

    after = api_get(console, f"/v1/admin/runtimes/{RUNTIME}")
    assert after["prices"] == {"input": 3, "cache_read": 0.3, "cache_write": 3.75, "output": 15}
    assert after["limits"]["job_timeout_s"] == 900 and after["limits"]["cpu"] == "500m"
    # The local backend ignores a CPU bound: the API says so and the page shows it.
    assert any(note["field"] == "limits.cpu" for note in after["notes"])
    expect(page.locator("#runtime-notes")).to_contain_text("limits.cpu")
    expect(page.locator("#runtime-warnings")).to_have_count(0)

    # A rule over two fields (a provider URL needs a credential for claude): the API's message
    # beside both, and nothing changed.
    form.locator("#runtime-form-credential_ref").fill("")
    form.locator("#runtime-form-limits-cpu").fill("a lot")
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-error-for='limits.cpu']")).to_contain_text("Kubernetes quantity")
    assert api_get(console, f"/v1/admin/runtimes/{RUNTIME}") == after
    form.locator("#runtime-form-limits-cpu").fill("500m")
    form.locator("button[type=submit]").click()
    expect(form.locator("#runtime-form-error")).to_contain_text("runtime_invalid")
    expect(form.locator("[data-error-for=credential_ref]")).to_contain_text("refuses to start")
    expect(form.locator("[data-error-for=provider_base_url]")).to_contain_text("refuses to start")
    assert api_get(console, f"/v1/admin/runtimes/{RUNTIME}") == after

    # A credential variable this control plane lacks is stored, with the API's warning shown.
    form.locator("#runtime-form-credential_ref").fill(UNSET_VARIABLE)
    form.locator("button[type=submit]").click()
    saved(page, f"Saved runtime {RUNTIME}")
    expect(page.locator("#runtime-warnings")).to_contain_text(f"{UNSET_VARIABLE} is not set")
    assert api_get(console, f"/v1/admin/runtimes/{RUNTIME}")["credential_ref"] == UNSET_VARIABLE

    # Prices are all four or none: clearing them all removes them.
    form.locator("#runtime-form-credential_ref").fill(after["credential_ref"])
    for name in ("input", "cache_read", "cache_write", "output"):
        form.locator(f"#runtime-form-prices-{name}").fill("")
    form.locator("button[type=submit]").click()
    saved(page, f"Saved runtime {RUNTIME}")
    restored = api_get(console, f"/v1/admin/runtimes/{RUNTIME}")
    assert restored["prices"] is None and restored["warnings"] == []
    expect(page.locator("#runtime-warnings")).to_have_count(0)


def test_instructions_history_and_restore(page, console: Console) -> None:
    tag = uuid.uuid4().hex[:8]
    first = f"Work carefully. ({tag})\nExplain each change.\nRun the tests."
    second = f"Work carefully. ({tag})\nExplain each change briefly.\nRun the tests.\nSay thanks."
    sign_in(page, console)
    page.goto(console.url + "#/instructions")
    editor = page.locator("#instructions-text")
    for text in (first, second):
        editor.fill(text)
        page.click("#instructions-save")
        saved(page, "Saved the global instructions as version")
        expect(editor).to_have_value(text)

    versions = api_get(console, "/v1/admin/settings/global_instructions/versions")["items"]
    newest, previous = versions[0], versions[1]
    assert (newest["value"], previous["value"]) == (second, first)
    history = page.locator("#instructions-history button.version")
    expect(history.first).to_contain_text(f"v{newest['version']}")
    expect(history.nth(1)).to_contain_text(f"v{previous['version']}")
    expect(page.locator("#instructions-version")).to_contain_text(f"version {newest['version']}")

    page.click(f"#instructions-history button[data-version='{previous['version']}']")
    expect(page.locator("#version-text")).to_have_text(first)
    diff = page.locator("#version-diff")
    assert diff.locator("[data-op=del]").all_inner_texts() == [
        "- Explain each change briefly.",
        "- Say thanks.",
    ]
    assert diff.locator("[data-op=add]").all_inner_texts() == ["+ Explain each change."]
    screenshot(page, "instructions-history")

    page.click("#version-restore")
    saved(page, f"Restored version {previous['version']} as version {newest['version'] + 1}")
    expect(editor).to_have_value(first)
    current = next(
        s
        for s in api_get(console, "/v1/admin/settings")["items"]
        if s["key"] == "global_instructions"
    )
    assert current["value"] == first and current["version"] == newest["version"] + 1
    expect(history.first).to_contain_text(f"v{current['version']}")
