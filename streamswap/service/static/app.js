// The streamswap control page: polls /status and /events, shows the MJPEG preview, and
// drives /pause, /resume and /source. Same origin only; a session cookie from /login
// stands in for the bearer token when the API needs one.
"use strict";

const $ = (id) => document.getElementById(id);
let eventsSeq = 0;
let needLogin = false;
let previewOn = false;

function text(id, value) {
  $(id).textContent = value;
}

function ms(v) {
  return v === null || v === undefined ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString();
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store", ...options });
  if (response.status === 401) {
    showLogin();
    throw new Error("the API needs its token");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

function showLogin(message) {
  needLogin = true;
  stopPreview();
  const dialog = $("login");
  text("login-error", message || "");
  if (!dialog.open) dialog.showModal();
}

async function login(event) {
  event.preventDefault();
  try {
    const response = await fetch("login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("token").value }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      text("login-error", body.error || `sign-in failed (${response.status})`);
      return;
    }
    needLogin = false;
    $("token").value = "";
    $("login").close();
    startPreview();
    refresh();
    loadSelection();
  } catch (e) {
    text("login-error", `sign-in failed: ${e.message}`);
  }
}

function startPreview() {
  if (previewOn || needLogin) return;
  previewOn = true;
  // A fresh URL each time: the browser opens one MJPEG stream per <img> src.
  $("preview").src = `preview.mjpg?t=${Date.now()}`;
}

function stopPreview() {
  previewOn = false;
  $("preview").removeAttribute("src");
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.appendChild(td);
  }
  return tr;
}

function showStatus(s) {
  const state = s.state || "?";
  const badge = $("state");
  badge.textContent = state;
  badge.className = `badge state-${state}`;
  $("paused-badge").hidden = !s.paused;
  $("pause").hidden = !!s.paused;
  $("resume").hidden = !s.paused;
  const daemon = s.daemon || {};
  const uptime = daemon.uptime_s !== undefined ? daemon.uptime_s : s.uptime_s;
  text("summary", uptime !== undefined ? `up ${Math.round(uptime)} s` : "");
  const names = s.source_identity || [];
  // File names, the full paths on hover.
  text("identity", names.length ? names.map((n) => n.split(/[\\/]/).pop()).join(", ") : "none (frames pass through)");
  $("identity").title = names.join("\n");
  text("fps", s.fps_in !== undefined ? `${s.fps_in.toFixed(1)} → ${s.fps_out.toFixed(1)}` : "–");
  text("latency", s.latency_ms_p50 !== undefined ? `${ms(s.latency_ms_p50)} / ${ms(s.latency_ms_p95)} ms` : "–");
  text("frames", s.frames_in !== undefined ? `${s.frames_in} / ${s.frames_out}` : "–");
  const reasons = Object.entries(s.dropped_by_reason || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  text("dropped", s.dropped !== undefined ? `${s.dropped}${reasons ? ` (${reasons})` : ""}` : "–");
  const errors = s.errors || {};
  text("errors", Object.values(errors).reduce((a, b) => a + b, 0).toString());
  const stages = $("stages");
  stages.replaceChildren();
  const stageNames = new Set([...Object.keys(s.stage_ms || {}), ...Object.keys(errors)]);
  for (const name of stageNames) {
    const r = row([name, ms((s.stage_ms || {})[name]), (errors[name] || 0).toString()]);
    if ((s.degraded_stages || []).includes(name)) r.className = "bad";
    stages.appendChild(r);
  }
  text("input", s.input || "–");
  text("video", s.video ? `${s.video.width}×${s.video.height} @ ${s.video.fps.toFixed(2)} fps` : "");
  const outputs = $("outputs");
  outputs.replaceChildren();
  const states = s.output_states || (s.outputs || []).map((name) => ({ name, state: "?" }));
  for (const o of states) {
    const r = row([o.name, o.state, String(o.frames ?? "–"), String(o.dropped ?? o.skipped ?? 0),
                   String(o.reconnects ?? 0)]);
    if (o.state !== "up") r.className = "bad";
    outputs.appendChild(r);
  }
}

function showEvents(items) {
  const list = $("events");
  for (const e of items) {
    const li = document.createElement("li");
    li.className = `level-${e.level.toLowerCase()}`;
    const time = document.createElement("time");
    time.textContent = new Date(e.time * 1000).toLocaleTimeString();
    const level = document.createElement("span");
    level.className = "level";
    level.textContent = e.level;
    const msg = document.createElement("span");
    msg.textContent = e.text;
    li.append(time, level, msg);
    list.prepend(li);
  }
  while (list.children.length > 100) list.lastChild.remove();
}

async function refresh() {
  if (needLogin) return;
  try {
    showStatus(await api("status"));
    startPreview();
    const ev = await api(`events?after=${eventsSeq}`);
    eventsSeq = ev.seq;
    showEvents(ev.events);
  } catch (e) {
    if (!needLogin) {
      $("state").textContent = "unreachable";
      $("state").className = "badge state-failed";
      text("summary", e.message);
    }
  }
}

async function act(path, label) {
  text("action-result", `${label}…`);
  try {
    await api(path, { method: "POST" });
    text("action-result", "");
    refresh();
  } catch (e) {
    text("action-result", `${label} failed: ${e.message}`);
  }
}

async function upload() {
  const file = $("face-file").files[0];
  if (!file) return;
  text("action-result", `uploading ${file.name}…`);
  try {
    const result = await api("source", {
      method: "POST", headers: { "Content-Type": file.type || "image/jpeg" }, body: file,
    });
    text("action-result", `face switched to ${file.name} (${result.width}×${result.height})`);
    refresh();
  } catch (e) {
    text("action-result", `upload failed: ${e.message}`);
  } finally {
    $("face-file").value = "";
  }
}

// Which faces are swapped (/faces/selection and /faces/map; absent without face stages,
// and the card stays hidden then).
async function loadSelection(attempt = 0) {
  let rules;
  try {
    const response = await fetch("faces/selection", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 404) return;
    if (response.status === 409) {
      // The face stages are still loading (engine builds can take minutes): ask again.
      if (attempt < 120) setTimeout(() => loadSelection(attempt + 1), 5000);
      return;
    }
    if (!response.ok) return;
    rules = await response.json();
  } catch (e) {
    return;
  }
  $("selection-card").hidden = false;
  showSelection(rules);
}

function showSelection(rules) {
  $("sel-mode").value = rules.mode;
  $("sel-order").value = rules.order;
  $("sel-index").value = rules.index;
  $("sel-threshold").value = rules.threshold;
  $("sel-unmatched").value = rules.unmatched;
  const body = $("mappings");
  body.replaceChildren();
  for (const m of rules.map || []) {
    const tr = row([m.reference.split(/[\\/]/).pop(), "→", m.source.split(/[\\/]/).pop()]);
    tr.title = `${m.reference} → ${m.source}`;
    const td = document.createElement("td");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small-button";
    remove.textContent = "remove";
    remove.addEventListener("click", () => changeSelection("faces/map", "DELETE", { reference: m.reference }));
    td.appendChild(remove);
    tr.appendChild(td);
    body.appendChild(tr);
  }
  if (!(rules.map || []).length) body.appendChild(row(["no mappings: every swapped face gets the source face"]));
}

async function changeSelection(path, method, payload) {
  text("selection-result", "applying…");
  try {
    const result = await api(path, {
      method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    text("selection-result", "applied");
    showSelection(result);
  } catch (e) {
    text("selection-result", `refused: ${e.message}`);
  }
}

function applySelection(event) {
  event.preventDefault();
  const payload = {
    mode: $("sel-mode").value,
    order: $("sel-order").value,
    index: parseInt($("sel-index").value || "0", 10),
    threshold: parseFloat($("sel-threshold").value || "0"),
    unmatched: $("sel-unmatched").value,
  };
  const refs = $("sel-reference").value.split("\n").map((l) => l.trim()).filter((l) => l);
  if (refs.length) payload.reference = refs;
  changeSelection("faces/selection", "POST", payload);
}

function addMapping(event) {
  event.preventDefault();
  changeSelection("faces/map", "POST", { reference: $("map-reference").value.trim(), source: $("map-source").value.trim() });
}

function previewState() {
  const img = $("preview");
  $("preview-note").hidden = img.naturalWidth > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  $("pause").addEventListener("click", () => act("pause", "pausing"));
  $("resume").addEventListener("click", () => act("resume", "resuming"));
  $("face-file").addEventListener("change", upload);
  $("login-form").addEventListener("submit", login);
  $("selection-form").addEventListener("submit", applySelection);
  $("map-form").addEventListener("submit", addMapping);
  const img = $("preview");
  img.addEventListener("load", previewState);
  img.addEventListener("error", () => {
    // The stream ended (pipeline re-opened, daemon restarted): open it again shortly.
    previewOn = false;
    $("preview-note").hidden = false;
    setTimeout(startPreview, 1000);
  });
  setInterval(previewState, 500);
  // Hidden tab: no preview stream, so the daemon encodes nothing for it.
  document.addEventListener("visibilitychange", () => (document.hidden ? stopPreview() : startPreview()));
  refresh();
  loadSelection();
  setInterval(refresh, 1000);
});
