// One runtime (admin): what it is, and a form for every field PATCH /v1/admin/runtimes/{name}
// accepts (the name and CLI are fixed). The API judges the runtime as it would be stored (a model
// the CLI cannot reach, a provider URL without a credential) and its 422 shows beside the form.

import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { when } from "../format.js";
import { banner } from "../app.js";
import { editForm, facts } from "../forms.js";

export async function render(main, name) {
  show(main, await api(`/v1/admin/runtimes/${encodeURIComponent(name)}`));
}

function show(main, runtime) {
  const path = `/v1/admin/runtimes/${encodeURIComponent(runtime.name)}`;
  const form = editForm({
    id: "runtime-form",
    value: runtime,
    fields: RUNTIME_FIELDS,
    nullableObjects: ["prices"],
    async save(patch) {
      const saved = await api(path, { method: "PATCH", body: patch });
      show(main, saved);
      banner(`Saved runtime ${saved.name} (${Object.keys(patch).join(", ")}).`, "info");
    },
  });
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/runtimes" }, "Runtimes"), " / "),
    h("h1", {}, runtime.name),
    remarks("runtime-warnings", "warnings", "Warnings", runtime.warnings || []),
    remarks("runtime-notes", "notes", "Not applied by this installation's runtime backend",
      (runtime.notes || []).map((n) => `${n.field}: ${n.note}`)),
    h("div", { class: "panel" }, facts([
      ["Id", h("span", { class: "mono" }, runtime.id)],
      ["CLI", runtime.cli],
      ["Workers", h("a", { href: "#/workers" }, "workers list")],
      ["Created", when(runtime.created_at)],
      ["Updated", when(runtime.updated_at)],
    ])),
    h("h2", {}, "Edit"),
    h("div", { class: "panel" }, form),
  );
}

/** What the API says beside the runtime's fields: `warnings` (what keeps its sessions from
 * starting, and what to do) and `notes` (fields the backend ignores); nothing when empty. */
function remarks(id, kind, title, lines) {
  if (!lines.length) return null;
  return h("div", { class: `panel remarks ${kind}`, id }, h("strong", {}, title),
    h("ul", {}, lines.map((line) => h("li", {}, line))));
}

/** RuntimePatch's fields (functions/admin.py). */
const RUNTIME_FIELDS = [
  { path: "cli_version", label: "CLI version", kind: "text", hint: "An exact version, e.g. 2.0.14." },
  { path: "default_model", label: "Default model", kind: "text", nullable: true },
  { path: "provider_base_url", label: "Provider base URL", kind: "text", nullable: true, placeholder: "the CLI's own provider" },
  { path: "credential_ref", label: "Credential ref", kind: "text", nullable: true,
    hint: "The name of the environment variable (or Secret) holding the model key; never the key." },
  { path: "image", label: "Image", kind: "text", nullable: true, placeholder: "the default harness image" },
  { path: "prices.input", label: "Price: input", kind: "number", hint: "USD per million tokens." },
  { path: "prices.cache_read", label: "Price: cache read", kind: "number" },
  { path: "prices.cache_write", label: "Price: cache write", kind: "number" },
  { path: "prices.output", label: "Price: output", kind: "number",
    hint: "All four, or none to take the cost the CLI reports." },
  { path: "limits.job_timeout_s", label: "Job timeout (s)", kind: "number", nullable: true },
  { path: "limits.cpu", label: "CPU", kind: "text", nullable: true, short: true, placeholder: "e.g. 500m or 2" },
  { path: "limits.memory", label: "Memory", kind: "text", nullable: true, short: true, placeholder: "e.g. 4Gi" },
];
