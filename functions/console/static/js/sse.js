// A job's events as Server-Sent Events over fetch. EventSource cannot send an Authorization
// header, and the key must never go in a URL, so the stream is read and framed here. A dropped
// connection is reopened with Last-Event-ID (the last seq seen), as the SDK does: no event is
// lost, and one seen twice (a seq not above the last) is dropped.

import { errorOf, headers } from "./api.js";

const RETRY_MS = [250, 500, 1000, 2000, 5000];

/**
 * Follow `path` until `onEvent` returns true (the last event) or `signal` aborts.
 * onEvent({id, event, data}) gets `data` parsed from JSON; onState("open" | "reconnecting" | "ended").
 */
export async function follow(path, { onEvent, onState = () => {}, signal, lastId = 0 } = {}) {
  let failures = 0;
  while (!signal?.aborted) {
    let done = false;
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = String(lastId);
      const response = await fetch(path, { headers: headers(undefined, extra), signal });
      if (!response.ok) {
        const error = await errorOf(response);
        if (response.status < 500) throw Object.assign(error, { fatal: true });
        throw error;
      }
      onState("open");
      failures = 0;
      for await (const frame of frames(response.body)) {
        const seq = Number(frame.id);
        if (frame.id && Number.isInteger(seq)) {
          if (seq <= lastId) continue; // seen before the reconnect
          lastId = seq;
        }
        if (!frame.event && !frame.data) continue;
        let data = frame.data;
        try { data = JSON.parse(frame.data); } catch { /* not JSON: keep the text */ }
        if (onEvent({ id: frame.id, event: frame.event || "message", data })) {
          done = true;
          break;
        }
      }
    } catch (error) {
      if (signal?.aborted) break;
      if (error.fatal) throw error;
    }
    if (done) break;
    // The stream ended or broke before the last event: open it again after a pause.
    onState("reconnecting");
    await sleep(RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)], signal);
  }
  onState("ended");
  return lastId;
}

/** The SSE frames of a byte stream: {id, event, data}, per the HTML spec's parsing rules. */
export async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { id: "", event: "", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A chunk may end between the \r and \n of one line end: hold the \r back.
      const held = buffer.endsWith("\r") ? "\r" : "";
      const lines = buffer.slice(0, buffer.length - held.length).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held; // an unfinished line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (frame.data.length || frame.event) {
            yield { id: frame.id, event: frame.event, data: frame.data.join("\n") };
          }
          frame = { id: "", event: "", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // a heartbeat comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") frame.data.push(value);
        else if (field === "event") frame.event = value;
        else if (field === "id" && !value.includes("\0")) frame.id = value;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
