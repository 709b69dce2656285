// The result pane: one job's image with its boxes, the confidence slider, the detections table and
// the link to the annotated JPEG.

import { classColour, drawBoxes } from "./boxes.js";

const STATUS_TEXT = {
  uploading: "Uploading",
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
  rejected: "Rejected",
};

export function statusText(status) {
  return STATUS_TEXT[status] ?? status;
}

export class Viewer {
  // `imageUrl(job)` resolves with a URL the <img> can show the job's original image from;
  // `nameOf(id)` is the file's name where this page uploaded it (the service keeps no names).
  constructor(api, imageUrl, nameOf) {
    this.api = api;
    this.imageUrl = imageUrl;
    this.nameOf = nameOf;
    this.job = null;
    // What went wrong fetching the image or the annotated JPEG; shown until another job is.
    this.problem = null;
    this.el = Object.fromEntries(
      [
        "placeholder", "result", "result-title", "result-status", "stage", "stage-image", "overlay",
        "stage-message", "threshold", "threshold-value", "shown-count", "detections", "result-meta",
        "annotated",
      ].map((id) => [id, document.getElementById(id)]),
    );
    this.el.threshold.addEventListener("input", () => this.render());
    this.el.annotated.addEventListener("click", (event) => this.downloadAnnotated(event));
    // Labels keep their on-screen size: they are redrawn whenever the image is shown at a new size.
    new ResizeObserver(() => this.render()).observe(this.el.stage);
  }

  get id() {
    return this.job?.id ?? null;
  }

  // Shows `job` (a JobOut): a new job resets the slider to the confidence it was run with.
  async show(job) {
    const fresh = job.id !== this.id;
    this.job = job;
    this.el.placeholder.hidden = true;
    this.el.result.hidden = false;
    if (!fresh) {
      this.render();
      return;
    }
    this.problem = null;
    this.el.threshold.value = String(job.params.conf);
    const { stage, "stage-image": img } = this.el;
    stage.style.setProperty("--ratio", `${job.image.width} / ${job.image.height}`);
    stage.style.setProperty("--ar", String(job.image.width / job.image.height));
    img.removeAttribute("src");
    img.alt = `The image of job ${job.id}`;
    this.el.overlay.replaceChildren();
    this.render();
    try {
      const url = await this.imageUrl(job);
      if (this.id === job.id) img.src = url;
    } catch (err) {
      if (this.id === job.id) this.fail(`The image cannot be shown: ${err.message}`);
    }
  }

  // `job` changed (a live event): redraw it if it is the one shown.
  update(job) {
    if (job.id === this.id) this.show(job);
  }

  fail(problem) {
    this.problem = problem;
    this.render();
  }

  message(text) {
    const caption = this.el["stage-message"];
    caption.textContent = text ?? "";
    caption.hidden = !text;
  }

  render() {
    const job = this.job;
    if (job === null) return;
    const shortId = job.id.slice(0, 8);
    this.el["result-title"].textContent = this.nameOf(job.id) ?? `Job ${shortId}`;
    this.el["result-title"].title = job.id;
    const status = this.el["result-status"];
    status.textContent = statusText(job.status);
    status.dataset.status = job.status;
    this.el.stage.dataset.status = job.status;
    this.message(this.problem ?? stageMessage(job));

    const threshold = Number(this.el.threshold.value);
    this.el["threshold-value"].textContent = threshold.toFixed(2);
    const all = job.detections ?? [];
    const shown = all.filter((d) => d.confidence >= threshold).sort((a, b) => b.confidence - a.confidence);
    // Least confident first, so the surest boxes and their labels lie on top.
    drawBoxes(this.el.overlay, [...shown].reverse(), {
      width: job.image.width,
      height: job.image.height,
      shownWidth: this.el.stage.clientWidth,
    });
    this.el.threshold.disabled = job.detections === null;
    this.el["shown-count"].textContent =
      job.detections === null ? "" : `${shown.length} of ${all.length} detections shown`;
    this.fillTable(shown);
    this.el["result-meta"].textContent = meta(job);
    const link = this.el.annotated;
    link.hidden = job.status !== "succeeded";
    link.href = `/v1/jobs/${encodeURIComponent(job.id)}/annotated`;
    link.target = "_blank";
    link.rel = "noopener";
  }

  fillTable(shown) {
    const rows = shown.map((d) => {
      const row = document.createElement("tr");
      const { x1, y1, x2, y2 } = d.box;
      const box = [x1, y1, x2, y2].map((v) => Math.round(v)).join(", ");
      for (const text of [d.label, d.confidence.toFixed(3), box]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      row.firstChild.classList.add("swatch");
      row.firstChild.style.setProperty("--swatch", classColour(d.class_id).stroke);
      return row;
    });
    const body = this.el.detections.tBodies[0];
    body.replaceChildren(...rows);
    this.el.detections.hidden = rows.length === 0;
  }

  // With a key, the link cannot send it: fetch the JPEG with the header and save it from a blob: URL.
  async downloadAnnotated(event) {
    if (this.api.key === null || this.job === null) return;
    event.preventDefault();
    const job = this.job;
    try {
      const url = await this.api.objectUrl(this.el.annotated.href);
      const save = document.createElement("a");
      save.href = url;
      save.download = `visionq-${job.id}-annotated.jpg`;
      save.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      if (this.id === job.id) this.fail(`The annotated image cannot be fetched: ${err.message}`);
    }
  }
}

function stageMessage(job) {
  switch (job.status) {
    case "queued":
      return "Waiting for a worker…";
    case "running":
      return "Detecting objects…";
    case "failed":
      return `Failed: ${job.error?.message ?? "unknown error"}`;
    case "cancelled":
      return "The job was cancelled.";
    default:
      return job.detections?.length === 0 ? "No objects found." : "";
  }
}

function meta(job) {
  const parts = [`job ${job.id.slice(0, 8)}`, job.model, `${job.image.width}×${job.image.height}`];
  const t = job.timings_ms;
  if (t?.inference != null) parts.push(`inference ${Math.round(t.inference)} ms`);
  if (t?.total != null) parts.push(`total ${Math.round(t.total)} ms`);
  parts.push(new Date(job.created_at).toLocaleString());
  return parts.join(" · ");
}
