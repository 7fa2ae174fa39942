// File edits as diffs. The agent CLIs change files through tools whose inputs say what changed
// (a whole new content, an old and a new string, a patch), so the job view can show each change
// as added and removed lines without reading the workspace. Each CLI names its tools and their
// fields its own way; `fileEdits` knows them all and answers null for any other tool.

import { h } from "./dom.js";

const WRITE_TOOLS = new Set(["write", "write_file", "create_file"]);
const EDIT_TOOLS = new Set(["edit", "replace", "str_replace", "str_replace_editor"]);
const PATCH_TOOLS = new Set(["apply_patch", "patch"]);
// Above this many line pairs the exact diff costs too much: show everything old as removed and
// everything new as added instead.
const MAX_LCS_CELLS = 400_000;

/**
 * The file changes a tool call makes: [{path, lines: [{op: "+"|"-"|" "|"@", text}], note?}],
 * or null when the tool writes no file (or its input is not what that tool takes).
 */
export function fileEdits(name, input) {
  const tool = String(name || "").toLowerCase();
  if (PATCH_TOOLS.has(tool)) {
    const patch = patchText(input);
    return patch === null ? null : parsePatch(patch);
  }
  if (!input || typeof input !== "object" || Array.isArray(input)) return null;
  const path = pathOf(input);
  if (tool === "multiedit" && path && Array.isArray(input.edits)) {
    const lines = input.edits.flatMap((edit, index) => [
      ...(index ? [{ op: "@", text: `edit ${index + 1}` }] : []),
      ...lineDiff(oldOf(edit) ?? "", newOf(edit) ?? ""),
    ]);
    return [{ path, lines }];
  }
  if (WRITE_TOOLS.has(tool) && path && typeof input.content === "string") {
    return [{ path, lines: splitLines(input.content).map((text) => ({ op: "+", text })) }];
  }
  if (EDIT_TOOLS.has(tool) && path && typeof oldOf(input) === "string") {
    return [{ path, lines: lineDiff(oldOf(input), newOf(input) ?? "") }];
  }
  if (tool === "file_change" && Array.isArray(input.changes)) {
    // Codex reports which files changed and how, not their content.
    return input.changes.map((change) => ({
      path: String(change.path ?? "?"), lines: [], note: String(change.kind ?? "changed"),
    }));
  }
  return null;
}

function pathOf(input) {
  for (const key of ["file_path", "filePath", "path", "absolute_path"]) {
    if (typeof input[key] === "string" && input[key]) return input[key];
  }
  return null;
}

const oldOf = (edit) => edit?.old_string ?? edit?.oldString ?? edit?.old_str;
const newOf = (edit) => edit?.new_string ?? edit?.newString ?? edit?.new_str;

/** A patch tool's text: the input itself, one of its string fields, or the argument after
 * `apply_patch` in a command line. */
function patchText(input) {
  if (typeof input === "string") return input;
  if (!input || typeof input !== "object") return null;
  for (const key of ["input", "patch", "patchText", "diff"]) {
    if (typeof input[key] === "string") return input[key];
  }
  const command = input.command ?? input.cmd;
  if (Array.isArray(command)) return command.find((part) => /^\*\*\* Begin Patch|^--- /m.test(part)) ?? null;
  return null;
}

/** Codex's apply_patch format (`*** Add File:`, `*** Update File:`, `*** Delete File:`), or a
 * unified diff (`--- a/x`, `+++ b/x`, `@@`). */
export function parsePatch(text) {
  const files = [];
  let file = null;
  const start = (path, note) => {
    file = { path, lines: [], note };
    files.push(file);
  };
  for (const line of splitLines(text)) {
    let match;
    if ((match = line.match(/^\*\*\* (Add|Update|Delete) File: (.+)$/))) {
      start(match[2].trim(), { Add: "added", Update: "updated", Delete: "deleted" }[match[1]]);
    } else if ((match = line.match(/^\*\*\* Move to: (.+)$/)) && file) {
      file.note = `moved to ${match[1].trim()}`;
    } else if (/^\*\*\* (Begin|End) Patch|^\*\*\* End of File|^diff --git |^index /.test(line)) {
      continue;
    } else if ((match = line.match(/^--- (?:a\/)?(.+)$/))) {
      start(match[1].trim(), undefined);
    } else if ((match = line.match(/^\+\+\+ (?:b\/)?(.+)$/)) && file) {
      if (match[1].trim() !== "/dev/null") file.path = match[1].trim();
    } else if (file && line.startsWith("@@")) {
      file.lines.push({ op: "@", text: line });
    } else if (file && /^[+\- ]/.test(line)) {
      file.lines.push({ op: line[0], text: line.slice(1) });
    }
  }
  return files.length ? files : null;
}

function splitLines(text) {
  const lines = String(text).split("\n");
  if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop(); // the final newline
  return lines;
}

/** The lines of `before` and `after` as kept (" "), removed ("-") and added ("+"): the common
 * start and end are cut first, the middle is a longest common subsequence; past MAX_LCS_CELLS it
 * is shown as replaced whole, so a huge edit cannot freeze the tab. */
export function lineDiff(before, after) {
  const a = before === "" ? [] : splitLines(before);
  const b = after === "" ? [] : splitLines(after);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const kept = (lines) => lines.map((text) => ({ op: " ", text }));
  return [
    ...kept(a.slice(0, start)),
    ...middle(a.slice(start, endA), b.slice(start, endB)),
    ...kept(a.slice(endA)),
  ];
}

function middle(a, b) {
  if (a.length * b.length > MAX_LCS_CELLS) {
    return [...a.map((text) => ({ op: "-", text })), ...b.map((text) => ({ op: "+", text }))];
  }
  // common[i][j]: the longest common subsequence of a[i:] and b[j:].
  const common = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const lines = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      lines.push({ op: " ", text: a[i] });
      i++;
      j++;
    } else if (common[i + 1][j] >= common[i][j + 1]) {
      lines.push({ op: "-", text: a[i++] });
    } else {
      lines.push({ op: "+", text: b[j++] });
    }
  }
  while (i < a.length) lines.push({ op: "-", text: a[i++] });
  while (j < b.length) lines.push({ op: "+", text: b[j++] });
  return lines;
}

const LINE_CLASS = { "+": "add", "-": "del", " ": "ctx", "@": "hunk" };

/** The diffs of `edits` (from `fileEdits`); `linkOf(path)` may give each file's header a link. */
export function diffView(edits, { pathLabel = (path) => path, linkOf = () => null } = {}) {
  return h(
    "div", { class: "diffs" },
    edits.map((edit) => {
      const added = edit.lines.filter((line) => line.op === "+").length;
      const removed = edit.lines.filter((line) => line.op === "-").length;
      const href = linkOf(edit.path);
      const label = pathLabel(edit.path);
      return h(
        "div", { class: "diff-file", "data-path": edit.path },
        h(
          "div", { class: "diff-head" },
          href ? h("a", { href, class: "mono" }, label) : h("span", { class: "mono" }, label),
          edit.note ? h("span", { class: "muted" }, edit.note) : null,
          h("span", { class: "diff-count add-count" }, `+${added}`),
          h("span", { class: "diff-count del-count" }, `−${removed}`),
        ),
        edit.lines.length
          ? h(
            "pre", { class: "diff" },
            // The +, − and space markers are CSS (::before): copying a diff copies the lines.
            edit.lines.map((line) => h("span", { class: LINE_CLASS[line.op] }, line.text)),
          )
          : null,
      );
    }),
  );
}
