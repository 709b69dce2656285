// The page: uploads become jobs watched live, recent jobs reopen, the model picker, the key prompt.

import { Api } from "./api.js";
import { TERMINAL, watchJob } from "./events.js";
import { askForKey } from "./keyform.js";
import { Viewer, statusText } from "./viewer.js";

// Browsers keep at most 6 HTTP/1.1 connections to one host, and an event stream holds one for the
// job's whole life: 3 streams and 2 uploads at a time leave one for the rest (images, pages).
const MAX_STREAMS = 3;
const MAX_UPLOADS = 2;
const RECENT_PAGE = 10;
// Images kept for reopening without a new request (each a few hundred KB of memory).
const MAX_IMAGES = 50;
const SETTINGS = ["conf", "iou", "max_det", "classes"];

const $ = (id) => document.getElementById(id);

// At most `size` of the functions given to run() at once; the others wait, first come first served.
class Slots {
  constructor(size) {
    this.free = size;
    this.waiting = [];
  }

  async run(fn) {
    if (this.free > 0) this.free -= 1;
    else await new Promise((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}

const api = new Api(askForKey);
const jobs = new Map(); // id -> the latest JobOut seen
const images = new Map(); // id -> a URL of the job's original image (a local file, or a fetched blob)
const names = new Map(); // id -> the name of the file this page uploaded for it
const watching = new Set();
const streams = new Slots(MAX_STREAMS);
const uploads = new Slots(MAX_UPLOADS);
const viewer = new Viewer(api, imageOf, (id) => names.get(id));
let cursor = null;

async function imageOf(job) {
  if (!images.has(job.id)) keepImage(job.id, await api.objectUrl(`/v1/jobs/${encodeURIComponent(job.id)}/image`));
  return images.get(job.id);
}

// A fetched image's blob stays in memory until its URL is revoked: a long session keeps the latest.
function keepImage(id, url) {
  images.set(id, url);
  for (const [old, oldUrl] of images) {
    if (images.size <= MAX_IMAGES) break;
    images.delete(old);
    URL.revokeObjectURL(oldUrl);
  }
}

// Every new state of a job, from whichever source, goes through here.
function onJob(job) {
  jobs.set(job.id, job);
  for (const item of itemsOf(job.id)) paintJob(item, job);
  viewer.update(job);
}

function itemsOf(id) {
  return document.querySelectorAll(`.job[data-job-id="${CSS.escape(id)}"]`);
}

function watch(job) {
  if (TERMINAL.has(job.status) || watching.has(job.id)) return;
  watching.add(job.id);
  streams
    .run(() => watchJob(api, job.id, onJob, { onRetry: () => paintRetry(job.id) }))
    .catch((err) => {
      for (const item of itemsOf(job.id)) showError(item, `Live status lost: ${err.message}`);
    })
    .finally(() => watching.delete(job.id));
}

function newItem(name, onOpen) {
  const item = $("job-item").content.firstElementChild.cloneNode(true);
  item.querySelector(".job-name").textContent = name;
  item.querySelector(".job-open").addEventListener("click", () => onOpen(item));
  return item;
}

function paintStatus(item, status) {
  item.dataset.status = status;
  const pill = item.querySelector(".status");
  pill.textContent = statusText(status);
  pill.dataset.status = status;
}

function paintJob(item, job) {
  item.dataset.jobId = job.id;
  paintStatus(item, job.status);
  const found = job.detections === null ? "" : `${job.detections.length} objects · `;
  item.querySelector(".job-sub").textContent = `${found}${job.model} · ${job.image.width}×${job.image.height}`;
  if (job.status === "failed") showError(item, job.error?.message ?? "The job failed.");
  else showError(item, "");
}

function paintRetry(id) {
  for (const item of itemsOf(id)) showError(item, "Reconnecting to the live status…");
}

// The message sits in the file's own list item, where the user looks for that file.
function showError(item, message) {
  const line = item.querySelector(".job-error");
  line.textContent = message;
  line.hidden = !message;
}

function select(id) {
  for (const item of document.querySelectorAll(".job")) {
    if (item.dataset.jobId === id) item.setAttribute("aria-current", "true");
    else item.removeAttribute("aria-current");
  }
}

function open(id) {
  const job = jobs.get(id);
  if (job === undefined) return;
  select(id);
  viewer.show(job);
  watch(job);
}

// ----- uploads

function submitForm(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  const model = $("model");
  if (!model.disabled && model.value) form.append("model", model.value);
  for (const name of SETTINGS) {
    const value = $(name).value.trim();
    if (value) form.append(name, value);
  }
  return form;
}

async function uploadOne(file, index, item, batch) {
  try {
    const form = submitForm(file);
    const job = await uploads.run(() => api.json("/v1/jobs", { method: "POST", body: form }));
    keepImage(job.id, URL.createObjectURL(file));
    item.dataset.jobId = job.id;
    names.set(job.id, file.name);
    addRecent(job, { prepend: true });
    onJob(job);
    watch(job);
    // The batch's first file that becomes a job is shown, whichever upload ends first (at most one
    // switch, within the batch's first moments); the others wait in the list, a click away.
    if (index < batch.shown) {
      batch.shown = index;
      open(job.id);
    }
  } catch (err) {
    paintStatus(item, "rejected");
    showError(item, err.message);
  }
}

function uploadAll(files) {
  const batch = { shown: Infinity };
  const items = files.map((file) => {
    const item = newItem(file.name, () => item.dataset.jobId && open(item.dataset.jobId));
    item.classList.add("upload");
    paintStatus(item, "uploading");
    item.querySelector(".job-sub").textContent = formatBytes(file.size);
    return item;
  });
  // Newest batch first, each batch in the order its files were given.
  $("uploads").prepend(...items);
  $("uploads-panel").hidden = $("uploads").children.length === 0;
  files.forEach((file, i) => uploadOne(file, i, items[i], batch));
}

// ----- recent jobs

function addRecent(job, { prepend = false } = {}) {
  jobs.set(job.id, jobs.get(job.id) ?? job);
  const list = $("recent");
  if (list.querySelector(`.job[data-job-id="${CSS.escape(job.id)}"]`)) return;
  const item = newItem(names.get(job.id) ?? `Job ${job.id.slice(0, 8)}`, () => open(job.id));
  item.querySelector(".job-name").title = job.id;
  paintJob(item, jobs.get(job.id));
  if (prepend) list.prepend(item);
  else list.append(item);
  $("recent-empty").hidden = true;
}

async function loadRecent(reset) {
  const params = new URLSearchParams({ limit: String(RECENT_PAGE) });
  if (!reset && cursor !== null) params.set("cursor", cursor);
  const more = $("more");
  more.disabled = true;
  try {
    const page = await api.json(`/v1/jobs?${params}`);
    if (reset) $("recent").replaceChildren();
    for (const job of page.jobs) addRecent(job);
    cursor = page.next_cursor;
    more.hidden = cursor === null;
    $("recent-empty").hidden = $("recent").children.length > 0;
  } finally {
    more.disabled = false;
  }
}

// ----- models

async function loadModels() {
  const { models, default: fallback } = await api.json("/v1/models");
  const select = $("model");
  select.replaceChildren(
    ...models.map((m) => new Option(m.name, m.name, m.name === fallback, m.name === fallback)),
  );
  select.disabled = models.length === 0;
  const describe = () => {
    const model = models.find((m) => m.name === select.value);
    $("model-info").textContent = model ? `${model.classes.length} classes, e.g. ${model.classes.slice(0, 4).join(", ")}` : "No models are pulled.";
  };
  select.onchange = describe;
  describe();
}

// ----- start

function notice(message) {
  const line = $("notice");
  line.textContent = message;
  line.hidden = !message;
}

async function start() {
  const results = await Promise.allSettled([loadModels(), loadRecent(true)]);
  const failed = results.find((r) => r.status === "rejected");
  notice(failed ? failed.reason.message : "");
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function wire() {
  const input = $("file-input");
  const zone = $("dropzone");
  zone.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    uploadAll([...input.files]);
    input.value = "";
  });
  // The whole page takes a drop: a file dropped beside the zone would otherwise replace the page.
  let depth = 0;
  document.addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth += 1;
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    if (e.dataTransfer?.files.length) uploadAll([...e.dataTransfer.files]);
  });
  $("more").addEventListener("click", () => loadRecent(false).catch((err) => notice(err.message)));
  $("refresh").addEventListener("click", () => loadRecent(true).catch((err) => notice(err.message)));
  $("key-button").addEventListener("click", () => api.newKey(false).then(start, () => {}));
}

wire();
start();
