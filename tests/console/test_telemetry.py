"""The console's telemetry page: tokens and cost charts per worker (uPlot on a canvas), the totals
per worker as the API sums them, and the request records with their raw output on demand, for an
admin key and a client key alike."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect

from tests.console.conftest import CONSOLE_GROUP, Console, screenshot, sign_in
from tests.support.control_plane import until

pytestmark = CONSOLE_GROUP

PROMPTS = ("say hello once", "say hello twice", "say hello a third time")
# A shell command's output goes into the CLI's stdout: past what the page shows at first.
LONG_OUTPUT = "run `seq 1 6000`"
RAW_SHOWN_CHARS = 20_000  # telemetry.js
FAKE_ANSWER = "hello from fake model"

# The pixels of one legend colour on a chart's canvas (RGB within a small tolerance, opaque):
# the bars of that series, not the axes or the grid, which are drawn in other colours.
COUNT_PIXELS = """([selector, color]) => {
  const canvas = document.querySelector(selector + " canvas");
  if (!canvas) return {painted: -1, series: -1};
  const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const want = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  let painted = 0, series = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    painted++;
    if (data[i + 3] > 200 && want.every((v, k) => Math.abs(data[i + k] - v) <= 6)) series++;
  }
  return {painted, series};
}"""


@dataclass
class Produced:
    session_id: str
    jobs: dict[str, str]  # prompt -> job id


@pytest.fixture(scope="module")
def telemetry(console: Console) -> Iterator[Produced]:
    """Sync prompts on a session of worker `w` (one with a long output), their telemetry
    records written."""
    with console.plane.client() as admin:
        made = admin.post("/v1/sessions", json={"worker": "w"})
        made.raise_for_status()
        session_id = made.json()["id"]
        jobs: dict[str, str] = {}
        try:
            for prompt in (*PROMPTS, LONG_OUTPUT):
                answer = admin.post(
                    "/v1/prompts", json={"session_id": session_id, "prompt": prompt, "mode": "sync"}
                )
                answer.raise_for_status()
                assert answer.json()["status"] == "succeeded", answer.json()
                jobs[prompt] = answer.json()["id"]

            def recorded() -> bool:
                query = {"session_id": session_id}
                items = admin.get("/v1/telemetry/requests", params=query).json()["items"]
                return len(items) == len(jobs)

            until(recorded, console.plane)
            yield Produced(session_id, jobs)
        finally:
            admin.delete(f"/v1/sessions/{session_id}")


def worker_totals(console: Console, worker: str) -> dict:
    with console.plane.client() as admin:
        summary = admin.get("/v1/telemetry/summary", params={"group_by": "worker"})
    summary.raise_for_status()
    return next(item for item in summary.json()["items"] if item["worker"] == worker)


def chart_pixels(page, chart_id: str, label: str) -> dict:
    colors = page.eval_on_selector(
        f"#{chart_id} .chart-body", "el => JSON.parse(el.dataset.series)"
    )
    assert label in colors, colors
    return page.evaluate(COUNT_PIXELS, [f"#{chart_id}", colors[label]])


def open_telemetry(page, console: Console, key: str | None = None) -> None:
    sign_in(page, console, key)
    page.goto(console.url + "#/telemetry")
    page.wait_for_selector("#chart-tokens canvas")
    page.wait_for_selector("#chart-cost canvas")
    page.wait_for_selector("#telemetry-totals [data-group]")


def test_charts_totals_and_raw_output(page, console: Console, telemetry: Produced) -> None:
    open_telemetry(page, console)
    for chart in ("chart-tokens", "chart-cost"):
        legend = page.locator(f"#{chart} .u-legend .u-series .u-label").all_inner_texts()
        assert "w" in legend, (chart, legend)
        pixels = chart_pixels(page, chart, "w")
        assert pixels["painted"] > 0, (chart, pixels)
    # Worker w's bars: on the tokens chart always, on the cost chart when its cost is known.
    totals = worker_totals(console, "w")
    assert chart_pixels(page, "chart-tokens", "w")["series"] > 50
    if totals["cost_usd"]:
        assert chart_pixels(page, "chart-cost", "w")["series"] > 50

    expected = sum(totals["tokens"][k] for k in ("input", "cache_read", "cache_write", "output"))
    # Off the plot, the legend gives the worker's total over the window.
    legend_value = (
        page.locator("#chart-tokens .u-legend .u-series")
        .filter(has=page.get_by_text("w", exact=True))
        .locator(".u-value")
    )
    expect(legend_value).to_have_text(f"{expected:,}")
    cell = page.locator("#telemetry-totals [data-group=w] [data-total-tokens]")
    assert int(cell.get_attribute("data-total-tokens")) == expected > 0
    assert cell.inner_text() == f"{expected:,}"

    session = telemetry.session_id
    rows = page.locator(
        "#telemetry-requests tr[data-job]", has=page.locator(f"a[href='#/sessions/{session}']")
    )
    # Newest first: the prompts' jobs in reverse order.
    assert [row.get_attribute("data-job") for row in rows.all()] == list(
        reversed(telemetry.jobs.values())
    )
    screenshot(page, "telemetry-charts")

    job_id = telemetry.jobs[PROMPTS[0]]
    row = page.locator(f"#telemetry-requests tr[data-job='{job_id}']")
    assert row.locator(f"a[href='#/jobs/{job_id}']").count() == 1
    row.locator("button[data-raw-for]").click()
    raw = page.locator(f"tr[data-raw-row='{job_id}'] pre[data-raw-output]")
    expect(raw).to_contain_text(FAKE_ANSWER)
    assert page.locator(f"tr[data-raw-row='{job_id}'] .raw-note").count() == 0
    row.locator("button[data-raw-for]").click()  # closes it again
    expect(page.locator(f"tr[data-raw-row='{job_id}']")).to_have_count(0)

    # A long output shows its start with a note, and all of it when asked.
    long_job = telemetry.jobs[LONG_OUTPUT]
    page.locator(f"button[data-raw-for='{long_job}']").click()
    opened = page.locator(f"tr[data-raw-row='{long_job}']")
    expect(opened.locator(".raw-note")).to_contain_text(f"first {RAW_SHOWN_CHARS:,} of")
    shown = opened.locator("pre[data-raw-output]")
    assert len(shown.text_content()) == RAW_SHOWN_CHARS
    opened.locator(".raw-note button").click()
    expect(opened.locator(".raw-note")).to_have_count(0)
    whole = shown.text_content()
    assert len(whole) > RAW_SHOWN_CHARS and "\\n5999\\n6000" in whole


def test_group_by_session_and_window_choice(page, console: Console, telemetry: Produced) -> None:
    open_telemetry(page, console)
    page.select_option("#telemetry-group", "session")
    session = telemetry.session_id
    page.wait_for_selector(f"#telemetry-totals [data-group='{session}']")
    assert "group=session" in page.url
    assert chart_pixels(page, "chart-tokens", session)["series"] > 50
    page.select_option("#telemetry-window", "30d")
    expect(page.locator("#chart-tokens h2")).to_have_text("Tokens per day")
    page.wait_for_selector(f"#telemetry-totals [data-group='{session}']")
    # A reload keeps the choice (it is in the URL, never the key).
    page.reload()
    page.wait_for_selector(f"#telemetry-totals [data-group='{session}']")
    assert page.locator("#telemetry-window").input_value() == "30d"


def test_charts_follow_the_window_width(page, console: Console, telemetry: Produced) -> None:
    open_telemetry(page, console)
    wide = page.eval_on_selector("#chart-tokens canvas", "c => c.getBoundingClientRect().width")
    page.set_viewport_size({"width": 800, "height": 860})
    canvas = page.locator("#chart-tokens canvas")
    for _ in range(50):  # the observer redraws on its next frame
        if canvas.bounding_box()["width"] < wide - 200:
            break
        page.wait_for_timeout(100)
    assert canvas.bounding_box()["width"] < wide - 200


def test_a_client_key_sees_the_telemetry_page(page, console: Console, telemetry: Produced) -> None:
    open_telemetry(page, console, console.client_key)
    assert page.locator("#who").inner_text() == "client key"
    assert chart_pixels(page, "chart-tokens", "w")["series"] > 50
    # A client key cannot open the admin worker page: the worker links to its sessions instead.
    link = page.locator("#telemetry-totals [data-group=w] a")
    assert link.get_attribute("href") == "#/sessions?worker=w"
    for job_id in telemetry.jobs.values():
        expect(page.locator(f"#telemetry-requests tr[data-job='{job_id}']")).to_have_count(1)


def test_the_busiest_sessions_are_charted_and_the_rest_summed_as_other(
    page, console: Console
) -> None:
    sign_in(page, console)
    groups = page.evaluate(
        """async () => {
          const { chartGroups } = await import("./static/js/pages/telemetry.js");
          const xs = [0, 60, 120];
          const items = [];
          for (let n = 1; n <= 11; n++) {  // session sN used 100*n tokens at minute 0, n at 2
            items.push({ start: "1970-01-01T00:00:00Z", session: `s${n}`, cost_usd: n / 100,
                         tokens: { input: 100 * n, cache_read: 0, cache_write: 0, output: 0 } });
            items.push({ start: "1970-01-01T00:02:00Z", session: `s${n}`, cost_usd: null,
                         tokens: { input: 0, cache_read: 0, cache_write: 0, output: n } });
          }
          return chartGroups(items, "session", xs, 60)
            .map(({ label, color, tokens, cost }) => ({ label, color, tokens, cost }));
        }"""
    )
    assert [g["label"] for g in groups] == [f"s{n}" for n in range(11, 3, -1)] + ["other"]
    assert groups[0]["tokens"] == [1100, 0, 11]  # an empty bucket is zero
    assert groups[-1]["tokens"] == [600, 0, 6] and groups[-1]["color"] == "#9aa1ad"
    assert groups[-1]["cost"] == pytest.approx([0.06, 0, 0])
    assert len({g["color"] for g in groups}) == len(groups)
