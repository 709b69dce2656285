// A job's live status from GET /v1/jobs/{id}/events, read with fetch() rather than EventSource:
// EventSource cannot send the Authorization header an API key needs.

import { ApiError } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// Reconnect delays after a dropped stream: the first event of a new stream is the job's current
// state, so nothing is missed by reconnecting; doubling keeps a down service from being hammered.
const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 10_000;

// The text/event-stream format (the HTML standard's "event stream interpretation"), fed in chunks that
// may split lines anywhere. Only `event` and `data` matter here; `id` and `retry` are ignored.
export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.type = "";
    this.data = [];
  }

  // The events completed by `chunk`, as {event, data}.
  push(chunk) {
    this.buffer += chunk;
    // A chunk may end between the \r and the \n of one line break: wait for the next.
    return this.lines(this.buffer.endsWith("\r") ? this.buffer.length - 1 : this.buffer.length);
  }

  // The events completed by the end of the stream (a last \r held back by push ends its line); an
  // event left without its blank line is dropped, as the standard says.
  end() {
    return this.lines(this.buffer.length);
  }

  lines(cut) {
    const lines = this.buffer.slice(0, cut).split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + this.buffer.slice(cut);
    const events = [];
    for (const line of lines) {
      const event = this.line(line);
      if (event !== null) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      const event = this.data.length ? { event: this.type || "message", data: this.data.join("\n") } : null;
      this.type = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    return null;
  }
}

// Calls `onJob(job)` with every state the job passes through until it is terminal, reconnecting when
// the stream drops early; resolves with the terminal job. Client errors (404: the job is gone) reject.
export async function watchJob(api, id, onJob, { signal, onRetry } = {}) {
  let delay = FIRST_RETRY_MS;
  while (!signal?.aborted) {
    try {
      const job = await readStream(api, id, onJob, signal);
      if (job !== null) return job;
    } catch (err) {
      if (err.name === "AbortError") break;
      if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) throw err;
    }
    onRetry?.();
    await sleep(delay, signal);
    delay = Math.min(delay * 2, LAST_RETRY_MS);
  }
  throw new DOMException("stopped watching", "AbortError");
}

// The terminal job, or null when the stream ended before the job did.
async function readStream(api, id, onJob, signal) {
  const response = await api.request(`/v1/jobs/${encodeURIComponent(id)}/events`, {
    headers: { Accept: "text/event-stream" },
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new EventStreamParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      for (const { event, data } of done ? parser.end() : parser.push(value)) {
        if (event === "error") {
          // The job was deleted while the stream was open: as final as a 404.
          const { error } = JSON.parse(data);
          throw new ApiError(404, error.code, error.message);
        }
        if (event !== "job") continue;
        const job = JSON.parse(data);
        onJob(job);
        if (TERMINAL.has(job.status)) return job;
      }
      if (done) return null;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
