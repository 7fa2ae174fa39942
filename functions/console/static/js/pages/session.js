// One session: its facts and activity (refreshed while it lives), a prompt box, its jobs, its
// workspace's files, and ending it. A streamed prompt opens the job's live view; a sync one
// waits for the job to end and then shows it.

import { api, auth } from "../api.js";
import { banner, explain } from "../app.js";
import { fill, h, table } from "../dom.js";
import { errorText } from "../events_view.js";
import { fileBrowser } from "../file_browser.js";
import { age, count, ms, totalTokens, usd, when } from "../format.js";
import { frames } from "../sse.js";
import { duration } from "./job.js";
import { statusBadge } from "./sessions.js";

const LIVE = new Set(["provisioning", "ready", "ending"]); // refreshed while in these
const REFRESH_MS = 3000;
const PROMPT_EXCERPT = 90;

export async function render(main, sessionId) {
  const path = `/v1/sessions/${encodeURIComponent(sessionId)}`;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let session = await api(path);
  let stopped = false;
  let timer = null;
  const inflight = new AbortController(); // a prompt being sent when the user leaves

  // -- the heading, and ending the session ------------------------------------------------------
  const status = h("span", { id: "session-status" });
  const updated = h("span", { class: "muted", id: "session-updated" });
  const endButton = h("button", { type: "button", class: "danger", id: "end-session" }, "End session");
  const learn = h("input", { type: "checkbox", id: "end-learn", checked: true });
  const endYes = h("button", { type: "button", class: "danger", id: "end-confirm-yes" }, "End it");
  const endNo = h("button", { type: "button", id: "end-confirm-no" }, "Keep it running");
  const endError = h("p", { class: "error", id: "end-error", role: "alert", hidden: true });
  const endConfirm = h(
    "div", { class: "panel confirm", id: "end-confirm", hidden: true },
    h("p", {}, h("strong", {}, "End this session? "),
      "Its harness saves the transcript, commits and pushes the work in its repositories, then stops. ",
      "The workspace is gone afterwards, and the session takes no more prompts."),
    h("label", { class: "check" }, learn,
      " Learn first: run the worker's auto-learning before ending, if the worker has it on (unticked: ",
      h("code", {}, "?learn=false"), ")"),
    h("div", { class: "actions" }, endYes, endNo),
  );
  endButton.addEventListener("click", () => {
    endConfirm.hidden = false;
    endError.hidden = true;
    endYes.focus();
  });
  endNo.addEventListener("click", () => { endConfirm.hidden = true; });
  endYes.addEventListener("click", async () => {
    endYes.disabled = endNo.disabled = endButton.disabled = true;
    endYes.textContent = "Ending…";
    try {
      session = await api(path, { method: "DELETE", query: { learn: learn.checked ? null : "false" } });
      endConfirm.hidden = true;
      banner(`Session ended.${pushSummary(session.result)}`, "info");
    } catch (error) {
      endError.hidden = false;
      endError.textContent = explain(error);
    } finally {
      endYes.disabled = endNo.disabled = false;
      endYes.textContent = "End it";
    }
    load();
  });

  // -- facts ------------------------------------------------------------------------------------
  const facts = h("dl", { class: "facts", id: "session-facts" });
  const activity = h("dl", { class: "facts", id: "session-activity" });

  // -- the prompt box ---------------------------------------------------------------------------
  const prompt = h("textarea", {
    id: "prompt", rows: 4, placeholder: "What should the agent do? (Ctrl+Enter runs it)", "aria-label": "prompt",
  });
  const modes = [
    ["stream", "Stream", "opens the job's live view: text, tool calls and diffs as they happen"],
    ["sync", "Sync", "waits until the job has finished, then shows it whole"],
  ].map(([value, label, what]) => h(
    "label", { class: "mode" },
    h("input", { type: "radio", name: "mode", value, id: `mode-${value}`, checked: value === "stream" }),
    h("strong", {}, ` ${label}`), h("span", { class: "muted" }, ` — ${what}`),
  ));
  const run = h("button", { type: "submit", class: "primary", id: "run-prompt" }, "Run");
  const promptState = h("span", { class: "muted", id: "prompt-state" });
  const promptError = h("p", { class: "error", id: "prompt-error", role: "alert", hidden: true });
  const promptForm = h(
    "form", { class: "panel prompt-box", id: "prompt-form", hidden: true },
    h("label", { for: "prompt", class: "title" }, "Prompt"),
    prompt,
    h("div", { class: "prompt-actions" }, h("div", { class: "modes", role: "radiogroup" }, modes),
      h("span", { class: "spacer" }), promptState, run),
    promptError,
  );
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) promptForm.requestSubmit();
  });
  promptForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) {
      prompt.focus();
      return;
    }
    const mode = promptForm.querySelector("input[name=mode]:checked").value;
    promptError.hidden = true;
    run.disabled = true;
    promptState.textContent = mode === "sync" ? "Running; the answer comes when the job ends…" : "Starting…";
    try {
      const jobId = mode === "sync" ? (await runSync(text)).id : await startStream(text);
      if (!stopped) location.hash = `#/jobs/${encodeURIComponent(jobId)}`;
    } catch (error) {
      if (stopped || error.name === "AbortError") return;
      promptError.hidden = false;
      promptError.textContent = explain(error);
      promptState.textContent = "";
      load();
    } finally {
      run.disabled = false;
    }
  });

  function runSync(text) {
    return api("/v1/prompts", {
      method: "POST", body: { session_id: sessionId, prompt: text, mode: "sync" }, signal: inflight.signal,
    });
  }

  /** Send a stream prompt and answer its job's id once its first event names it. The job's page
   * then follows GET /v1/jobs/{id}/events from the first event, so dropping this stream loses
   * nothing (the job runs on whoever listens: its events are kept and recorded without us). */
  async function startStream(text) {
    const stream = new AbortController();
    const stop = () => stream.abort();
    inflight.signal.addEventListener("abort", stop, { once: true });
    try {
      const response = await api("/v1/prompts", {
        method: "POST", body: { session_id: sessionId, prompt: text, mode: "stream" }, raw: true, signal: stream.signal,
      });
      for await (const frame of frames(response.body)) {
        try {
          const jobId = JSON.parse(frame.data)?.job_id;
          if (jobId) return jobId;
        } catch {
          // not an event of the job: read on
        }
      }
      throw new Error("The prompt's stream ended before it named its job: see the session's jobs.");
    } finally {
      stream.abort();
      inflight.signal.removeEventListener("abort", stop);
    }
  }

  // -- jobs and files ---------------------------------------------------------------------------
  const jobs = h("div", { id: "jobs" });
  const browser = fileBrowser(sessionId, {
    onChange: (folder, file) => remember({ tab: "files", path: folder === "." ? null : folder, file }),
  });
  const filesNote = h("p", { class: "empty", id: "files-unavailable", hidden: true });
  const tabs = { jobs: h("section", { id: "jobs-panel" }, jobs), files: h("section", { id: "files-panel", hidden: true }, filesNote, browser.element) };
  const tabButtons = Object.fromEntries(["jobs", "files"].map((name) => [name, h(
    "button", { type: "button", role: "tab", class: "tab", id: `tab-${name}`, onclick: () => select(name) },
    name === "jobs" ? "Jobs" : "Files",
  )]));
  let filesOpened = false;

  /** Show tab `name`; `place` ({path, file}) is where the files tab opens the first time. */
  function select(name, place = {}) {
    for (const [tab, section] of Object.entries(tabs)) {
      section.hidden = tab !== name;
      tabButtons[tab].setAttribute("aria-selected", String(tab === name));
    }
    if (name === "files") {
      if (!filesOpened) remember({ tab: "files", ...place });
      showFiles(place);
    } else {
      remember({});
    }
  }

  /** Keep the tab and the place in the files in the URL, so a reload or a shared link lands here. */
  function remember(query) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value) search.set(key, value);
    history.replaceState(null, "", `#/sessions/${encodeURIComponent(sessionId)}${search.size ? "?" + search : ""}`);
  }

  function showFiles(place = {}) {
    const ready = session.status === "ready";
    filesNote.hidden = ready;
    browser.element.hidden = !ready;
    filesNote.textContent = ready ? "" : `The workspace can be browsed only while the session is ready; it is ${session.status}.`;
    if (!ready || filesOpened) return;
    filesOpened = true;
    if (place.file) browser.reveal(place.file);
    else browser.open(place.path || ".");
  }

  // -- loading ----------------------------------------------------------------------------------
  function showSession() {
    const ready = session.status === "ready";
    fill(status, statusBadge(session.status));
    endButton.disabled = !ready;
    endButton.title = ready ? "" : "Only a ready session can be ended from here.";
    if (!ready) endConfirm.hidden = true;
    promptForm.hidden = !ready;
    const worker = auth.isAdmin()
      ? h("a", { href: `#/workers/${encodeURIComponent(session.worker)}` }, session.worker)
      : session.worker;
    const repo = session.session_repo;
    fill(
      facts,
      h("dt", {}, "Worker"), h("dd", { id: "session-worker" }, worker),
      h("dt", {}, "Status"), h("dd", {}, statusBadge(session.status)),
      h("dt", {}, "Created"), h("dd", {}, when(session.created_at)),
      h("dt", {}, "Ready"), h("dd", {}, session.ready_at ? `${when(session.ready_at)} (${duration(session.created_at, session.ready_at)} to start)` : "–"),
      h("dt", {}, "Ended"), h("dd", {}, when(session.ended_at)),
      h("dt", {}, "Session repo"), h("dd", { class: "mono" }, repo ? `${repo.url} @ ${repo.branch}` : "none: a local repository of the session's own"),
      session.cli_session_id ? [h("dt", {}, "CLI session"), h("dd", { class: "mono" }, session.cli_session_id)] : null,
      session.error ? [h("dt", {}, "Error"), h("dd", { class: "error", id: "session-error" }, errorText(session.error))] : null,
      session.result ? [h("dt", {}, "Result"), h("dd", { id: "session-result" }, resultView(session.result))] : null,
    );
    const a = session.activity || {};
    const tokens = a.tokens || {};
    fill(
      activity,
      h("dt", {}, "Jobs"), h("dd", { id: "activity-jobs" }, count(a.jobs ?? 0)),
      h("dt", {}, "Last activity"), h("dd", {}, a.last_activity_at ? `${age(a.last_activity_at)} ago` : "–"),
      h("dt", {}, "Tokens"), h("dd", { id: "activity-tokens" }, count(totalTokens(tokens)),
        totalTokens(tokens) ? h("span", { class: "muted" },
          ` (${count(tokens.input)} in · ${count(tokens.cache_read)} cache read · ${count(tokens.cache_write)} cache write · ${count(tokens.output)} out)`) : null),
      h("dt", {}, "Cost"), h("dd", { id: "activity-cost" }, a.jobs ? usd(a.cost_usd) : "–"),
      budgetFacts(session.budget),
    );
  }

  async function load() {
    clearTimeout(timer);
    try {
      const [fresh, page] = await Promise.all([
        api(path),
        api(`${path}/jobs`, { query: { limit: 50 } }),
      ]);
      if (stopped) return;
      const wasReady = session.status === "ready";
      session = fresh;
      showSession();
      fill(jobs, jobsTable(page.items));
      updated.textContent = LIVE.has(session.status) ? `updated ${new Date().toLocaleTimeString()}` : "";
      if (wasReady !== (session.status === "ready") && !tabs.files.hidden) showFiles();
    } catch (error) {
      if (stopped) return;
      fill(jobs, h("p", { class: "error" }, explain(error)));
    }
    if (!stopped && LIVE.has(session.status)) timer = setTimeout(load, REFRESH_MS);
  }

  fill(
    main,
    h("div", { class: "toolbar" },
      h("h1", {}, "Session ", h("span", { class: "mono" }, session.id)), status,
      h("span", { class: "spacer" }), updated, endButton),
    endConfirm, endError,
    h("div", { class: "session-top" },
      h("div", { class: "panel" }, h("h2", {}, "Session"), facts),
      h("div", { class: "panel" }, h("h2", {}, "Activity"), activity)),
    promptForm,
    h("div", { class: "tabs", role: "tablist" }, tabButtons.jobs, tabButtons.files),
    tabs.jobs, tabs.files,
  );
  showSession();
  if (params.get("tab") === "files") select("files", { path: params.get("path"), file: params.get("file") });
  else select("jobs");
  await load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    inflight.abort();
  };
}

