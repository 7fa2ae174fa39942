// One job: its facts, and its events as they stream (live while it runs, replayed from the
// stored log once it has ended), followed with js/sse.js so a dropped connection resumes after
// the last event seen. Cancel while it is queued or running.

import { api } from "../api.js";
import { explain } from "../app.js";
import { fill, h } from "../dom.js";
import { errorText, eventsView, usageLine } from "../events_view.js";
import { ms, when } from "../format.js";
import { follow } from "../sse.js";
import { statusBadge } from "./sessions.js";

const ACTIVE = new Set(["queued", "running"]);
const STATE_LABELS = { connecting: "connecting…", live: "live", replay: "replaying the stored events", reconnecting: "reconnecting…", ended: "stream ended" };

/** The time between two ISO instants, or "–". */
export function duration(from, to) {
  return from && to ? ms(Date.parse(to) - Date.parse(from)) : "–";
}

export async function render(main, jobId) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  let job = await api(path);
  const finishedAtStart = !ACTIVE.has(job.status);
  const controller = new AbortController();
  let stopped = false;

  const status = h("span", { id: "job-status" });
  const streamState = h("span", { class: "stream-state", id: "stream-state" });
  const cancel = h("button", { type: "button", class: "danger", id: "cancel-job" }, "Cancel job");
  const facts = h("dl", { class: "facts", id: "job-facts" });
  const streamError = h("p", { class: "error", id: "stream-error", role: "alert", hidden: true });
  const summary = h("div", { class: "panel job-summary", id: "job-summary", hidden: true });
  const showRaw = h("input", { type: "checkbox", id: "show-raw" });
  const view = eventsView({
    fileLink: (file) => `#/sessions/${encodeURIComponent(job.session_id)}?tab=files&file=${encodeURIComponent(file)}`,
  });
  showRaw.addEventListener("change", () => view.element.classList.toggle("show-raw", showRaw.checked));

  let usage = null; // the `usage` event's data
  let finish = null; // the `job_finished` event's data

  function setStatus(value) {
    fill(status, statusBadge(value));
    cancel.hidden = !ACTIVE.has(value);
  }

  function showError(message) {
    streamError.hidden = false;
    streamError.textContent = message;
  }

  function setState(state) {
    streamState.dataset.state = state;
    streamState.textContent = STATE_LABELS[state] ?? state;
  }

  function showFacts() {
    fill(
      facts,
      h("dt", {}, "Session"), h("dd", {}, h("a", { href: `#/sessions/${encodeURIComponent(job.session_id)}`, class: "mono", id: "job-session" }, job.session_id)),
      h("dt", {}, "Mode"), h("dd", {}, job.mode),
      h("dt", {}, "Created"), h("dd", {}, when(job.created_at)),
      h("dt", {}, "Started"), h("dd", {}, when(job.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, when(job.finished_at)),
      h("dt", {}, "Duration"), h("dd", { id: "job-duration" }, duration(job.started_at, job.finished_at)),
      job.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, errorText(job.error))] : null,
    );
  }

  function showSummary() {
    const result = finish?.summary || job.result || null;
    const tokens = result?.usage || usage;
    if (!tokens && !finish) return;
    const cost = result ? result.cost_usd : usage?.cost_usd;
    const source = result ? result.cost_source : usage?.cost_source;
    summary.hidden = false;
    fill(
      summary,
      h("div", { class: "summary-head" },
        h("h2", {}, "Result"),
        finish ? statusBadge(finish.status) : null,
        finish?.duration_ms !== undefined && finish?.duration_ms !== null ? h("span", { class: "muted" }, `in ${ms(finish.duration_ms)}`) : null),
      tokens
        ? h("div", { id: "job-usage" }, usageLine(tokens, cost, source))
        : h("p", { class: "muted", id: "job-usage" }, "No usage reported: cost unknown."),
      result?.model || result?.usage_source
        ? h("p", { class: "muted" },
          result.model ? `model ${result.model}` : "",
          result.usage_source ? ` · tokens ${result.usage_source === "metered" ? "metered by the session's proxy" : "as the CLI reported them"}` : "",
          result.usage_mismatch ? " · the CLI's own count differs" : "")
        : null,
      finish?.error ? h("p", { class: "error" }, errorText(finish.error)) : null,
    );
  }

  async function refreshFacts() {
    // The stream's last event comes just before the job's row is final: read until it is.
    for (let attempt = 0; attempt < 20 && !stopped; attempt++) {
      try {
        job = await api(path, { signal: controller.signal });
      } catch (error) {
        if (error.name !== "AbortError") showError(explain(error));
        return;
      }
      if (!ACTIVE.has(job.status)) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (stopped) return;
    showFacts();
    setStatus(finish?.status || job.status);
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    try {
      job = await api(`${path}/cancel`, { method: "POST" });
      if (!stopped && !finish) setStatus(job.status);
    } catch (error) {
      showError(explain(error));
    } finally {
      cancel.disabled = false;
      cancel.textContent = "Cancel job";
    }
  });

  fill(
    main,
    h("div", { class: "toolbar" },
      h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)), status,
      h("span", { class: "spacer" }), streamState, cancel),
    h("div", { class: "panel job-head" },
      facts,
      h("div", { class: "job-prompt" }, h("div", { class: "kind" }, "prompt"), h("pre", { id: "job-prompt" }, job.prompt))),
    h("div", { class: "toolbar events-toolbar" },
      h("h2", {}, "Events"), h("span", { class: "spacer" }),
      h("label", {}, showRaw, " show the CLI's raw events")),
    streamError,
    view.element,
    summary,
  );
  setStatus(job.status);
  showFacts();
  setState("connecting");

  follow(`${path}/events`, {
    signal: controller.signal,
    onState: (state) => setState(state === "open" ? (finishedAtStart ? "replay" : "live") : state),
    onEvent: ({ data }) => {
      if (!data || typeof data !== "object") return false;
      view.add(data);
      if (data.kind === "job_started" && status.textContent === "queued") setStatus("running");
      if (data.kind === "usage") {
        usage = data.data;
        showSummary();
      }
      if (data.kind === "job_finished") {
        finish = data.data || {};
        // Until the job's row is read final (its record may come a moment later), the event
        // tells how and when it ended.
        job = { ...job, status: finish.status || job.status, error: job.error || finish.error || null };
        if (!job.finished_at && typeof data.ts === "number") job.finished_at = new Date(data.ts * 1000).toISOString();
        showFacts();
        setStatus(job.status);
        showSummary();
        refreshFacts();
        return true;
      }
      return false;
    },
  }).catch((error) => {
    if (stopped) return;
    showError(`The event stream stopped: ${explain(error)}`);
    setState("ended");
  });

  return () => {
    stopped = true;
    controller.abort();
  };
}
