"""The live job view (#/jobs/<id>): a streamed prompt's events as they happen, a dropped stream
resumed without losing or repeating an event, cancelling, and a finished job replayed."""

from __future__ import annotations

import re

from tests.console.conftest import CONSOLE_GROUP, Console, screenshot, sign_in
from tests.console.live_sessions import (
    JOB_TIMEOUT_MS,
    end_session,
    event_stream,
    job,
    prompt,
    rendered_seqs,
    start_session,
    stream_events,
)

pytestmark = CONSOLE_GROUP


USAGE_LABELS = {
    "input": "in",
    "cache_read": "cache read",
    "cache_write": "cache write",
    "output": "out",
}
FINISHED = "#job-status [data-status]:not([data-status=running]):not([data-status=queued])"


def run_from_session_page(page, console: Console, session_id: str, text: str) -> str:
    """Type `text` in the session page's prompt box, run it in the default (stream) mode, and
    answer the id of the job whose view opens."""
    page.goto(f"{console.url}#/sessions/{session_id}")
    page.wait_for_selector("#prompt-form:not([hidden])")
    assert page.is_checked("#mode-stream")  # stream is the default
    page.fill("#prompt", text)
    page.click("#run-prompt")
    page.wait_for_url(re.compile(r"#/jobs/[0-9a-f]+$"), timeout=JOB_TIMEOUT_MS)
    return page.url.rsplit("/", 1)[1]


def test_a_streamed_prompt_shows_its_tool_call_diff_text_usage_and_end(
    page, console: Console, live_session
) -> None:
    sign_in(page, console)
    job_id = run_from_session_page(page, console, live_session["id"], "write notes.md")
    page.wait_for_selector(FINISHED, timeout=JOB_TIMEOUT_MS)
    assert page.inner_text("#job-status") == "succeeded"
    page.wait_for_selector("#stream-state[data-state=ended]")

    call = page.locator("#events [data-kind=tool_call]")
    assert call.count() == 1
    assert call.locator(".tool-name").inner_text() == "Write"
    assert call.locator(".tool-summary").inner_text() == "session_repo/notes.md"
    assert call.locator(".diff .add").all_inner_texts() == ["hello from fake model"]
    assert call.locator(".diff .del").count() == 0
    assert call.locator(".diff-head").inner_text().split() == [
        "session_repo/notes.md",
        "+1",
        "\u22120",  # a minus sign: no lines removed
    ]
    result = call.locator("[data-kind=tool_result]")  # under its call
    assert result.count() == 1 and "File created" in result.inner_text()
    assert "error" not in (result.get_attribute("class") or "")
    # The final text once, though it came both as deltas and whole.
    texts = page.locator("#events .event.assistant .text").all_inner_texts()
    assert texts == ["done: wrote notes.md"]

    recorded = job(console, job_id)
    assert recorded["status"] == "succeeded" and recorded["mode"] == "stream"
    usage, cost = recorded["result"]["usage"], recorded["result"]["cost_usd"]
    shown = page.inner_text("#job-usage")
    for field, label in USAGE_LABELS.items():
        assert f"{usage[field]:,} {label}" in shown, (label, shown)
    cost_text = page.inner_text("#job-usage .cost")
    assert cost_text.startswith("$") if cost is not None else cost_text == "cost unknown"
    if cost is not None:
        assert float(page.get_attribute("#job-usage .cost", "data-cost")) == cost
    assert page.locator("#cancel-job").is_hidden()
    assert page.locator("#events [data-kind=model_call]").count() >= 1
    # Every event of the job is on the page, once.
    assert rendered_seqs(page) == [e["seq"] for e in stream_events(event_stream(console, job_id))]
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "job-live")


