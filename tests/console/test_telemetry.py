"""The console's telemetry page: tokens and cost charts per worker (uPlot on a canvas), the totals
per worker as the API sums them, and the request records with their raw output on demand, for an
admin key and a client key alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.console.conftest import CONSOLE_GROUP, Console, screenshot, sign_in
from tests.support.control_plane import until

pytestmark = CONSOLE_GROUP

PROMPTS = ("say hello once", "say hello twice", "say hello a third time")
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


@pytest.fixture(scope="module")
def telemetry(console: Console) -> Iterator[str]:
    """Three sync prompts on a session of worker `w`, their telemetry records written; yields
    the session's id."""
    with console.plane.client() as admin:
        made = admin.post("/v1/sessions", json={"worker": "w"})
        made.raise_for_status()
        session_id = made.json()["id"]
        try:
            for prompt in PROMPTS:
                answer = admin.post(
                    "/v1/prompts", json={"session_id": session_id, "prompt": prompt, "mode": "sync"}
                )
                answer.raise_for_status()
                assert answer.json()["status"] == "succeeded", answer.json()
            until(
                lambda: (
                    len(
                        admin.get(
                            "/v1/telemetry/requests", params={"session_id": session_id}
                        ).json()["items"]
                    )
                    == len(PROMPTS)
                ),
                console.plane,
            )
            yield session_id
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


def test_charts_totals_and_raw_output(page, console: Console, telemetry: str) -> None:
    open_telemetry(page, console)
    for chart in ("chart-tokens", "chart-cost"):
        legend = page.locator(f"#{chart} .u-legend .u-series .u-label").all_inner_texts()
        assert "w" in legend, (chart, legend)
        pixels = chart_pixels(page, chart, "w")
        assert pixels["painted"] > 0, (chart, pixels)
    # Worker w's bars are on the tokens chart (every request has tokens; a cost may be unknown).
    assert chart_pixels(page, "chart-tokens", "w")["series"] > 50

    totals = worker_totals(console, "w")
    expected = sum(totals["tokens"][k] for k in ("input", "cache_read", "cache_write", "output"))
    cell = page.locator("#telemetry-totals [data-group=w] [data-total-tokens]")
    assert int(cell.get_attribute("data-total-tokens")) == expected > 0
    assert cell.inner_text() == f"{expected:,}"

    rows = page.locator(
        "#telemetry-requests tr[data-job]", has=page.locator(f"a[href='#/sessions/{telemetry}']")
    )
    assert rows.count() == len(PROMPTS)
    first = rows.first
    job_id = first.get_attribute("data-job")
    assert first.locator(f"a[href='#/jobs/{job_id}']").count() == 1
    first.locator("button[data-raw-for]").click()
    raw = page.locator(f"tr[data-raw-row='{job_id}'] pre[data-raw-output]")
    raw.wait_for()
    assert FAKE_ANSWER in raw.inner_text()
    screenshot(page, "telemetry-charts")

    first.locator("button[data-raw-for]").click()  # closes it again
    assert page.locator(f"tr[data-raw-row='{job_id}']").count() == 0


def test_group_by_session_and_window_choice(page, console: Console, telemetry: str) -> None:
    open_telemetry(page, console)
    page.select_option("#telemetry-group", "session")
    page.wait_for_selector(f"#telemetry-totals [data-group='{telemetry}']")
    assert "group=session" in page.url
    assert chart_pixels(page, "chart-tokens", telemetry)["series"] > 50
    page.select_option("#telemetry-window", "30d")
    expect(page.locator("#chart-tokens h2")).to_have_text("Tokens per day")
    page.wait_for_selector(f"#telemetry-totals [data-group='{telemetry}']")
    # A reload keeps the choice (it is in the URL, never the key).
    page.reload()
    page.wait_for_selector(f"#telemetry-totals [data-group='{telemetry}']")
    assert page.locator("#telemetry-window").input_value() == "30d"


def test_charts_follow_the_window_width(page, console: Console, telemetry: str) -> None:
    open_telemetry(page, console)
    wide = page.eval_on_selector("#chart-tokens canvas", "c => c.getBoundingClientRect().width")
    page.set_viewport_size({"width": 800, "height": 860})
    canvas = page.locator("#chart-tokens canvas")
    for _ in range(50):  # the observer redraws on its next frame
        if canvas.bounding_box()["width"] < wide - 200:
            break
        page.wait_for_timeout(100)
    assert canvas.bounding_box()["width"] < wide - 200


def test_a_client_key_sees_the_telemetry_page(page, console: Console, telemetry: str) -> None:
    open_telemetry(page, console, console.client_key)
    assert page.locator("#who").inner_text() == "client key"
    assert chart_pixels(page, "chart-tokens", "w")["series"] > 50
    # A client key cannot open the admin worker page: the worker links to its sessions instead.
    link = page.locator("#telemetry-totals [data-group=w] a")
    assert link.get_attribute("href") == "#/sessions?worker=w"
    assert page.locator("#telemetry-requests tr[data-job]").count() >= len(PROMPTS)
