// A job's normalized events (eventing/agent_events.py, eventing/job_events.py) as a timeline:
// assistant text growing as its deltas stream, tool calls with their inputs and results, file
// edits as diffs, model calls, errors, usage and the end. The same view replays a finished job's
// stored log. Every event is rendered exactly once and carries its seq (data-seq) and kind
// (data-kind), so what is on the page can be checked against the log.

import { fileEdits, diffView } from "./diff.js";
import { h } from "./dom.js";
import { count, ms, usd } from "./format.js";

const MAX_OUTPUT_CHARS = 20_000; // of one tool result or stderr tail; the rest is cut with a note
// What a tool call's one-line heading shows: the first of these its input has.
const SUMMARY_FIELDS = ["file_path", "filePath", "path", "absolute_path", "command", "cmd", "pattern", "query", "url", "description"];
const PATH_FIELDS = new Set(["file_path", "filePath", "path", "absolute_path"]);

/** A workspace path for one the CLI named: from `session_repo/` or `worker_repo/` on, else null. */
export function workspacePath(path) {
  const found = String(path).match(/(?:^|\/)((?:session_repo|worker_repo)(?:\/.*)?)$/);
  if (found) return found[1];
  // A relative path is relative to the CLI's working directory, the session repo.
  if (!path.startsWith("/") && !path.split("/").includes("..")) return `session_repo/${path.replace(/^\.\//, "")}`;
  return null;
}

/**
 * The timeline. `add(event)` renders one event ({seq, kind, data, ts}); a seq seen before is
 * ignored. `fileLink(path)` may turn a workspace path into a link (to the file browser).
 */
