// The sightd console: a first paint from /api/state, then live from /api/stream (server-sent
// events). Every element is built with createElement and textContent: nothing from the bus is
// ever parsed as HTML.
"use strict";

const view = { cameras: new Map(), components: new Map(), heard: new Map(), children: {},
  givenUp: [], classes: [], interval: 2, features: {}, events: [] };
const MAX_EVENTS = 200;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);  // strings become text nodes
  return node;
}

const pct = (x) => (typeof x === "number" ? `${Math.round(x * 100)}%` : "–");

// ---- cameras --------------------------------------------------------------------------------

function cameraCard(name) {
  const live = el("img", { class: "live", alt: `${name}, live` });
  const heat = el("img", { class: "heat", alt: `Grad-CAM of ${name}`, title: "click to hide" });
  heat.hidden = true;
  heat.addEventListener("click", () => { heat.hidden = true; });
  const label = el("span", { class: "label" });
  const confidence = el("span", { class: "confidence" });
  const guess = el("span", { class: "guess" });
  const overlay = el("div", { class: "overlay" }, label, confidence, guess);
  overlay.hidden = true;
  const waiting = el("div", { class: "waiting", text: "waiting for frames" });
  const stable = el("b");
  const scores = el("div", { class: "scores" });
  const button = el("button", { type: "button", text: "Grad-CAM" });
  const note = el("span", { class: "quiet" });
  const card = el("article", { class: "camera", "data-camera": name },
    el("h2", { text: name }),
    el("div", { class: "view" }, waiting, live, heat, overlay),
    el("div", { class: "stable" }, "stable label: ", stable),
    scores,
    el("div", { class: "actions" }, button, note));
  const camera = { name, card, live, heat, overlay, label, confidence, guess, stable, scores,
    button, note, waiting, bars: new Map() };
  live.addEventListener("load", () => { waiting.hidden = true; }, { once: false });
  live.addEventListener("error", () => retryStream(camera));
  live.src = streamUrl(name);
  button.addEventListener("click", () => explain(camera));
  return camera;
}

function streamUrl(name) {
  return `/stream/${encodeURIComponent(name)}.mjpg`;
}

function retryStream(camera) {  // the stream broke (a restart of the server): open it again
  camera.waiting.hidden = false;
  setTimeout(() => { camera.live.src = `${streamUrl(camera.name)}?t=${Date.now()}`; }, 2000);
}

function showLabel(message) {
  const camera = view.cameras.get(message.camera);
  if (!camera) return;
  const unknown = message.label === "unknown";
  camera.overlay.hidden = false;
  camera.overlay.classList.toggle("unknown", unknown);
  camera.label.textContent = message.label;
  camera.confidence.textContent = unknown ? "" : pct(message.confidence);
  const [top, topScore] = topGuess(message.scores);
  camera.guess.textContent = unknown && top ? `top guess: ${top} ${pct(topScore)}` : "";
  showStable(camera, message.stable);
  showScores(camera, message.scores || {}, top);
}

function topGuess(scores) {
  let best = [null, -1];
  for (const [name, score] of Object.entries(scores || {})) if (score > best[1]) best = [name, score];
  return best;
}

function showStable(camera, stable) {
  camera.stable.textContent = stable == null ? "none yet" : stable;
  camera.stable.classList.toggle("unknown", stable === "unknown");
}

function showScores(camera, scores, top) {
  const names = view.classes.length ? view.classes : Object.keys(scores).sort();
  if (camera.bars.size !== names.length || names.some((n) => !camera.bars.has(n))) {
    camera.scores.replaceChildren();
    camera.bars.clear();
    for (const name of names) {
      const fill = el("div", { class: "fill" });
      const value = el("span", { class: "pct" });
      const row = [el("span", { class: "name", text: name }), el("div", { class: "track" }, fill), value];
      camera.scores.append(...row);
      camera.bars.set(name, { fill, value, track: row[1] });
    }
  }
  for (const [name, bar] of camera.bars) {
    const score = scores[name];
    bar.fill.style.width = typeof score === "number" ? `${(score * 100).toFixed(1)}%` : "0";
    bar.value.textContent = pct(score);
    bar.track.classList.toggle("top", name === top);
  }
}

