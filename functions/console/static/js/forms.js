// Edit forms for the admin pages: fields described once, a PATCH body of only what changed, and
// the API's own 422 messages shown beside the fields they name. The form checks nothing itself
// (`novalidate`, no min/max): the API's rules are the only rules, so they cannot drift apart.

import { ApiError } from "./api.js";
import { h } from "./dom.js";
import { banner, explain } from "./app.js";

/**
 * A field: {path, label, kind, nullable, options, hint, placeholder, short}
 *   path:  "name" or "parent.name" (a nested object such as timeouts.job_s)
 *   kind:  text | textarea | number | checkbox | select | lines (a list, one item a line)
 *   nullable: an empty input means null (else "" for text, and it stays a number or missing)
 * A nested object is sent whole when any of its fields changed, since the API stores it as given;
 * one named in `nullableObjects` is sent as null when all its inputs are empty.
 */
export function editForm({ id, fields, value, save, nullableObjects = [], submitLabel = "Save" }) {
  const inputs = new Map();
  const problems = new Map();
  const rows = fields.map((field) => {
    const input = inputFor(field, read(value, field.path));
    const problem = h("span", { class: "field-error", "data-error-for": field.path, role: "alert" });
    inputs.set(field.path, input);
    problems.set(field.path, problem);
    const inputId = `${id}-${field.path.replace(/\./g, "-")}`;
    input.id = inputId;
    return h("div", { class: `field field-${field.kind}`, "data-field": field.path },
      h("label", { for: inputId }, field.label),
      h("div", { class: "field-input" }, input,
        field.hint ? h("span", { class: "hint" }, field.hint) : null, problem));
  });
  const formError = h("div", { class: "form-error", id: `${id}-error`, role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  const form = h("form", { class: "edit-form", id, novalidate: true },
    rows, h("div", { class: "form-actions" }, submit, formError));

  function clearProblems() {
    formError.replaceChildren();
    for (const problem of problems.values()) problem.textContent = "";
    for (const row of form.querySelectorAll(".field.invalid")) row.classList.remove("invalid");
  }

  function showProblems(error) {
    const unplaced = [];
    for (const { field, problem } of fieldProblems(error)) {
      const place = placeOf(field, problems);
      if (place) {
        place.textContent = place.textContent ? `${place.textContent}; ${problem}` : problem;
        place.closest(".field").classList.add("invalid");
      } else {
        unplaced.push(`${field}: ${problem}`);
      }
    }
    formError.append(h("p", { class: "error" }, explain(error)));
    if (unplaced.length) formError.append(h("ul", { class: "error" }, unplaced.map((text) => h("li", {}, text))));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems();
    banner(""); // an earlier save's "Saved" must not stand beside this one's outcome
    const patch = changes(fields, inputs, value, nullableObjects);
    if (!Object.keys(patch).length) {
      formError.append(h("p", { class: "muted" }, "Nothing changed."));
      return;
    }
    submit.disabled = true;
    try {
      await save(patch);
    } catch (error) {
      showProblems(error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** [{field, problem}] from a 422: pydantic's `errors` (one field each) and a rule's `problems`
 * (the fields it involves, e.g. runtime_invalid), so each shows beside every field it names. */
function fieldProblems(error) {
  if (!(error instanceof ApiError)) return [];
  const { errors = [], problems = [] } = error.details || {};
  return [
    ...(Array.isArray(errors) ? errors : []),
    ...(Array.isArray(problems) ? problems : []).flatMap(({ fields = [], problem }) =>
      fields.map((field) => ({ field, problem }))),
  ];
}

/** The place to show a problem with `field` ("timeouts.job_s", "prices", "body.limits.cpu"):
 * the field itself, else the nearest field under the same parent. */
function placeOf(field, problems) {
  let path = String(field || "").replace(/^body\./, "");
  while (path) {
    if (problems.has(path)) return problems.get(path);
    const under = [...problems.keys()].find((key) => key.startsWith(`${path}.`));
    if (under) return problems.get(under);
    path = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : "";
  }
  return null;
}

function inputFor(field, current) {
  switch (field.kind) {
    case "textarea":
      return h("textarea", { rows: field.rows || 8, spellcheck: "false" }, current ?? "");
    case "checkbox":
      return h("input", { type: "checkbox", checked: Boolean(current) });
    case "select":
      return h("select", {}, field.options.map((option) =>
        h("option", { value: option, selected: option === current }, option)));
    case "number":
      return h("input", { type: "number", step: "any", value: current ?? "", placeholder: field.placeholder || "" });
    case "lines":
      return h("textarea", { rows: 3, spellcheck: "false" }, (current || []).join("\n"));
    default:
      return h("input", {
        type: "text", value: current ?? "", placeholder: field.placeholder || "", spellcheck: "false",
        class: field.short ? "short" : null,
      });
  }
}

function valueOf(field, input) {
  switch (field.kind) {
    case "checkbox":
      return input.checked;
    case "number": {
      const text = input.value.trim();
      if (text === "") return field.nullable ? null : undefined;
      return Number(text);
    }
    case "lines":
      return input.value.split("\n").map((line) => line.trim()).filter(Boolean);
    case "select":
      return input.value;
    default: {
      const text = field.kind === "textarea" ? input.value : input.value.trim();
      return text === "" && field.nullable ? null : text;
    }
  }
}

/** The PATCH body: each changed top-level field; a nested object whole, with each of its
 * fields the form holds (an unset nullable one as null, an empty required one left out, so the
 * API names it), or null if it may be and nothing in it is filled. */
export function changes(fields, inputs, original, nullableObjects = []) {
  const patch = {};
  const changedParents = new Set();
  for (const field of fields) {
    const now = valueOf(field, inputs.get(field.path));
    const before = read(original, field.path);
    if (same(now, before)) continue;
    if (field.path.includes(".")) changedParents.add(field.path.split(".")[0]);
    else patch[field.path] = now;
  }
  for (const parent of changedParents) {
    const whole = {};
    for (const field of fields.filter((f) => f.path.startsWith(`${parent}.`))) {
      const now = valueOf(field, inputs.get(field.path));
      if (now !== undefined) whole[field.path.slice(parent.length + 1)] = now;
    }
    const empty = Object.values(whole).every((v) => v === null);
    patch[parent] = empty && nullableObjects.includes(parent) ? null : whole;
  }
  return patch;
}

function same(now, before) {
  if (now === undefined) return before === undefined || before === null;
  const normal = (v) => (v === undefined ? null : v);
  return JSON.stringify(normal(now)) === JSON.stringify(normal(before));
}

function read(object, path) {
  return path.split(".").reduce((at, key) => (at === null || at === undefined ? at : at[key]), object);
}

/** A definition list of label → value (a value may be an element). */
export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(Boolean).map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "–")]));
}
