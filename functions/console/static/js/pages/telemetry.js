// Telemetry: tokens and cost over a time window by worker or session (charts from
// /v1/telemetry/series), totals per group (/v1/telemetry/summary) and the newest request records
// (/v1/telemetry/requests), each with the CLI's raw output on demand. Any key may read it.

import { api, auth } from "../api.js";
import { fill, h, table } from "../dom.js";
import { count, ms, totalTokens, usd, when } from "../format.js";
import { explain } from "../app.js";
import { OTHER, chartPanel, colorOf, compact, legendColors, stackedBars } from "../charts.js";
import { statusBadge } from "./sessions.js";

// Each window picks a bucket that gives a readable number of bars (60, 24, 168, 30).
const WINDOWS = {
  "1h": { label: "Last hour", seconds: 3600, bucket: "minute" },
  "24h": { label: "Last 24 hours", seconds: 86_400, bucket: "hour" },
  "7d": { label: "Last 7 days", seconds: 7 * 86_400, bucket: "hour" },
  "30d": { label: "Last 30 days", seconds: 30 * 86_400, bucket: "day" },
};
const BUCKET_SECONDS = { minute: 60, hour: 3600, day: 86_400 };
const GROUPINGS = { worker: "Worker", session: "Session" };
// Sessions come and go by the hundred: chart the busiest few, the rest summed as "other".
const TOP_GROUPS = 8;
const REQUEST_ROWS = 100;
// A raw output is bounded by the harness (256 Ki characters); show a screenful's worth at first.
const RAW_SHOWN_CHARS = 20_000;

