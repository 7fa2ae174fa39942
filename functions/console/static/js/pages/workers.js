// Workers (admin): each with its runtime, knowledge repo, learning and budget; a name opens the
// worker's page to edit it.

import { api } from "../api.js";
import { fill, h, table } from "../dom.js";
import { count, usd } from "../format.js";

export async function render(main) {
  const { items } = await api("/v1/admin/workers");
  fill(
    main,
    h("div", { class: "toolbar" }, h("h1", {}, "Workers"), h("span", { class: "spacer" }),
      h("span", { class: "muted" }, "Add one with `vwm worker create`.")),
    table(
      [
        ["Name", (w) => h("a", { href: `#/workers/${encodeURIComponent(w.name)}`, "data-worker-link": w.name }, w.name)],
        ["Runtime", (w) => h("a", { href: `#/runtimes/${encodeURIComponent(w.runtime)}` }, w.runtime)],
        ["Repo", (w) => h("span", { class: "mono repo" }, `${w.repo_url} @ ${w.repo_branch}`)],
        ["Model", (w) => w.model ?? h("span", { class: "muted" }, "runtime's")],
        ["Learning", (w) => (w.auto_learning ? `on (${w.learning_mode})` : "off")],
        ["Revision", (w) => count(w.revision)],
        ["Budget", (w) => budgetState(w.budget)],
      ],
      items,
      { empty: "No workers yet. Create one with `vwm worker create`.", rowAttrs: (w) => ({ "data-worker": w.name }) },
    ),
  );
}

const LIMITS = [
  ["tokens_per_day", "tokens_today", "tokens today", count],
  ["tokens_total", "tokens_total", "tokens", count],
  ["usd_per_day", "usd_today", "today", usd],
  ["usd_total", "usd_total", "in total", usd],
];

/** "no limits", or each limit set as used / limit, marked when spent. */
export function budgetState(budget) {
  if (!budget) return h("span", { class: "muted" }, "–");
  const set = LIMITS.filter(([limit]) => budget.limits?.[limit] !== null && budget.limits?.[limit] !== undefined);
  if (!set.length) return h("span", { class: "muted" }, "no limits");
  return h("span", { class: "budget" }, set.map(([limit, used, label, format], i) => {
    const spent = budget.left?.[used] !== null && budget.left?.[used] <= 0;
    return [i ? ", " : "", h("span", { class: spent ? "budget-spent" : "", "data-budget": limit },
      `${format(budget.used?.[used] ?? 0)} / ${format(budget.limits[limit])} ${label}`)];
  }));
}
