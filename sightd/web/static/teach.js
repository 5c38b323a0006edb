"use strict";
// The Teach page: record a class from a live camera, look through the data set, train with
// the curve drawn as it goes, deploy a run. Every element is built with textContent (nothing
// the server sends is parsed as HTML); every POST carries the header the server's CSRF check
// asks for.

const $ = (id) => document.getElementById(id);
const THUMBS = 24; // thumbnails a class shows before "more"
const RECORDING = ["waiting", "countdown", "recording"];
const TRAINING = ["starting", "training"];
// How long the page waits for the worker to swap a deployed model in: the worker first tests it
// and, on OpenVINO or ONNX Runtime, makes its export (9 to 15 s on a loaded 2-core machine).
const WORKER_WAIT_MS = 180000;
let shownRun = null; // the run whose result is on the page

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else if (key === "data") Object.assign(node.dataset, value);
    else node[key] = value; // className, src, alt, title, type, disabled: properties, not markup
  }
  node.append(...children); // strings become text nodes
  return node;
}

async function api(url, body) {
  const init = { method: body === undefined ? "GET" : "POST", headers: {} };
  if (body !== undefined) {
    init.headers = { "X-Sightd-CSRF": "1", "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

function say(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

// An event handler whose failure is said on the page.
const guard = (fn) => async (...args) => {
  try {
    await fn(...args);
  } catch (error) {
    say(error.message);
  }
};

const part = (...names) => names.map(encodeURIComponent).join("/");
const fixed = (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : "–");
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "–");

// ---- 1 · record ----------------------------------------------------------------------------

let rois = {}; // camera -> its roi [x, y, w, h], fractions of the frame, or null

function showLive() {
  const camera = $("camera").value;
  $("no-live").hidden = true;
  if (document.hidden || !camera) $("live").removeAttribute("src"); // no tab, no stream
  else $("live").src = `/stream/${encodeURIComponent(camera)}.mjpg`;
  const roi = rois[camera];
  $("roi").hidden = !roi;
  if (roi) { // what is recorded: the part of the frame the worker classifies
    const box = $("roi").style;
    [box.left, box.top, box.width, box.height] = roi.map((f) => `${f * 100}%`);
  }
}

async function startRecording(event) {
  event.preventDefault();
  const form = new FormData($("record-form"));
  const body = { camera: form.get("camera"), class: form.get("class") };
  for (const key of ["count", "every_s", "countdown_s"]) body[key] = Number(form.get(key));
  say("");
  showRecording(await api("/api/teach/record", body));
  pollRecording();
}

let recordTimer = null;
function pollRecording() {
  clearTimeout(recordTimer);
  recordTimer = setTimeout(guard(async () => {
    const state = await api("/api/teach/record");
    showRecording(state);
    if (RECORDING.includes(state.state)) pollRecording();
    else await loadClasses();
  }), 250);
}

function showRecording(state) {
  const active = RECORDING.includes(state.state);
  $("record").disabled = active;
  $("record-stop").disabled = !active;
  const overlay = $("overlay");
  overlay.dataset.state = state.state;
  overlay.textContent = {
    waiting: "waiting for the camera…",
    countdown: String(Math.ceil(state.left_s || 0) || "●"),
    recording: `${state.written} / ${state.count}`,
  }[state.state] || "";
  const what = `${state.written} images of ${state.class}`;
  $("record-state").dataset.state = state.state;
  $("record-state").textContent = {
    waiting: `waiting for a frame from ${state.camera}…`,
    countdown: `recording ${state.class} in ${fixed(state.left_s, 0)} s`,
    recording: `recording ${state.class} from ${state.camera}: ${state.written} of ${state.count}`,
    done: `recorded ${what}`,
    stopped: `stopped after ${what}`,
    error: `recording failed: ${state.reason}`,
  }[state.state] || "";
}

// ---- 2 · data set --------------------------------------------------------------------------

async function loadClasses() {
  const { classes } = await api("/api/teach/classes");
  $("classes").replaceChildren(...classes.map(classCard));
  if (!classes.length) $("classes").append(el("p", { className: "placeholder", text: "no classes yet: add one" }));
  const select = $("record-class");
  const chosen = select.value;
  select.replaceChildren(...classes.filter((c) => c.managed).map((c) => el("option", { value: c.name, text: c.name })));
  if (chosen) select.value = chosen;
}

function classCard(cls) {
  const thumbs = el("div", { className: "thumbs" });
  const count = el("span", { className: "count", text: `${cls.count} images` });
  const card = el("article", { className: "class", data: { name: cls.name } },
    el("h3", {}, el("span", { className: "name", text: cls.name }), count), thumbs);
  if (!cls.managed) {
    thumbs.append(el("p", { className: "placeholder", text: "its folder name cannot be used here" }));
  } else if (cls.count === 0) {
    const remove = guard(async () => {
      await api(`/api/teach/classes/${part(cls.name)}/delete`, {});
      await loadClasses();
    });
    card.append(el("button", { type: "button", className: "link", text: "remove class", on: { click: remove } }));
  } else {
    loadSamples(cls.name, thumbs, count, 0).catch((error) => say(error.message));
  }
  return card;
}

async function loadSamples(name, box, count, offset) {
  const page = await api(`/api/teach/classes/${part(name)}/samples?offset=${offset}&limit=${THUMBS}`);
  for (const file of page.files) box.append(thumb(name, file, count));
  const shown = offset + page.files.length;
  if (shown < page.total) {
    const more = el("button", { type: "button", className: "more", text: `+${page.total - shown}` });
    more.addEventListener("click", guard(async () => {
      more.remove();
      await loadSamples(name, box, count, shown);
    }));
    box.append(more);
  }
}

function thumb(name, file, count) {
  const image = el("img", { src: `/api/teach/thumb/${part(name, file)}`, alt: file, title: file, loading: "lazy" });
  const remove = el("button", { type: "button", className: "delete", title: `delete ${file}`, text: "×" });
  const figure = el("figure", { className: "thumb" }, image, remove);
  remove.addEventListener("click", guard(async () => {
    const answer = await api(`/api/teach/classes/${part(name)}/samples/${part(file)}/delete`, {});
    figure.remove();
    count.textContent = `${answer.count} images`;
  }));
  return figure;
}

async function addClass(event) {
  event.preventDefault();
  const name = $("new-class").value.trim();
  await api("/api/teach/classes", { name });
  $("new-class").value = "";
  await loadClasses();
  $("record-class").value = name;
  say("");
}

// ---- 3 · train -----------------------------------------------------------------------------

async function startTraining(event) {
  event.preventDefault();
  const body = {};
  if ($("epochs").value) body.epochs = Number($("epochs").value);
  if ($("arch").value) body.arch = $("arch").value;
  say("");
  $("result").hidden = true;
  showTraining(await api("/api/teach/train", body));
}

// The server streams the training state (server-sent events from the trainer's progress file):
// one message at once, then one per change. The stream stays open while the page is, so a run
// started from another tab shows here too; EventSource reconnects by itself after a break.
let trainStream = null;
let trainWas = null; // the last state shown, to reload the runs once when a run is done
function followTraining() {
  if (trainStream) return;
  trainStream = new EventSource("/api/teach/train/stream");
  trainStream.addEventListener("train", guard(async (message) => {
    const state = JSON.parse(message.data);
    showTraining(state);
    const finished = state.state === "done" && trainWas !== null && trainWas !== "done";
    trainWas = state.state;
    if (finished) await loadRuns();
  }));
}

function showTraining(state) {
  const active = TRAINING.includes(state.state);
  $("train").disabled = active;
  $("train-stop").disabled = !active;
  const epochs = state.epochs || [];
  const last = epochs[epochs.length - 1];
  const plan = state.plan;
  let text = "";
  if (state.state === "starting") text = `starting: loading the images… ${fixed(state.elapsed_s, 0)} s`;
  else if (state.state === "training" && plan) {
    text = `${plan.images} images, ${plan.classes.length} classes, ${plan.arch} on ${plan.device}`;
    if (last) {
      text += ` · epoch ${last.epoch}/${last.epochs} · train loss ${fixed(last.train_loss)} · ` +
        `val accuracy ${fixed(last.val_accuracy)} · val loss ${fixed(last.val_loss)}`;
    }
  } else if (state.state === "done") text = `done in ${fixed(state.elapsed_s, 1)} s: run ${state.run}`;
  else if (state.state === "stopped") text = "stopped";
  else if (state.state === "error") text = `training failed: ${state.reason}`;
  $("train-state").dataset.state = state.state;
  $("train-state").textContent = text;
  drawCurve(epochs, plan ? plan.epochs : 0);
  if (state.state === "done" && state.result) showResult(state.run, state.result);
}

function showResult(run, result) {
  shownRun = run;
  const calibration = result.calibration || {};
  $("test-accuracy").textContent = fixed(result.test_accuracy);
  $("ece").textContent = `${fixed(calibration.test_ece_before)} → ${fixed(calibration.test_ece_after)}`;
  $("temperature").textContent = fixed(calibration.temperature, 2);
  $("confusion").src = `/api/teach/runs/${part(run)}/confusion_matrix.png`;
  $("calibration").src = `/api/teach/runs/${part(run)}/calibration.png`;
  $("result").hidden = false;
}

// Train loss and validation loss against the largest loss seen, validation accuracy from 0 to 1.
function drawCurve(epochs, planned) {
  const canvas = $("curve");
  const g = canvas.getContext("2d");
  const [w, h, pad, top] = [canvas.width, canvas.height, 28, 30]; // the legend sits above top
  g.clearRect(0, 0, w, h);
  canvas.dataset.epochs = epochs.length; // what the curve holds, for a reader that is not a person
  g.strokeStyle = "#8884";
  g.strokeRect(pad, top, w - 2 * pad, h - pad - top);
  const n = Math.max(planned, epochs.length, 2);
  const x = (epoch) => pad + ((epoch - 1) / (n - 1)) * (w - 2 * pad);
  const y = (fraction) => h - pad - Math.min(1, Math.max(0, fraction)) * (h - pad - top);
  const worst = Math.max(1e-6, ...epochs.map((e) => Math.max(e.train_loss, e.val_loss)));
  const lines = [
    ["train loss", "#e08a2c", (e) => e.train_loss / worst],
    ["val loss", "#c0392b", (e) => e.val_loss / worst],
    ["val accuracy", "#2c7be0", (e) => e.val_accuracy],
  ];
  g.font = "12px system-ui, sans-serif";
  lines.forEach(([name, colour, value], i) => {
    g.strokeStyle = g.fillStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    epochs.forEach((e, j) => (j ? g.lineTo(x(e.epoch), y(value(e))) : g.moveTo(x(e.epoch), y(value(e)))));
    g.stroke();
    g.fillText(name, pad + i * 110, 18);
  });
  g.fillStyle = "#888";
  g.fillText(`epoch ${epochs.length} of ${planned || "?"}`, w - pad - 110, h - 8);
  g.fillText(`loss ≤ ${fixed(worst, 2)}`, pad, h - 8);
}

// ---- 4 · deploy and the served model -------------------------------------------------------

async function deploy(run) {
  say("");
  const before = await workerView(); // its refusals so far: a new one is this deploy's
  const answer = await api("/api/teach/deploy", { run });
  const status = $("deploy-state");
  status.dataset.state = "deployed";
  status.textContent = answer.reload
    ? `deployed ${run} (${answer.how}); waiting for the worker to test it and swap in ${answer.digest}…`
    : `deployed ${run}: ${answer.note}`;
  await Promise.all([loadRuns(), loadServed()]);
  if (answer.reload) await waitForWorker(run, answer.digest, before.errors);
}

// The Watch page's view of the bus: the model the worker serves, and the models it refused.
async function workerView() {
  try {
    const state = await api("/api/state");
    const infer = (state.components || []).find((c) => c.name === "infer" || c.name.startsWith("infer:")) || {};
    return { model: state.model || null, errors: infer.model_errors || 0, error: infer.model_error };
  } catch (error) {
    return { model: null, errors: 0, error: null };
  }
}

async function workerModel() {
  return (await workerView()).model;
}

async function waitForWorker(run, digest, errorsBefore) {
  const status = $("deploy-state");
  const deadline = Date.now() + WORKER_WAIT_MS;
  while (Date.now() < deadline) {
    const view = await workerView();
    if (view.model && view.model.digest === digest) {
      status.dataset.state = "served";
      status.textContent = `the worker serves ${run} (${digest})`;
      await loadServed();
      return;
    }
    if (view.errors > errorsBefore) { // its hot reload tested the file and said no
      status.dataset.state = "refused";
      status.textContent = `the worker refused ${run} and keeps serving its model: ${view.error}`;
      await loadServed();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  status.dataset.state = "late";
  status.textContent = `the worker has not swapped in ${digest} in ${WORKER_WAIT_MS / 1000} s; ` +
    "the Watch page shows why (its model error)";
}

async function loadServed() {
  const [file, worker] = await Promise.all([api("/api/teach/served"), workerModel()]);
  const rows = [["file", file.path]];
  if (file.exists) {
    rows.push(["run", file.run || "–"], ["arch", file.arch], ["classes", (file.classes || []).join(", ")],
      ["test accuracy", fixed(file.test_accuracy)], ["temperature", fixed(file.temperature, 2)],
      ["trained", when(file.created_at)], ["file digest", file.digest]);
  } else rows.push(["", "no model there yet: train and deploy one"]);
  rows.push(["worker serves", worker ? `${worker.arch} ${worker.digest}` : "– (no worker status here)"]);
  if (!file.reload) rows.push(["hot reload", "off (model.reload): a deployed model is served after a restart"]);
  $("served").replaceChildren(...rows.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: String(value) })]));
  $("served").dataset.digest = worker ? worker.digest : "";
}

async function loadRuns() {
  const { runs } = await api("/api/teach/runs");
  const rows = runs.map((run) => {
    const button = el("button", { type: "button", text: run.served ? "served" : "Deploy", disabled: run.served });
    button.addEventListener("click", guard(() => deploy(run.run)));
    return el("tr", { data: { run: run.run } },
      el("td", { text: run.run }), el("td", { text: fixed(run.test_accuracy) }),
      el("td", { text: run.arch || "–" }), el("td", { text: (run.classes || []).join(", ") }),
      el("td", {}, button));
  });
  $("runs").tBodies[0].replaceChildren(...rows);
}

// ---- start ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", guard(async () => {
  const overview = await api("/api/teach");
  $("data-dir").textContent = overview.data_dir;
  rois = Object.fromEntries(overview.cameras.map((c) => [c.name, c.roi]));
  $("camera").replaceChildren(...overview.cameras.map((c) => el("option", { value: c.name, text: c.name })));
  $("epochs").placeholder = `${overview.train.epochs} (config)`;
  $("arch").options[0].textContent = `as configured (${overview.train.arch})`;
  $("live").addEventListener("error", () => { $("no-live").hidden = false; });
  $("camera").addEventListener("change", showLive);
  document.addEventListener("visibilitychange", showLive);
  $("record-form").addEventListener("submit", guard(startRecording));
  $("record-stop").addEventListener("click", guard(async () => showRecording(await api("/api/teach/record/stop", {}))));
  $("add-class").addEventListener("submit", guard(addClass));
  $("train-form").addEventListener("submit", guard(startTraining));
  $("train-stop").addEventListener("click", guard(async () => showTraining(await api("/api/teach/train/stop", {}))));
  $("deploy").addEventListener("click", guard(() => deploy(shownRun)));
  showLive();
  await Promise.all([loadClasses(), loadRuns(), loadServed()]);
  const recording = await api("/api/teach/record");
  showRecording(recording);
  if (RECORDING.includes(recording.state)) pollRecording();
  followTraining();
}));