def test_text_shows_while_the_job_still_runs(page, console: Console, live_session) -> None:
    sign_in(page, console)
    # The fake model streams its answer over 3 s: its first words come at once.
    job_id = run_from_session_page(page, console, live_session["id"], "sleep 3")
    page.wait_for_selector("#events [data-kind=text_delta]", timeout=JOB_TIMEOUT_MS)
    assert job(console, job_id)["status"] == "running"
    assert page.locator("#events [data-kind=job_finished]").count() == 0
    assert page.get_attribute("#stream-state", "data-state") == "live"
    assert page.inner_text("#job-status") == "running"
    assert page.locator("#events .event.assistant.streaming").count() == 1
    page.wait_for_selector(FINISHED, timeout=JOB_TIMEOUT_MS)
    assert page.inner_text("#job-status") == "succeeded"
    texts = page.locator("#events .event.assistant .text").all_inner_texts()
    assert texts == ["hello from fake model"]
    assert page.locator("#events .event.assistant.streaming").count() == 0


def test_a_dropped_stream_resumes_after_the_last_event_without_loss_or_doubles(
    page, console: Console, live_session
) -> None:
    job_id = prompt(console, live_session["id"], "write notes.md")["id"]
    whole = event_stream(console, job_id)
    frames = re.findall(r".*?(?:\r\n\r\n|\n\n)", whole, flags=re.S)
    seqs = [e["seq"] for e in stream_events(whole)]
    assert len(seqs) > 6 and seqs == list(range(1, len(seqs) + 1)) and len(frames) == len(seqs)
    # The first connection gets four whole events and half of the fifth, then breaks off.
    cut = "".join(frames[:4]) + frames[4][: len(frames[4]) // 2]
    requests: list[dict[str, str]] = []
    held: list = []

    def events_route(route, request) -> None:
        requests.append(request.all_headers())
        if len(requests) == 1:
            route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=cut)
        else:
            held.append(route)  # let through once the page has shown it is reconnecting

    page.route(f"**/v1/jobs/{job_id}/events", events_route)
    sign_in(page, console)
    page.goto(f"{console.url}#/jobs/{job_id}")
    page.wait_for_selector("#stream-state[data-state=reconnecting]")
    for _ in range(100):  # Playwright runs the route handler while the test waits in it
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the view did not reconnect"
    assert rendered_seqs(page) == [1, 2, 3, 4]
    assert page.get_attribute("#stream-state", "data-state") == "reconnecting"
    held[0].continue_()
    page.wait_for_selector("#stream-state[data-state=ended]", timeout=JOB_TIMEOUT_MS)

    assert len(requests) == 2
    assert "last-event-id" not in requests[0]
    assert requests[1]["last-event-id"] == "4"
    assert requests[1]["authorization"] == f"Bearer {console.plane.admin_key}"
    assert rendered_seqs(page) == seqs  # each once
    assert page.locator("#events .diff .add").all_inner_texts() == ["hello from fake model"]
    assert page.locator("#events [data-kind=job_finished] [data-status=succeeded]").count() == 1


def test_a_running_job_is_cancelled_from_its_view(page, console: Console, live_session) -> None:
    sign_in(page, console)
    job_id = run_from_session_page(page, console, live_session["id"], "sleep 30")
    page.wait_for_selector("#events [data-kind=text_delta]", timeout=JOB_TIMEOUT_MS)
    assert page.is_visible("#cancel-job")
    page.click("#cancel-job")
    page.wait_for_selector(FINISHED, timeout=JOB_TIMEOUT_MS)
    assert page.inner_text("#job-status") == "cancelled"
    page.wait_for_selector("#events [data-kind=job_finished] [data-status=cancelled]")
    assert job(console, job_id)["status"] == "cancelled"
    assert page.locator("#cancel-job").is_hidden()
    page.wait_for_selector("#stream-state[data-state=ended]")
    assert page.locator("#stream-error").is_hidden()