export async function render(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const choice = {
    window: WINDOWS[params.get("window")] ? params.get("window") : "1h",
    group: GROUPINGS[params.get("group")] ? params.get("group") : "worker",
  };
  const windowSelect = h(
    "select", { id: "telemetry-window", "aria-label": "Time window" },
    Object.entries(WINDOWS).map(([key, w]) => h("option", { value: key, selected: key === choice.window }, w.label)),
  );
  const groupSelect = h(
    "select", { id: "telemetry-group", "aria-label": "Group by" },
    Object.entries(GROUPINGS).map(([key, label]) => h("option", { value: key, selected: key === choice.group }, label)),
  );
  const refresh = h("button", { type: "button", id: "telemetry-refresh" }, "Refresh");
  const updated = h("span", { class: "muted", id: "telemetry-updated" });
  const tokens = chartPanel("chart-tokens", "Tokens");
  const cost = chartPanel("chart-cost", "Cost (USD)");
  const totals = h("div", { id: "telemetry-totals" });
  const requests = h("div", { id: "telemetry-requests" });
  fill(
    main,
    h("div", { class: "toolbar" }, h("h1", {}, "Telemetry"), h("span", { class: "spacer" }),
      h("label", {}, "Window ", windowSelect), h("label", {}, "Group by ", groupSelect), refresh, updated),
    h("div", { class: "charts telemetry-charts" }, tokens.panel, cost.panel),
    h("h2", {}, "Totals"), totals,
    h("h2", {}, "Requests ", h("span", { class: "muted" }, `(newest ${REQUEST_ROWS})`)), requests,
  );

  let charts = [];
  let stopped = false;
  let loading = null; // the load in flight: a newer choice aborts it
  const resizer = new ResizeObserver(() => charts.forEach((c) => c.resize()));
  resizer.observe(tokens.body);

  function dropCharts() {
    charts.forEach((c) => c.destroy());
    charts = [];
  }

  async function load() {
    loading?.abort();
    const control = new AbortController();
    loading = control;
    const spec = WINDOWS[choice.window];
    const step = BUCKET_SECONDS[spec.bucket];
    const now = Date.now() / 1000;
    const first = Math.floor((now - spec.seconds) / step) * step + step;
    const span = { since: iso(first), until: iso(now + 1) };
    const signal = control.signal;
    const calls = [
      api("/v1/telemetry/series", {
        query: { group_by: choice.group, bucket: spec.bucket, ...span }, signal,
      }),
      api("/v1/telemetry/summary", { query: { group_by: choice.group, ...span }, signal }),
      api("/v1/telemetry/requests", { query: { ...span, limit: REQUEST_ROWS }, signal }),
    ];
    const [series, summary, records] = await Promise.allSettled(calls);
    if (stopped || signal.aborted) return;
    dropCharts();
    if (series.status === "fulfilled") {
      drawCharts(series.value.items, { first, last: Math.floor(now / step) * step, step });
    } else {
      const message = h("p", { class: "error" }, explain(series.reason));
      fill(tokens.body, message);
      fill(cost.body, message.cloneNode(true));
    }
    fill(totals, summary.status === "fulfilled"
      ? totalsTable(summary.value.items, choice.group)
      : h("p", { class: "error" }, explain(summary.reason)));
    fill(requests, records.status === "fulfilled"
      ? requestsTable(records.value.items)
      : h("p", { class: "error" }, explain(records.reason)));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function drawCharts(items, grid) {
    const xs = [];
    for (let t = grid.first; t <= grid.last; t += grid.step) xs.push(t);
    const groups = chartGroups(items, choice.group, xs, grid.step);
    const unit = WINDOWS[choice.window].bucket;
    tokens.panel.querySelector("h2").textContent = `Tokens per ${unit}`;
    cost.panel.querySelector("h2").textContent = `Cost per ${unit} (USD)`;
    const unknownCost = items.some((item) => item.cost_usd === null && item.jobs > 0);
    for (const [panel, values, axis, value, note] of [
      [tokens, "tokens", compact, count, null],
      [cost, "cost", (v) => `$${compact(v)}`, usd,
        unknownCost ? "Some requests have no known cost (their runtime has no prices): counted as $0." : null],
    ]) {
      fill(panel.body);
      const chartGroupsOf = groups.map((g) => ({ label: g.label, color: g.color, values: g[values] }));
      panel.body.dataset.series = legendColors(chartGroupsOf);
      if (!groups.length) {
        panel.body.append(h("p", { class: "empty chart-empty" }, "No requests in this window."));
      }
      charts.push(stackedBars(panel.body, { xs, step: grid.step, groups: chartGroupsOf, axis, value }));
      if (note) panel.body.append(h("p", { class: "muted chart-note" }, note));
    }
  }

  function rechoose() {
    choice.window = windowSelect.value;
    choice.group = groupSelect.value;
    const query = new URLSearchParams({ window: choice.window, group: choice.group });
    history.replaceState(null, "", `#/telemetry?${query}`);
    load().catch(shown);
  }
  function shown(error) {
    if (error?.name !== "AbortError" && !stopped) fill(requests, h("p", { class: "error" }, explain(error)));
  }
  windowSelect.addEventListener("change", rechoose);
  groupSelect.addEventListener("change", rechoose);
  refresh.addEventListener("click", () => load().catch(shown));
  await load();
  return () => {
    stopped = true;
    loading?.abort();
    resizer.disconnect();
    dropCharts();
  };
}

/** Series items as chart groups: [{label, color, tokens: [per x], cost: [per x]}], the busiest
 * first; past TOP_GROUPS the rest summed as "other". A bucket with no item stays zero. */
export function chartGroups(items, groupBy, xs, step) {
  const byName = new Map();
  for (const item of items) {
    const name = item[groupBy] ?? "(none)";
    if (!byName.has(name)) byName.set(name, { label: name, total: 0, tokens: xs.map(() => 0), cost: xs.map(() => 0) });
    const group = byName.get(name);
    const at = Math.floor((Date.parse(item.start) / 1000 - xs[0]) / step);
    if (at < 0 || at >= xs.length) continue;
    const used = totalTokens(item.tokens);
    group.total += used;
    group.tokens[at] += used;
    group.cost[at] += item.cost_usd || 0;
  }
  const ranked = [...byName.values()].sort((a, b) => b.total - a.total || String(a.label).localeCompare(b.label));
  const shown = ranked.slice(0, TOP_GROUPS);
  const rest = ranked.slice(TOP_GROUPS);
  if (rest.length) {
    shown.push({
      label: OTHER,
      tokens: xs.map((_, i) => rest.reduce((sum, g) => sum + g.tokens[i], 0)),
      cost: xs.map((_, i) => rest.reduce((sum, g) => sum + g.cost[i], 0)),
    });
  }
  return shown.map((g, i) => ({ ...g, label: String(g.label), color: colorOf(i, g.label) }));
}

function groupLink(name, groupBy) {
  if (name === null || name === undefined) return h("span", { class: "muted" }, "(none)");
  if (groupBy === "session") return h("a", { href: `#/sessions/${encodeURIComponent(name)}`, class: "mono" }, name);
  return auth.isAdmin()
    ? h("a", { href: `#/workers/${encodeURIComponent(name)}` }, name)
    : h("a", { href: `#/sessions?worker=${encodeURIComponent(name)}` }, name);
}

/** A cell (or heading) that lines up right, as numbers do. */
function num(value) {
  return h("span", { class: "num" }, value);
}

function totalsTable(items, groupBy) {
  return table(
    [
      [GROUPINGS[groupBy], (row) => groupLink(row[groupBy], groupBy)],
      [num("Requests"), (row) => num(count(row.jobs))],
      [num("Input"), (row) => num(count(row.tokens.input))],
      [num("Cache read"), (row) => num(count(row.tokens.cache_read))],
      [num("Cache write"), (row) => num(count(row.tokens.cache_write))],
      [num("Output"), (row) => num(count(row.tokens.output))],
      [num("Total tokens"), (row) => h("span", { class: "num", "data-total-tokens": totalTokens(row.tokens) }, count(totalTokens(row.tokens)))],
      [num("Cost"), (row) => num(usd(row.cost_usd))],
      [num("Avg duration"), (row) => num(ms(row.avg_total_ms))],
    ],
    [...items].sort((a, b) => totalTokens(b.tokens) - totalTokens(a.tokens)),
    { empty: "No requests in this window.", rowAttrs: (row) => ({ "data-group": row[groupBy] ?? "" }) },
  );
}

function requestsTable(items) {
  const rows = table(
    [
      ["Time", (r) => h("span", { title: r.created_at }, when(r.created_at))],
      ["Worker", (r) => r.worker ?? "–"],
      ["Session", (r) => h("a", { href: `#/sessions/${encodeURIComponent(r.session_id)}`, class: "mono" }, short(r.session_id))],
      ["Job", (r) => h("a", { href: `#/jobs/${encodeURIComponent(r.job_id)}`, class: "mono" }, short(r.job_id))],
      ["Model", (r) => r.model ?? "–"],
      ["Status", (r) => statusBadge(r.status)],
      [num("In"), (r) => num(count(r.tokens.input))],
      [num("Out"), (r) => num(count(r.tokens.output))],
      [num("Cache r/w"), (r) => num(`${count(r.tokens.cache_read)} / ${count(r.tokens.cache_write)}`)],
      [num("Cost"), (r) => num(usd(r.cost_usd))],
      [num("Duration"), (r) => num(ms(r.durations_ms?.total))],
      ["", (r) => h("button", { type: "button", class: "small", "data-raw-for": r.job_id }, "Raw output")],
    ],
    items,
    { empty: "No requests in this window.", rowAttrs: (r) => ({ "data-job": r.job_id }) },
  );
  rows.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-raw-for]");
    if (button) toggleRaw(button, items.find((r) => r.job_id === button.dataset.rawFor));
  });
  return rows;
}