async function explain(camera) {
  camera.button.disabled = true;
  camera.note.textContent = "explaining…";
  const began = performance.now();
  try {
    const response = await fetch(`/api/explain/${encodeURIComponent(camera.name)}`,
      { method: "POST", headers: { "X-Sightd-CSRF": "1" }, credentials: "same-origin" });
    if (!response.ok) {
      let why = (await response.text()).slice(0, 300);
      try { why = JSON.parse(why).error || why; } catch (_) { /* plain text */ }
      camera.note.textContent = `Grad-CAM failed (${response.status}): ${why}`;
      return;
    }
    const image = URL.createObjectURL(await response.blob());
    if (camera.heat.src.startsWith("blob:")) URL.revokeObjectURL(camera.heat.src);
    camera.heat.src = image;
    camera.heat.hidden = false;
    let label = response.headers.get("X-Label") || "?";
    try { label = decodeURIComponent(label); } catch (_) { /* not percent-encoded */ }
    const confidence = parseFloat(response.headers.get("X-Confidence"));
    const took = Math.round(performance.now() - began);
    camera.note.textContent = `Grad-CAM: ${label} ${pct(confidence)} (${took} ms); click it to hide`;
  } catch (error) {
    camera.note.textContent = `Grad-CAM failed: ${error}`;
  } finally {
    camera.button.disabled = !view.features.explain;
  }
}

// ---- events ---------------------------------------------------------------------------------

function eventRow(event) {
  const when = typeof event.at === "number" ? new Date(event.at * 1000).toLocaleTimeString() : "";
  const change = `${event.previous == null ? "(start)" : event.previous} → ${event.label}`;
  const snapshot = el("td");
  if (event.snapshot) {
    const url = `/snapshots/${encodeURIComponent(event.snapshot)}`;
    const thumb = el("img", { class: "thumb", alt: `snapshot: ${event.label}`, loading: "lazy" });
    // The worker writes the file a moment after the event goes out: a first 404 is retried.
    let tries = 0;
    thumb.addEventListener("error", () => {
      if (++tries <= 3) setTimeout(() => { thumb.src = `${url}?try=${tries}`; }, 400 * tries);
      else thumb.replaceWith(el("span", { class: "quiet", text: "(pruned)" }));
    });
    thumb.src = url;
    snapshot.append(el("a", { href: url, target: "_blank", rel: "noopener" }, thumb));
  } else {
    snapshot.append(el("span", { class: "quiet", text: "–" }));
  }
  return el("tr", {}, el("td", { text: when }), el("td", { text: event.camera }),
    el("td", { text: change }), el("td", { text: pct(event.confidence) }), snapshot);
}

function showEvents(events) {
  const body = document.querySelector("#events tbody");
  body.replaceChildren(...events.slice(0, MAX_EVENTS).map(eventRow));
  document.getElementById("no-events").hidden = events.length > 0;
}

function addEvent(event) {
  const body = document.querySelector("#events tbody");
  body.prepend(eventRow(event));
  while (body.rows.length > MAX_EVENTS) body.lastElementChild.remove();
  document.getElementById("no-events").hidden = true;
  const camera = view.cameras.get(event.camera);
  if (camera) showStable(camera, event.label);
}

// ---- components and the model ---------------------------------------------------------------

function showComponents() {
  const names = [...new Set([...view.components.keys(), ...Object.keys(view.children)])].sort(
    (a, b) => (a === "supervisor") - (b === "supervisor") || a.localeCompare(b));
  const now = Date.now();
  const rows = names.map((name) => {
    const status = view.components.get(name) || {};
    const child = view.children[name] || {};
    let state = status.state || "not heard";
    let notes = status.reason || "";
    if (view.givenUp.includes(name) || child.process === "given-up") {
      state = "given up";
      notes = child.last_failure || notes;
    } else if (child.process === "backoff") {
      state = "restarting";
      notes = child.last_failure || notes;
    } else if (view.heard.has(name) && now - view.heard.get(name) > 3000 * view.interval) {
      state = "silent";
      notes = `no status for ${Math.round((now - view.heard.get(name)) / 1000)} s`;
    }
    const restarts = typeof child.restarts === "number" ? String(child.restarts) : "–";
    return el("tr", { "data-component": name }, el("td", { text: name }),
      el("td", { class: `state-${state.replace(" ", "-")}`, text: state }),
      el("td", { text: restarts }), el("td", { text: notes }));
  });
  document.querySelector("#components tbody").replaceChildren(...rows);
}

