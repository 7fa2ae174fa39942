// The sessions list: live (polled), filtered by worker and status, newest first.

import { api } from "../api.js";
import { fill, h, table } from "../dom.js";
import { age, count, totalTokens, usd } from "../format.js";
import { explain } from "../app.js";

const STATUSES = ["", "provisioning", "ready", "ending", "ended", "failed"];
const REFRESH_MS = 3000;

export function statusBadge(status) {
  return h("span", { class: `status ${status}`, "data-status": status }, status);
}

export async function render(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const worker = h("input", {
    id: "filter-worker", placeholder: "worker", value: params.get("worker") || "", size: 14,
  });
  const status = h(
    "select", { id: "filter-status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === (params.get("status") || "") }, s || "any status")),
  );
  const list = h("div", { id: "sessions" });
  const updated = h("span", { class: "muted", id: "sessions-updated" });
  fill(
    main,
    h("div", { class: "toolbar" }, h("h1", {}, "Sessions"), h("span", { class: "spacer" }),
      h("label", {}, "Worker ", worker), h("label", {}, "Status ", status), updated),
    list,
  );

  let timer = null;
  let stopped = false;
  async function load() {
    clearTimeout(timer);
    try {
      const page = await api("/v1/sessions", {
        query: { worker: worker.value.trim(), status: status.value, limit: 100 },
      });
      if (stopped) return;
      fill(list, sessionsTable(page.items));
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (stopped) return;
      fill(list, h("p", { class: "error" }, explain(error)));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }
  function refilter() {
    const query = new URLSearchParams();
    if (worker.value.trim()) query.set("worker", worker.value.trim());
    if (status.value) query.set("status", status.value);
    history.replaceState(null, "", `#/sessions${query.size ? "?" + query : ""}`);
    load();
  }
  worker.addEventListener("change", refilter);
  status.addEventListener("change", refilter);
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}

function sessionsTable(items) {
  return table(
    [
      ["Session", (s) => h("a", { href: `#/sessions/${encodeURIComponent(s.id)}`, class: "mono" }, s.id)],
      ["Worker", (s) => s.worker],
      ["Status", (s) => statusBadge(s.status)],
      ["Age", (s) => age(s.created_at)],
      ["Last activity", (s) => (s.activity?.last_activity_at ? `${age(s.activity.last_activity_at)} ago` : "–")],
      ["Jobs", (s) => count(s.activity?.jobs)],
      ["Tokens", (s) => count(totalTokens(s.activity?.tokens))],
      ["Cost", (s) => (s.activity && s.activity.jobs ? usd(s.activity.cost_usd) : "–")],
    ],
    items,
    { empty: "No sessions match. Start one with `vwm session create WORKER`.", rowAttrs: (s) => ({ "data-session": s.id }) },
  );
}