def test_a_finished_job_of_an_ended_session_replays_its_stored_events(
    page, console: Console
) -> None:
    session = start_session(console)
    try:
        job_id = prompt(console, session["id"], "write notes.md")["id"]
    finally:
        end_session(console, session["id"])
    stored = stream_events(event_stream(console, job_id))  # now from the database
    sign_in(page, console)
    page.goto(f"{console.url}#/jobs/{job_id}")
    page.wait_for_selector("#stream-state[data-state=ended]", timeout=JOB_TIMEOUT_MS)
    assert rendered_seqs(page) == [e["seq"] for e in stored]
    assert page.inner_text("#job-status") == "succeeded"
    assert page.locator("#events .diff .add").all_inner_texts() == ["hello from fake model"]
    assert page.locator("#events .event.assistant .text").all_inner_texts() == [
        "done: wrote notes.md"
    ]
    assert page.locator("#cancel-job").is_hidden()
    assert page.inner_text("#job-session") == session["id"]
    # The CLI's raw events are there, hidden until asked for.
    raw = page.locator("#events [data-kind=raw]")
    if raw.count():
        assert raw.first.is_hidden()
        page.check("#show-raw")
        assert raw.first.is_visible()


def test_an_unknown_job_says_so(refusing_page, console: Console) -> None:
    sign_in(refusing_page, console)
    refusing_page.goto(f"{console.url}#/jobs/nosuchjob")
    refusing_page.wait_for_selector("main p.error")
    assert "(not_found)" in refusing_page.inner_text("main p.error")
    assert 404 in refusing_page.refused


# One tool call per CLI's way of changing a file, as its adapter reports it.
FILE_EDITS = [
    ("Edit", {"file_path": "/ws/session_repo/a.py", "old_string": "x = 1\ny = 2\n", "new_string": "x = 1\ny = 3\n"}),
    ("MultiEdit", {"file_path": "/ws/session_repo/b.py", "edits": [{"old_string": "a", "new_string": "b"}, {"old_string": "c", "new_string": ""}]}),
    ("replace", {"file_path": "/ws/session_repo/c.md", "old_string": "old", "new_string": "new"}),
    ("write_file", {"file_path": "/ws/session_repo/d.md", "content": "one\ntwo\n"}),
    ("edit", {"filePath": "/ws/session_repo/e.ts", "oldString": "let a", "newString": "const a"}),
    ("write", {"filePath": "/ws/session_repo/f.ts", "content": "export {}\n"}),
    ("apply_patch", {"input": "*** Begin Patch\n*** Add File: g.txt\n+new file\n*** Update File: h.txt\n@@ def f\n-old line\n+new line\n context\n*** Delete File: i.txt\n*** End Patch\n"}),
    ("file_change", {"changes": [{"path": "/ws/session_repo/j.rs", "kind": "update"}]}),
    ("Bash", {"command": "ls"}),
]  # fmt: skip