function jobsTable(items) {
  return table(
    [
      ["Job", (j) => h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "mono" }, j.id.slice(0, 12))],
      ["Status", (j) => statusBadge(j.status)],
      ["Mode", (j) => j.mode],
      ["Prompt", (j) => h("span", { class: "excerpt", title: j.prompt }, excerpt(j.prompt))],
      ["Age", (j) => age(j.created_at)],
      ["Duration", (j) => (j.finished_at ? duration(j.started_at || j.created_at, j.finished_at)
        : j.started_at ? `${ms(Date.now() - Date.parse(j.started_at))} so far` : "–")],
    ],
    items,
    { empty: "No jobs yet: run a prompt above.", rowAttrs: (j) => ({ "data-job": j.id }) },
  );
}

function excerpt(text) {
  const s = String(text).replace(/\s+/g, " ").trim();
  return s.length > PROMPT_EXCERPT ? s.slice(0, PROMPT_EXCERPT - 1) + "…" : s;
}

/** The budget's lines, when it has a limit (no limit: nothing to show). */
function budgetFacts(budget) {
  if (!budget) return null;
  const limits = budget.limits || {};
  if (limits.tokens === null && limits.usd === null && budget.state?.open !== false) return null;
  const line = (used, limit, format) => (limit === null || limit === undefined
    ? `${format(used)} used, no limit` : `${format(used)} of ${format(limit)} used`);
  return [
    h("dt", {}, "Budget"),
    h("dd", { id: "session-budget" },
      h("div", {}, `tokens: ${line(budget.used?.tokens ?? 0, limits.tokens, count)}`),
      h("div", {}, `cost: ${line(budget.used?.usd ?? 0, limits.usd, usd)}`),
      budget.state?.open === false ? h("div", { class: "error" }, `closed: ${budget.state.reason || "a budget is spent"}`) : null),
  ];
}

/** What ending saved, per repository: the commit made, how it was pushed, where the work is. */
function resultView(result) {
  const repos = Object.entries(result.repos || {});
  if (!repos.length) return h("pre", {}, JSON.stringify(result, null, 2));
  return repos.map(([repo, r]) => h(
    "div", { "data-repo": repo },
    h("strong", {}, repo), ": ",
    r.committed ? `committed ${String(r.committed).slice(0, 10)}` : "nothing new to commit",
    r.pushed ? `; pushed (${r.push}) to ${r.branch}${r.head ? ` at ${String(r.head).slice(0, 10)}` : ""}` : "; not pushed",
    r.error ? h("span", { class: "error" }, ` (${errorText(r.error)})`) : null,
  ));
}

function pushSummary(result) {
  const pushed = Object.entries(result?.repos || {}).filter(([, r]) => r.pushed).map(([repo, r]) => `${repo} to ${r.branch}`);
  return pushed.length ? ` Work pushed: ${pushed.join(", ")}.` : "";
}
