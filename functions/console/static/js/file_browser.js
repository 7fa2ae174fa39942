// A read-only view of a live session's workspace: folders listed through the API, a file shown
// as text (or said to be binary), breadcrumbs back up. The harness decides what may be read
// (never outside the workspace, never the CLI's own state); its refusals are shown as they come.
// Nothing here writes or deletes: the console only looks.

import { api } from "./api.js";
import { explain } from "./app.js";
import { fill, h, table } from "./dom.js";
import { age, count } from "./format.js";

export const MAX_SHOWN_BYTES = 256 * 1024; // of one file; the rest is not even downloaded

/** "22 bytes", "1.5 KiB", "3.2 MiB". */
export function bytes(n) {
  if (n < 1024) return `${count(n)} byte${n === 1 ? "" : "s"}`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function parentOf(path) {
  const parts = path.split("/").filter((part) => part && part !== ".");
  parts.pop();
  return parts.join("/") || ".";
}

/**
 * The browser of session `sessionId`. `onChange(folder, file)` is told where it is (to keep the
 * page's URL in step). `open(folder)` lists a folder, `show(file)` opens a file.
 */
export function fileBrowser(sessionId, { onChange = () => {} } = {}) {
  const base = `/v1/sessions/${encodeURIComponent(sessionId)}/files`;
  const crumbs = h("nav", { class: "crumbs", id: "files-crumbs", "aria-label": "folder" });
  const list = h("div", { class: "files-list", id: "files-list" });
  const viewer = h("div", { class: "file-view", id: "file-view" },
    h("p", { class: "empty" }, "Choose a file to see it."));
  const error = h("p", { class: "error", id: "files-error", role: "alert", hidden: true });
  const element = h("div", { class: "file-browser" }, crumbs, error,
    h("div", { class: "files" }, list, viewer));
  let folder = ".";
  let shown = null;
  let generation = 0; // a slow answer for a place the user has left is dropped

  function fail(failure) {
    error.hidden = false;
    error.textContent = explain(failure);
  }

  function showCrumbs(path) {
    const parts = path.split("/").filter((part) => part && part !== ".");
    const trail = [parts.length
      ? h("a", { href: "#", "data-crumb": ".", onclick: go(".") }, "workspace")
      : h("span", { class: "current", "data-crumb": "." }, "workspace")];
    parts.forEach((part, index) => {
      const to = parts.slice(0, index + 1).join("/");
      trail.push(h("span", { class: "sep" }, "/"));
      trail.push(index === parts.length - 1
        ? h("span", { class: "current", "data-crumb": to }, part)
        : h("a", { href: "#", "data-crumb": to, onclick: go(to) }, part));
    });
    fill(crumbs, trail);
  }

  function go(path) {
    return (event) => {
      event.preventDefault();
      open(path);
    };
  }

  async function open(path = ".", { keepFile = false } = {}) {
    const mine = ++generation;
    error.hidden = true;
    showCrumbs(path);
    fill(list, h("p", { class: "loading" }, "Loading…"));
    if (!keepFile) {
      shown = null;
      fill(viewer, h("p", { class: "empty" }, "Choose a file to see it."));
    }
    let listing;
    try {
      listing = await api(base, { query: { path } });
    } catch (failure) {
      if (mine !== generation) return;
      fill(list);
      fail(failure);
      return;
    }
    if (mine !== generation) return;
    folder = path;
    // Folders first, then files, each by name (the harness sorts by name only).
    const entries = [...listing.entries].sort((a, b) =>
      (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
    fill(list, table(
      [
        ["Name", entryLink],
        ["Size", (entry) => (entry.type === "dir" ? "" : bytes(entry.size))],
        ["Changed", (entry) => `${age(new Date(entry.mtime * 1000).toISOString())} ago`],
      ],
      entries,
      { empty: "This folder is empty.", rowAttrs: (entry) => ({ "data-entry": entry.path, "data-type": entry.type, class: entry.path === shown ? "selected" : null }) },
    ));
    if (!keepFile) onChange(folder, null);
  }

  function entryLink(entry) {
    const label = entry.type === "dir" ? `${entry.name}/` : entry.name;
    if (entry.type === "dir") return h("a", { href: "#", class: "dir", onclick: go(entry.path) }, label);
    if (entry.type === "other") return h("span", { class: "muted", title: "not a regular file" }, label);
    return h("a", {
      href: "#", class: entry.type,
      onclick: (event) => { event.preventDefault(); show(entry.path); },
    }, label, entry.type === "symlink" ? h("span", { class: "muted" }, " (link)") : null);
  }

  async function show(path) {
    const mine = ++generation;
    error.hidden = true;
    shown = path;
    for (const row of list.querySelectorAll("tr[data-entry]")) {
      row.classList.toggle("selected", row.dataset.entry === path);
    }
    fill(viewer, h("p", { class: "loading" }, "Loading…"));
    let content;
    try {
      content = await readHead(path);
    } catch (failure) {
      if (mine !== generation) return;
      fill(viewer, h("p", { class: "error", id: "file-error" }, explain(failure)));
      return;
    }
    if (mine !== generation) return;
    fill(viewer, fileView(path, content));
    onChange(folder, path);
  }

  /** The file's first MAX_SHOWN_BYTES (and whether there was more); the rest is not fetched. */
  async function readHead(path) {
    const controller = new AbortController();
    const response = await api(`${base}/content`, { query: { path }, raw: true, signal: controller.signal });
    const declared = Number(response.headers.get("content-length"));
    const reader = response.body.getReader();
    const chunks = [];
    let size = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      if (size > MAX_SHOWN_BYTES) {
        controller.abort(); // enough to show: stop the download
        break;
      }
    }
    const data = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      data.set(chunk, at);
      at += chunk.length;
    }
    const truncated = size > MAX_SHOWN_BYTES;
    return {
      data: truncated ? data.subarray(0, MAX_SHOWN_BYTES) : data,
      size: Number.isFinite(declared) && declared > 0 ? declared : size,
      truncated,
    };
  }

  /** Open `file` in its folder (the folder listed, the file shown). */
  async function reveal(file) {
    await open(parentOf(file), { keepFile: true });
    await show(file);
  }

  return { element, open, show, reveal, get folder() { return folder; } };
}

function fileView(path, { data, size, truncated }) {
  const text = decodeText(data, truncated);
  const head = h("div", { class: "file-head" },
    h("span", { class: "mono", id: "file-path" }, path),
    h("span", { class: "muted" }, bytes(size)));
  if (text === null) {
    return h("div", {}, head, h("p", { class: "muted", id: "file-binary" }, `binary file, ${count(size)} bytes`));
  }
  return h("div", {}, head,
    truncated
      ? h("p", { class: "muted", id: "file-note" }, `A large file: showing the first ${bytes(MAX_SHOWN_BYTES)} of ${bytes(size)}.`)
      : null,
    h("pre", { id: "file-content" }, text));
}

/** The bytes as text, or null for a binary file (a NUL byte, or not UTF-8). */
function decodeText(data, truncated) {
  if (data.includes(0)) return null;
  try {
    // stream: a cut in the middle of a character at the cap is not an encoding error.
    return new TextDecoder("utf-8", { fatal: true }).decode(data, { stream: truncated });
  } catch {
    return null;
  }
}