def test_every_clis_file_edits_render_as_diffs_and_results_go_under_their_calls(
    page, console: Console
) -> None:
    sign_in(page, console)
    events = [
        {"seq": n, "kind": "tool_call", "data": {"id": f"t{n}", "name": name, "input": tool_input}}
        for n, (name, tool_input) in enumerate(FILE_EDITS, start=1)
    ]
    n = len(events)
    events += [
        {"seq": n + 1, "kind": "tool_result", "data": {"id": "t9", "output": "boom", "is_error": True}},
        {"seq": n + 2, "kind": "tool_result", "data": {"id": "t1", "output": "ok", "is_error": False}},
        {"seq": n + 3, "kind": "tool_result", "data": {"id": "nobody", "output": "?", "is_error": False}},
        {"seq": n + 4, "kind": "text_delta", "data": {"text": "first. "}},
        {"seq": n + 5, "kind": "text_delta", "data": {"text": "second"}},
        {"seq": n + 6, "kind": "assistant_text", "data": {"text": "first. "}},
        {"seq": n + 7, "kind": "assistant_text", "data": {"text": "second"}},
        {"seq": n + 8, "kind": "error", "data": {"message": "retrying", "fatal": False, "code": "overloaded"}},
        {"seq": n + 8, "kind": "error", "data": {"message": "a repeat of seq 8: dropped"}},
        {"seq": n + 9, "kind": "error", "data": {"message": "gave up", "fatal": True}},
        {"seq": n + 10, "kind": "something_new", "data": {"x": 1}},
    ]  # fmt: skip
    rendered = page.evaluate(
        """async (events) => {
            const { eventsView } = await import("./static/js/events_view.js");
            const view = eventsView({ fileLink: (path) => `#/files/${path}` });
            document.querySelector("main").replaceChildren(view.element);
            for (const event of events) view.add(event);
            const calls = [...view.element.querySelectorAll("[data-kind=tool_call]")];
            return {
                calls: calls.map((call) => ({
                    name: call.querySelector(".tool-name").textContent,
                    files: [...call.querySelectorAll(".diff-file")].map((file) => ({
                        path: file.querySelector(".diff-head a, .diff-head span").textContent,
                        link: file.querySelector(".diff-head a")?.getAttribute("href") ?? null,
                        lines: [...file.querySelectorAll("pre.diff > span")].map(
                            (line) => `${line.className}:${line.textContent}`),
                    })),
                    results: [...call.querySelectorAll("[data-kind=tool_result]")].map(
                        (result) => `${result.className}:${result.querySelector("pre").textContent}`),
                })),
                orphans: view.element.querySelectorAll(".event.orphan [data-kind=tool_result]").length,
                texts: [...view.element.querySelectorAll(".event.assistant .text")].map((t) => t.textContent),
                errors: [...view.element.querySelectorAll(".event.error")].map((e) => e.className),
                seqs: [...view.element.querySelectorAll("[data-seq]")].map((e) => Number(e.dataset.seq)),
                unknown: view.element.querySelector("[data-kind=something_new]")?.textContent ?? null,
            };
        }""",
        events,
    )
    by_name = {call["name"]: call for call in rendered["calls"]}
    assert by_name["Edit"]["files"] == [
        {
            "path": "session_repo/a.py",
            "link": "#/files/session_repo/a.py",
            "lines": ["ctx:x = 1", "del:y = 2", "add:y = 3"],
        }
    ]
    assert by_name["MultiEdit"]["files"][0]["lines"] == ["del:a", "add:b", "hunk:edit 2", "del:c"]
    assert by_name["replace"]["files"][0]["lines"] == ["del:old", "add:new"]
    assert by_name["write_file"]["files"][0]["lines"] == ["add:one", "add:two"]
    assert by_name["edit"]["files"][0]["lines"] == ["del:let a", "add:const a"]
    assert by_name["write"]["files"][0]["lines"] == ["add:export {}"]
    patch = by_name["apply_patch"]["files"]
    assert [(f["path"], f["link"]) for f in patch] == [
        ("session_repo/g.txt", "#/files/session_repo/g.txt"),  # relative to the CLI's folder
        ("session_repo/h.txt", "#/files/session_repo/h.txt"),
        ("session_repo/i.txt", "#/files/session_repo/i.txt"),
    ]
    assert patch[0]["lines"] == ["add:new file"]
    assert patch[1]["lines"] == ["hunk:@@ def f", "del:old line", "add:new line", "ctx:context"]
    assert patch[2]["lines"] == []
    assert by_name["file_change"]["files"] == [
        {"path": "session_repo/j.rs", "link": "#/files/session_repo/j.rs", "lines": []}
    ]
    assert by_name["Bash"]["files"] == []  # not a file edit: no diff
    assert by_name["Bash"]["results"] == ["tool-result error:boom"]
    assert by_name["Edit"]["results"] == ["tool-result:ok"]
    assert rendered["orphans"] == 1
    # Deltas of two blocks before either ended: each block gets its own text, once.
    assert rendered["texts"] == ["first. ", "second"]
    assert rendered["errors"] == ["event error warning", "event error"]
    assert sorted(rendered["seqs"]) == list(range(1, n + 11))
    assert rendered["unknown"] is not None and "something_new" in rendered["unknown"]