export function eventsView({ fileLink = () => null } = {}) {
  const element = h("div", { class: "events", id: "events" });
  const seen = new Set();
  const calls = new Map(); // tool call id → the element its result goes under
  let pending = null; // the assistant block whose deltas are streaming: {block, text, textEl}

  function assistantBlock() {
    const textEl = h("div", { class: "text" });
    const block = h("div", { class: "event assistant streaming", "data-kind": "assistant" },
      h("div", { class: "kind" }, "assistant"), textEl);
    element.append(block);
    return { block, textEl, text: "" };
  }

  function complete(current, text, seq) {
    current.block.classList.remove("streaming");
    current.block.dataset.seq = seq;
    current.block.dataset.kind = "assistant_text";
    if (current.text === text) return;
    // The deltas did not add up to the block: the complete text wins. The deltas stay as empty
    // markers so each seq is still on the page once.
    const markers = [...current.textEl.querySelectorAll("[data-seq]")];
    for (const marker of markers) marker.textContent = "";
    current.textEl.replaceChildren(text, ...markers);
    current.text = text;
  }

  const render = {
    job_started: (d) => compact("Job started", [d.cli && `${d.cli}${d.cli_version ? " " + d.cli_version : ""}`,
      d.model && `model ${d.model}`, d.resume_id && `resuming ${d.resume_id}`]),
    session_started: (d) => compact("CLI session", [d.cli_session_id, d.model && `model ${d.model}`]),
    model_call: modelCall,
    usage: (d) => h("div", { class: "event compact usage" }, h("span", { class: "kind" }, "usage"), usageLine(d)),
    result: (d) => compact(d.is_error ? "Run failed" : "Run ended",
      [d.error, d.model && `model ${d.model}`], d.is_error ? "error" : ""),
    error: (d) => h("div", { class: `event error${d.fatal === false ? " warning" : ""}` },
      h("div", { class: "kind" }, d.fatal === false ? "warning" : "error", d.code ? ` · ${d.code}` : ""),
      h("div", { class: "text" }, String(d.message ?? ""))),
    raw: (d) => h("div", { class: "event compact raw" },
      h("details", {}, h("summary", {}, "raw · ", rawName(d.event)), pretty(d.event))),
    stderr: (d) => h("div", { class: "event compact stderr" },
      h("details", {}, h("summary", {}, "stderr (the CLI's last lines)"), capped(d.tail ?? ""))),
    job_finished: finished,
  };

  function toolCall(d) {
    const key = SUMMARY_FIELDS.find((k) => typeof d.input?.[k] === "string" || Array.isArray(d.input?.[k]));
    let summaryText = key ? d.input[key] : null;
    if (Array.isArray(summaryText)) summaryText = summaryText.join(" ");
    else if (PATH_FIELDS.has(key)) summaryText = workspacePath(summaryText) ?? summaryText;
    const edits = fileEdits(d.name, d.input);
    const results = h("div", { class: "tool-results" });
    const el = h(
      "div", { class: "event tool", "data-tool-id": d.id ?? "" },
      h("div", { class: "tool-head" },
        h("span", { class: "kind" }, "tool"),
        h("strong", { class: "tool-name" }, String(d.name ?? "?")),
        summaryText ? h("span", { class: "mono tool-summary" }, shorten(summaryText)) : null),
      edits ? diffView(edits, {
        pathLabel: (path) => workspacePath(path) ?? path,
        linkOf: (path) => { const inside = workspacePath(path); return inside ? fileLink(inside) : null; },
      }) : null,
      h("details", { class: "tool-input", open: !edits && jsonSize(d.input) < 400 },
        h("summary", {}, "input"), pretty(d.input)),
      results,
    );
    if (d.id) calls.set(d.id, results);
    return el;
  }

  function toolResult(d) {
    const output = typeof d.output === "string" ? capped(d.output) : pretty(d.output);
    // The one-line preview names workspace files from their repository on (the CLI's absolute
    // paths say where the session's volume is, not where in it); the output itself is whole.
    const firstLine = typeof d.output === "string"
      ? d.output.split("\n", 1)[0].replace(/\/(?:[^\s/]+\/)*?((?:session_repo|worker_repo)\/)/g, "$1")
      : "";
    const el = h(
      "div", { class: `tool-result${d.is_error ? " error" : ""}` },
      h("details", { open: Boolean(d.is_error) },
        h("summary", {}, h("span", { class: "kind" }, d.is_error ? "error" : "result"), " ",
          h("span", { class: "muted" }, shorten(firstLine, 120))),
        output),
    );
    const under = d.id && calls.get(d.id);
    if (under) return { el, under };
    // A result whose call is not on the page (never reported): shown on its own.
    const orphan = h("div", { class: "event tool orphan" },
      h("div", { class: "kind" }, `result of ${d.id ?? "an unknown call"}`));
    element.append(orphan);
    return { el, under: orphan };
  }

  function add(event) {
    const seq = Number(event.seq);
    if (seen.has(seq)) return;
    seen.add(seq);
    const d = event.data || {};
    const atBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;
    if (event.kind === "text_delta") {
      pending ??= assistantBlock();
      const text = String(d.text ?? "");
      pending.text += text;
      pending.textEl.append(h("span", { "data-seq": seq, "data-kind": "text_delta" }, text));
    } else if (event.kind === "assistant_text") {
      const text = String(d.text ?? "");
      if (!pending) {
        complete(assistantBlock(), text, seq);
      } else if (text && pending.text !== text && pending.text.startsWith(text)) {
        // Deltas of the next block came before this one's end: split them off.
        const rest = pending.text.slice(text.length);
        complete(pending, text, seq);
        pending = assistantBlock();
        pending.text = rest;
        pending.textEl.append(rest);
      } else {
        complete(pending, text, seq);
        pending = null;
      }
    } else if (event.kind === "tool_call") {
      element.append(mark(toolCall(d), seq, event.kind));
    } else if (event.kind === "tool_result") {
      const { el, under } = toolResult(d);
      under.append(mark(el, seq, event.kind));
    } else {
      const make = render[event.kind] || ((data) => compact(event.kind, [], "", data));
      element.append(mark(make(d), seq, event.kind));
    }
    if (atBottom) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  return { element, add };
}

function mark(el, seq, kind) {
  el.dataset.seq = seq;
  el.dataset.kind = kind;
  return el;
}

function compact(title, parts, extraClass = "", data = undefined) {
  return h("div", { class: `event compact ${extraClass}`.trim() },
    h("span", { class: "kind" }, title),
    parts.filter(Boolean).map((part) => h("span", { class: "part" }, String(part))),
    data !== undefined ? h("details", {}, h("summary", {}, "data"), pretty(data)) : null);
}

function modelCall(d) {
  const u = d.usage || {};
  const failed = d.outcome && d.outcome !== "ok";
  return compact(`model call ${d.seq ?? ""}`.trim(), [
    d.model,
    `${count(u.input)} in`,
    u.cache_read ? `${count(u.cache_read)} cache read` : null,
    u.cache_write ? `${count(u.cache_write)} cache write` : null,
    `${count(u.output)} out`,
    d.latency_ms !== undefined ? ms(d.latency_ms) : null,
    d.ttft_ms !== null && d.ttft_ms !== undefined ? `first token ${ms(d.ttft_ms)}` : null,
    failed ? `${d.outcome}${d.status ? " " + d.status : ""}${d.error ? ": " + d.error : ""}` : null,
  ], failed ? "model-call error" : "model-call");
}

/** Tokens and cost of a usage (the `usage` event's data, or a summary's usage and cost). */
export function usageLine(u, cost = u.cost_usd, source = u.cost_source) {
  return h("div", { class: "usage-line" },
    tokenPart("in", u.input), tokenPart("cache read", u.cache_read), tokenPart("cache write", u.cache_write),
    tokenPart("out", u.output), u.reasoning ? tokenPart("reasoning", u.reasoning) : null,
    h("span", { class: "cost", "data-cost": cost ?? "" },
      usd(cost), source ? h("span", { class: "muted" }, ` (${source})`) : null));
}

function tokenPart(label, value) {
  return h("span", { class: "tokens" }, h("strong", {}, count(value ?? 0)), ` ${label}`);
}

function finished(d) {
  const status = String(d.status ?? "unknown");
  return h("div", { class: `event compact finished ${status}` },
    h("span", { class: "kind" }, "Job finished"),
    h("span", { class: `status ${status}`, "data-status": status }, status),
    d.duration_ms !== undefined && d.duration_ms !== null ? h("span", { class: "part" }, `in ${ms(d.duration_ms)}`) : null,
    d.exit_code !== undefined && d.exit_code !== null ? h("span", { class: "part" }, `exit ${d.exit_code}`) : null,
    d.error ? h("div", { class: "error" }, errorText(d.error)) : null);
}

export function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return `${error.message ?? JSON.stringify(error)}${error.code ? ` (${error.code})` : ""}`;
}

function rawName(event) {
  if (!event || typeof event !== "object") return "event";
  return [event.type, event.subtype].filter(Boolean).join("/") || "event";
}

function pretty(value) {
  return capped(value === undefined ? "" : JSON.stringify(value, null, 2) ?? String(value));
}

function capped(text) {
  const s = String(text);
  if (s.length <= MAX_OUTPUT_CHARS) return h("pre", {}, s);
  return h("div", {}, h("pre", {}, s.slice(0, MAX_OUTPUT_CHARS)),
    h("p", { class: "muted" }, `showing the first ${count(MAX_OUTPUT_CHARS)} of ${count(s.length)} characters`));
}

function jsonSize(value) {
  try { return JSON.stringify(value)?.length ?? 0; } catch { return Infinity; }
}

function shorten(text, max = 160) {
  const s = String(text).replace(/\s+/g, " ").trim();
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}
