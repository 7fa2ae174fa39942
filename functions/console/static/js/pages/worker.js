// One worker (admin): what it is, and a form for every field PATCH /v1/admin/workers/{name}
// accepts. Saving sends only what changed; the API's 422 messages show beside their fields.

import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { count, when } from "../format.js";
import { banner } from "../app.js";
import { editForm, facts } from "../forms.js";
import { budgetState } from "./workers.js";

export async function render(main, name) {
  const [worker, runtimes] = await Promise.all([
    api(`/v1/admin/workers/${encodeURIComponent(name)}`),
    api("/v1/admin/runtimes"),
  ]);
  show(main, worker, runtimes.items.map((r) => r.name));
}

function show(main, worker, runtimeNames) {
  const path = `/v1/admin/workers/${encodeURIComponent(worker.name)}`;
  const form = editForm({
    id: "worker-form",
    value: worker,
    fields: workerFields(runtimeNames.includes(worker.runtime) ? runtimeNames : [worker.runtime, ...runtimeNames]),
    async save(patch) {
      const saved = await api(path, { method: "PATCH", body: patch });
      show(main, saved, runtimeNames);
      banner(`Saved worker ${saved.name} (${Object.keys(patch).join(", ")}); revision ${saved.revision}.`, "info");
    },
  });
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/workers" }, "Workers"), " / "),
    h("h1", {}, worker.name),
    h("div", { class: "panel" }, facts([
      ["Id", h("span", { class: "mono" }, worker.id)],
      ["Runtime", h("a", { href: `#/runtimes/${encodeURIComponent(worker.runtime)}` }, worker.runtime)],
      ["Revision", h("span", { id: "worker-revision" }, count(worker.revision))],
      ["Budget", budgetState(worker.budget)],
      ["Sessions", h("a", { href: `#/sessions?worker=${encodeURIComponent(worker.name)}` }, "this worker's sessions")],
      ["Created", when(worker.created_at)],
      ["Updated", when(worker.updated_at)],
    ])),
    h("h2", {}, "Edit"),
    h("div", { class: "panel" }, form),
  );
}

/** WorkerPatch's fields (functions/admin.py). */
function workerFields(runtimeNames) {
  return [
    { path: "runtime", label: "Runtime", kind: "select", options: runtimeNames },
    { path: "repo_url", label: "Knowledge repo", kind: "text" },
    { path: "repo_branch", label: "Branch", kind: "text" },
    { path: "model", label: "Model", kind: "text", nullable: true, placeholder: "the runtime's default" },
    { path: "instructions", label: "Instructions", kind: "textarea", rows: 10,
      hint: "Given to every session of this worker after the global instructions." },
    { path: "skills", label: "Skills", kind: "lines", hint: "One a line: name follows the latest version, name@version pins one." },
    { path: "auto_learning", label: "Auto-learning", kind: "checkbox" },
    { path: "learning_mode", label: "Learning mode", kind: "select", options: ["direct", "review"],
      hint: "direct pushes to the branch; review to learning/<session id> for a person to merge." },
    { path: "timeouts.job_s", label: "Job timeout (s)", kind: "number", nullable: true, placeholder: "runtime's" },
    { path: "timeouts.idle_s", label: "Idle timeout (s)", kind: "number", nullable: true, placeholder: "default" },
    { path: "timeouts.max_age_s", label: "Max session age (s)", kind: "number", nullable: true, placeholder: "default" },
  ];
}