/** Show (or hide again) one record's raw output in a row under it, fetched only when asked:
 * the list leaves it out (include_raw) because each may be hundreds of KiB. */
async function toggleRaw(button, record) {
  const row = button.closest("tr");
  const open = row.nextElementSibling?.matches("tr.raw-row") ? row.nextElementSibling : null;
  if (open) {
    open.remove();
    button.textContent = "Raw output";
    return;
  }
  const cell = h("td", { colspan: row.children.length }, h("p", { class: "loading" }, "Loading raw output…"));
  row.after(h("tr", { class: "raw-row", "data-raw-row": record.job_id }, cell));
  button.textContent = "Hide output";
  try {
    fill(cell, rawOutput(await fetchRaw(record)));
  } catch (error) {
    fill(cell, h("p", { class: "error" }, explain(error)));
  }
}

async function fetchRaw(record) {
  // Narrowed to the record's session and a two-second window around it, then picked by job.
  const at = Date.parse(record.created_at) / 1000;
  const page = await api("/v1/telemetry/requests", {
    query: { session_id: record.session_id, since: iso(at - 1), until: iso(at + 1), include_raw: true, limit: 100 },
  });
  const found = page.items.find((r) => r.job_id === record.job_id);
  if (!found) throw new Error("That request's record is gone (its session was removed?).");
  return found.raw_output ?? "";
}

function rawOutput(text) {
  if (!text) return h("p", { class: "empty" }, "The CLI wrote nothing to its standard output.");
  const pre = h("pre", { class: "raw-output", "data-raw-output": "" });
  if (text.length <= RAW_SHOWN_CHARS) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, RAW_SHOWN_CHARS);
  const more = h("button", { type: "button", class: "small" }, "Show all");
  const note = h("p", { class: "muted raw-note" },
    `Showing the first ${count(RAW_SHOWN_CHARS)} of ${count(text.length)} characters. `, more);
  more.addEventListener("click", () => {
    pre.textContent = text;
    note.remove();
  });
  return h("div", {}, note, pre);
}

function short(id) {
  return id && id.length > 14 ? `${id.slice(0, 12)}…` : id;
}

function iso(seconds) {
  return new Date(seconds * 1000).toISOString();
}
