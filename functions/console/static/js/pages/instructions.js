// Global instructions (admin): the setting `global_instructions`, given to every session at start
// and with every prompt. Each save is a new version; the history shows every version with a line
// diff against the current text, and restoring one saves its text again as a new version (the
// history only grows, so a restore can itself be undone).

import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { when } from "../format.js";
import { banner, explain } from "../app.js";
import { lineDiff } from "../diff.js";

const KEY = "global_instructions";
const SETTING = `/v1/admin/settings/${KEY}`;
const HISTORY_LIMIT = 200;

export async function render(main) {
  const state = { selected: null };
  await show(main, state);
}

async function show(main, state) {
  const { items } = await api("/v1/admin/settings");
  const current = items.find((s) => s.key === KEY) || null;
  const versions = current ? (await api(`${SETTING}/versions`, { query: { limit: HISTORY_LIMIT } })).items : [];
  const text = current ? textOf(current.value) : "";

  const editor = h("textarea", { id: "instructions-text", rows: 14, spellcheck: "false" }, text);
  const save = h("button", { type: "submit", class: "primary", id: "instructions-save" }, "Save");
  const error = h("div", { class: "form-error", id: "instructions-error", role: "alert" });
  const form = h("form", { id: "instructions-form" }, editor, h("div", { class: "form-actions" }, save, error));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.replaceChildren();
    if (current && editor.value === text) {
      error.append(h("p", { class: "muted" }, "Nothing changed."));
      return;
    }
    save.disabled = true;
    try {
      const saved = await put(editor.value);
      await show(main, state);
      banner(`Saved the global instructions as version ${saved.version}; the next session and prompt get them.`, "info");
    } catch (failure) {
      save.disabled = false;
      error.append(h("p", { class: "error" }, explain(failure)));
    }
  });

  const detail = h("div", { class: "version-detail", id: "version-detail" });
  const list = h("ul", { class: "versions", id: "instructions-history" }, versions.map((v) => h(
    "li", {},
    h("button", { type: "button", class: "version", "data-version": v.version },
      h("strong", {}, `v${v.version}`), " ", h("span", { class: "muted" }, when(v.updated_at)),
      current && v.version === current.version ? h("span", { class: "current-tag" }, "current") : null),
  )));
  function select(version) {
    state.selected = version;
    for (const button of list.querySelectorAll("button.version")) {
      button.classList.toggle("selected", Number(button.dataset.version) === version);
    }
    const chosen = versions.find((v) => v.version === version);
    fill(detail, chosen ? versionView(chosen, current, text, main, state) : h("p", { class: "empty" }, "Pick a version to see its text."));
  }
  list.addEventListener("click", (event) => {
    const button = event.target.closest("button.version");
    if (button) select(Number(button.dataset.version));
  });

  fill(
    main,
    h("div", { class: "toolbar" }, h("h1", {}, "Global instructions"), h("span", { class: "spacer" }),
      h("span", { class: "muted", id: "instructions-version" },
        current ? `version ${current.version}, saved ${when(current.updated_at)}` : "not set yet")),
    h("p", { class: "muted" }, "Given to every session of every worker, before the worker's own instructions. A save applies to the next session and prompt."),
    h("div", { class: "panel" }, form),
    h("h2", {}, "History"),
    versions.length
      ? h("div", { class: "history" }, h("div", { class: "panel history-list" }, list), h("div", { class: "panel" }, detail))
      : h("p", { class: "empty" }, "No versions yet: the first save starts the history."),
  );
  if (versions.length) select(versions.some((v) => v.version === state.selected) ? state.selected : versions[0].version);
}

function versionView(version, current, currentText, main, state) {
  const old = textOf(version.value);
  const isCurrent = current && version.version === current.version;
  const restore = h("button", { type: "button", id: "version-restore", disabled: isCurrent }, `Restore version ${version.version}`);
  const error = h("div", { class: "form-error", role: "alert" });
  restore.addEventListener("click", async () => {
    restore.disabled = true;
    try {
      const saved = await put(old);
      state.selected = saved.version;
      await show(main, state);
      banner(`Restored version ${version.version} as version ${saved.version}.`, "info");
    } catch (failure) {
      restore.disabled = false;
      error.append(h("p", { class: "error" }, explain(failure)));
    }
  });
  return [
    h("div", { class: "toolbar" },
      h("h3", {}, `Version ${version.version}`), h("span", { class: "muted" }, when(version.updated_at)),
      h("span", { class: "spacer" }), restore),
    error,
    isCurrent
      ? h("p", { class: "muted" }, "This is the current version.")
      : [h("h4", {}, `What restoring it changes (current v${current.version} → v${version.version})`), diffView(currentText, old)],
    h("h4", {}, "Its text"),
    h("pre", { id: "version-text" }, old || "(empty)"),
  ];
}

function diffView(before, after) {
  // The job view's line diff, its marks named for this page's styles and tests.
  const OPS = { " ": "same", "-": "del", "+": "add" };
  const lines = lineDiff(before, after).map((line) => ({ op: OPS[line.op], text: line.text }));
  if (lines.every((line) => line.op === "same")) return h("p", { class: "muted" }, "Same text as the current version.");
  const mark = { same: "  ", del: "- ", add: "+ " };
  // Each line a block of its own (never empty: its mark), so a whole line is coloured.
  return h("pre", { class: "line-diff", id: "version-diff" },
    lines.map((line) => h("span", { class: line.op, "data-op": line.op }, `${mark[line.op]}${line.text}`)));
}

async function put(text) {
  return api(SETTING, { method: "PUT", body: { value: text } });
}

function textOf(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}