function takeStatus(message, heardAt = Date.now()) {
  const status = message.component;
  view.components.set(status.name, status);
  view.heard.set(status.name, heardAt);
  if (message.children) view.children = message.children;
  if (message.given_up) view.givenUp = message.given_up;
  if (message.model) showModel(message.model);
  else if (status.name.startsWith("infer") && status.state === "starting" && status.reason) {
    showNoModel(status.reason);  // a first `sightd run`: the worker waits for a taught model
  }
  if (message.stable) {
    for (const [name, stable] of Object.entries(message.stable)) {
      const camera = view.cameras.get(name);
      if (camera) showStable(camera, stable);
    }
  }
}

function showModel(model) {
  view.classes = model.classes || [];
  const trained = typeof model.created_at === "number" && model.created_at > 0
    ? new Date(model.created_at * 1000).toLocaleString() : "–";
  const calibration = typeof model.temperature === "number"
    ? (model.calibrated ? `temperature ${model.temperature.toFixed(2)}` : "not calibrated") : "–";
  const rows = [
    ["arch", model.arch || "–"],
    ["classes", view.classes.join(", ") || "–"],
    ["test accuracy", pct(model.test_accuracy)],
    ["calibration", calibration],
    ["trained at", trained],
    ["digest", model.digest || "–"],
  ];
  if (model.engine) rows.push(["served by", model.device ? `${model.engine} on ${model.device}` : model.engine]);
  const list = document.getElementById("model");
  list.replaceChildren(...rows.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: value })]));
  if (model.file_matches === false) {
    list.append(el("dt", { text: "note" }),
      el("dd", { class: "warning", text: "the model file on disk is not the one being served" }));
  }
}

function showNoModel(reason) {
  const teach = el("a", { href: "/teach" }, "Teach");
  document.getElementById("model").replaceChildren(el("dt", { text: "model" }),
    el("dd", { class: "warning", text: reason }),
    el("dt", { text: "next" }), el("dd", {}, "record and train one on the ", teach, " page"));
}

// ---- first paint and the live stream --------------------------------------------------------

async function paint() {
  const response = await fetch("/api/state", { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`/api/state: ${response.status}`);
  const state = await response.json();
  view.interval = state.status_interval || 2;
  view.features = state.features || {};
  document.getElementById("teach-link").hidden = !view.features.teach;
  const holder = document.getElementById("cameras");
  for (const name of state.cameras) {
    if (!view.cameras.has(name)) {
      const camera = cameraCard(name);
      view.cameras.set(name, camera);
      holder.append(camera.card);
    }
    const camera = view.cameras.get(name);
    camera.button.disabled = !view.features.explain;
    camera.button.title = view.features.explain ? "why this label: a heat map over the frame"
      : "Grad-CAM is not installed with this server";
  }
  if (state.model) showModel(state.model);
  view.children = state.children || {};
  view.givenUp = state.given_up || [];
  for (const status of state.components) {
    takeStatus({ component: status }, Date.now() - Math.max(0, state.now - status.at) * 1000);
  }
  for (const [name, label] of Object.entries(state.labels)) showLabel({ camera: name, ...label });
  for (const [name, stable] of Object.entries(state.stable)) {
    const camera = view.cameras.get(name);
    if (camera) showStable(camera, stable);
  }
  showEvents(state.events);
  showComponents();
}

function connect() {
  const badge = document.getElementById("connection");
  const source = new EventSource("/api/stream");
  let broken = false;
  source.addEventListener("open", () => {
    badge.textContent = "live";
    badge.className = "connection live";
    if (broken) paint().catch(() => {});  // what happened while the stream was down
    broken = false;
  });
  source.addEventListener("error", () => {
    badge.textContent = "reconnecting";
    badge.className = "connection lost";
    broken = true;
  });
  source.addEventListener("label", (e) => showLabel(JSON.parse(e.data)));
  source.addEventListener("event", (e) => addEvent(JSON.parse(e.data)));
  source.addEventListener("status", (e) => { takeStatus(JSON.parse(e.data)); showComponents(); });
  source.addEventListener("resync", () => paint().catch(() => {}));  // this page fell behind
}

paint().catch((error) => {
  document.getElementById("connection").textContent = `cannot load: ${error.message}`;
}).finally(connect);
setInterval(showComponents, 1000);  // a component that falls silent shows as such
