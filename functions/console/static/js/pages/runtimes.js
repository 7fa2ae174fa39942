// Runtimes (admin): which CLI at which version, with which model endpoint, prices and limits; a
// name opens the runtime's page to edit it.

import { api } from "../api.js";
import { fill, h, table } from "../dom.js";

export async function render(main) {
  const { items } = await api("/v1/admin/runtimes");
  fill(
    main,
    h("div", { class: "toolbar" }, h("h1", {}, "Runtimes"), h("span", { class: "spacer" }),
      h("span", { class: "muted" }, "Add one with `vwm runtime create`.")),
    table(
      [
        ["Name", (r) => h("a", { href: `#/runtimes/${encodeURIComponent(r.name)}`, "data-runtime-link": r.name }, r.name)],
        ["CLI", (r) => `${r.cli} ${r.cli_version}`],
        ["Model", (r) => r.default_model ?? "–"],
        ["Provider", (r) => (r.provider_base_url ? h("span", { class: "mono" }, r.provider_base_url) : h("span", { class: "muted" }, "the CLI's own"))],
        ["Credential", (r) => (r.credential_ref ? h("span", { class: "mono" }, r.credential_ref) : "–")],
        ["Prices (USD / M in, out)", (r) => prices(r.prices)],
        ["Image", (r) => (r.image ? h("span", { class: "mono" }, r.image) : h("span", { class: "muted" }, "default"))],
        ["Notes", remarks],
      ],
      items,
      { empty: "No runtimes yet. Create one with `vwm runtime create`.", rowAttrs: (r) => ({ "data-runtime": r.name }) },
    ),
  );
}

function prices(p) {
  return p ? `${p.input} / ${p.output}` : h("span", { class: "muted" }, "none (cost from the CLI, if it says)");
}

function remarks(runtime) {
  const warnings = runtime.warnings || [];
  const notes = runtime.notes || [];
  return [
    warnings.length ? h("span", { class: "warn", title: warnings.join("\n") }, `${warnings.length} warning${warnings.length > 1 ? "s" : ""}`) : null,
    warnings.length && notes.length ? ", " : null,
    notes.length ? h("span", { class: "muted", title: notes.map((n) => n.field).join(", ") }, `${notes.length} not applied`) : null,
  ];
}
