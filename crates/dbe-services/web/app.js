// DBE dashboard: one script for every page. The page to show comes from the path; live values come from
// /api/stream (Server-Sent Events), everything else from the JSON API. No libraries, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGES = { "/": "status", "/cells": "cells", "/pack": "pack", "/events": "events", "/controls": "controls", "/can": "can", "/settings": "settings" };
const page = PAGES[location.pathname] || "status";
let latest = null; // last snapshot
let snapAt = 0; // Date.now() when it arrived
let info = {};

// ---------- helpers ----------
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
const known = (v) => v !== undefined && v !== null && !(typeof v === "number" && !isFinite(v));
function num(v, digits, unit) {
  if (!known(v)) return "—";
  return v.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }) + (unit ? " " + unit : "");
}
function kw(w) { return !known(w) ? "—" : Math.abs(w) >= 1000 ? num(w / 1000, 2, "kW") : num(w, 0, "W"); }
function set(id, text) { const e = $(id); if (e && e.textContent !== text) e.textContent = text; }
function duration(ms) {
  if (!known(ms)) return "—";
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (d ? d + "d " : "") + (d || hh ? hh + "h " : "") + m + "m " + s + "s";
}
// Bridge times count from its start; convert to the user's clock through the latest snapshot.
function wallOf(bridgeMs) {
  if (!known(bridgeMs) || !latest) return null;
  return new Date(snapAt - (latest.status.time_ms - bridgeMs));
}
function clock(d) { return d ? d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—"; }
function toast(msg, kind) {
  const t = $("toast");
  t.textContent = msg; t.className = "toast " + (kind || ""); t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}
async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/login"; throw new Error("login required"); }
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) { const e = new Error((data && data.error) || r.statusText); e.data = data; e.status = r.status; throw e; }
  return data;
}
function confirmAction(title, text) {
  const d = $("confirm");
  set("confirm-title", title); set("confirm-text", text);
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

// ---------- live stream ----------
function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("open", () => { $("conn").className = "conn live"; $("conn").title = "Live"; });
  es.addEventListener("snapshot", (e) => { latest = JSON.parse(e.data); snapAt = Date.now(); render(); });
  es.addEventListener("event", (e) => {
    const m = JSON.parse(e.data);
    if (m.severity !== "INFO") toast(m.event_type + ": " + m.message, m.severity === "ERROR" ? "bad" : "");
  });
  es.addEventListener("error", () => {
    $("conn").className = "conn down"; $("conn").title = "Reconnecting…";
    // A stream refused for a lost login never recovers by itself.
    fetch("/api/info").then((r) => { if (r.status === 401) location.href = "/login"; }).catch(() => {});
  });
}

function render() {
  const s = latest.status;
  const badge = $("state-badge");
  let text = "running", cls = "badge ok";
  if (s.stopped) { text = "stopped"; cls = "badge err"; }
  else if (s.paused) { text = "paused"; cls = "badge warn"; }
  else if (!s.data_valid) { text = "no data"; cls = "badge err"; }
  else if (s.event_level === "ERROR") { text = "error"; cls = "badge err"; }
  badge.textContent = text; badge.className = cls;
  if (page === "status") renderStatus(s);
  if (page === "cells") renderCells(latest.cells, s.battery);
  if (page === "pack") renderPack(s.battery);
  if (page === "events") renderEvents();
  if (page === "controls") renderControls(s);
}

// ---------- status ----------
const REASONS = { bms: "BMS", user: "user setting", temporary: "temporary", soc_full: "SOC full", soc_empty: "SOC empty",
  cell_voltage: "cell voltage", pack_voltage: "pack voltage", temperature: "temperature", paused: "paused", stopped: "stopped",
  stale: "stale data", bms_fault: "BMS fault", contactors_open: "contactors open", inverter_missing: "inverter missing" };
function why(id, reason) {
  const e = $(id);
  e.textContent = REASONS[reason] || reason || "";
  e.className = "why" + (reason && reason !== "bms" && reason !== "user" ? " hot" : "");
}
function dot(ok, text) { return h("span", {}, h("span", { class: "dot " + ok }), text); }
function setNode(id, node) { const e = $(id); e.replaceChildren(node); }

function renderStatus(s) {
  const b = s.battery, r = s.reported, l = s.limits;
  set("soc-reported", num(r.soc_pct, 1, "%"));
  set("soc-real", num(b.soc_real_pct, 1, "%"));
  set("soc-window", num(r.soc_window_min_pct, 0) + "–" + num(r.soc_window_max_pct, 0, "%"));
  const arc = $("soc-arc"), len = 2 * Math.PI * 52;
  arc.style.strokeDasharray = len; arc.style.strokeDashoffset = len * (1 - Math.max(0, Math.min(100, r.soc_pct || 0)) / 100);
  set("power", kw(b.power_w));
  set("power-dir", !known(b.power_w) ? "—" : b.power_w > 50 ? "▲ charging" : b.power_w < -50 ? "▼ discharging" : "idle");
  set("voltage", num(b.voltage_v, 1, "V"));
  set("current", num(b.current_a, 1, "A"));
  set("vmax", num(l.max_charge_voltage_v, 1, "V")); set("vmin", num(l.min_discharge_voltage_v, 1, "V"));
  set("lim-charge", num(l.charge_current_a, 1, "A") + " · " + kw(l.charge_power_w));
  set("lim-discharge", num(l.discharge_current_a, 1, "A") + " · " + kw(l.discharge_power_w));
  why("lim-charge-why", l.charge_limited_by); why("lim-discharge-why", l.discharge_limited_by);
  set("bms-power", "charge " + kw(b.bms_max_charge_power_w) + " · discharge " + kw(b.bms_max_discharge_power_w));
  set("lim-temp", known(l.temporary_until_ms) ? "in " + duration(l.temporary_until_ms - s.time_ms) : "—");
  set("bat-kind", b.type || "—");
  set("soh", num(b.soh_pct, 1, "%"));
  set("energy", known(b.remaining_energy_wh) ? num(b.remaining_energy_wh / 1000, 1) + " / " + num(b.total_energy_wh / 1000, 1, "kWh") : "—");
  set("temps", num(b.temperature_min_c, 1) + " … " + num(b.temperature_max_c, 1, "°C"));
  set("cells-sum", known(b.cell_delta_mv) ? b.cell_count + " cells · Δ " + b.cell_delta_mv + " mV" + (b.balancing_cells ? " · " + b.balancing_cells + " balancing" : "") : b.cell_count ? b.cell_count + " cells" : "—");
  setNode("state-bridge", s.stopped ? dot("err", "stopped") : s.paused ? dot("warn", "paused") : dot("ok", "bridging"));
  if (s.can_open_pack === false) {
    // Manual switches: say it where the contactors are shown, not only in the event list.
    setNode("state-contactors", dot("err", b.contactors + " — DBE cannot open the pack (manual switches): only the inverter is told 0 A"));
  } else {
    setNode("state-contactors", dot(b.contactors === "closed" ? "ok" : "warn", b.contactors + " (DBE asks " + s.contactor_request + ")"));
  }
  setNode("state-bms", dot(b.bms_faults.length ? "err" : b.bms_status === "active" ? "ok" : "warn", b.bms_status + (b.bms_faults.length ? " · " + b.bms_faults.join(", ") : "")));
  const said = s.inverter.reports || {};
  const says = [];
  if (said.measured_voltage_v !== undefined) says.push("measures " + said.measured_voltage_v.toFixed(1) + " V");
  if (said.measured_current_a !== undefined) says.push(said.measured_current_a.toFixed(2) + " A");
  if (said.charge_requested !== undefined) says.push((said.charge_requested ? "asks" : "does not ask") + " to charge");
  if (said.discharge_requested !== undefined) says.push((said.discharge_requested ? "asks" : "does not ask") + " to discharge");
  if (said.working !== undefined) says.push(said.working);
  setNode("state-inverter", dot(s.inverter.present ? "ok" : "err", s.inverter.protocol + (s.inverter.present ? " · talking" : " · not heard") + (says.length ? " · " + says.join(", ") : "")));
  setNode("state-data", dot(s.data_valid ? "ok" : "err", s.data_valid ? "valid" : "stale or missing"));
  set("uptime", duration(s.time_ms));
  const chips = [...s.alarms.map((a) => h("span", { class: "chip err", text: a.replace(/_/g, " ") })),
    ...s.warnings.map((a) => h("span", { class: "chip warn", text: a.replace(/_/g, " ") }))];
  $("alarms").replaceChildren(...chips);
  drawChart();
}

let history = { samples: [], interval_s: 60 };
async function loadHistory() {
  try { history = await api("/api/history"); drawChart(); } catch (e) { /* keep the last one */ }
}
const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
let lastDraw = 0;
function drawChart() {
  const now = Date.now();
  if (now - lastDraw < 1000 && lastDraw) return;
  lastDraw = now;
  const el = $("chart");
  const W = Math.max(320, el.clientWidth || 800), narrow = W < 560;
  const left = narrow ? 40 : 52, right = 12, panelH = narrow ? 78 : 92, gap = 40, top = 22;
  const pts = history.samples.slice();
  if (latest) {
    const b = latest.status.battery;
    pts.push({ t_ms: now, soc_pct: latest.status.reported.soc_pct, soc_real_pct: b.soc_real_pct, power_w: b.power_w, voltage_v: b.voltage_v, live: true });
  }
  const t1 = now, t0 = now - 24 * 3600 * 1000;
  const series = [
    { key: "soc_pct", cls: "soc", title: "SOC %", fmt: (v) => num(v, 0), fixed: [0, 100] },
    { key: "power_w", cls: "pow", title: "Power kW", fmt: (v) => num(v / 1000, 1), zero: true },
    { key: "voltage_v", cls: "volt", title: "Voltage V", fmt: (v) => num(v, 0) },
  ];
  const H = top + series.length * (panelH + gap) - gap + 24;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "SOC, power and voltage over the last 24 hours" });
  const x = (t) => left + (W - left - right) * (t - t0) / (t1 - t0);
  series.forEach((s, i) => {
    const y0 = top + i * (panelH + gap);
    const vals = pts.filter((p) => known(p[s.key]) && p.t_ms >= t0).map((p) => p[s.key]);
    let [lo, hi] = s.fixed || [Math.min(...vals), Math.max(...vals)];
    if (!vals.length && !s.fixed) { lo = 0; hi = 1; }
    if (s.zero) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const pad = s.fixed ? 0 : (hi - lo) * 0.1; lo -= pad; hi += pad;
    const y = (v) => y0 + panelH - panelH * (v - lo) / (hi - lo);
    root.append(svg("text", { x: left, y: y0 - 10, class: "title " + s.cls }, s.title));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      root.append(svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "grid-line" }));
      root.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, s.fmt(v)));
    }
    if (s.zero && lo < 0 && hi > 0) root.append(svg("line", { x1: left, x2: W - right, y1: y(0), y2: y(0), class: "zero" }));
    // A gap longer than three sample intervals breaks the line (the server was not running).
    const maxGap = Math.max(3 * (history.interval_s || 60) * 1000, 5000);
    let d = "", prevT = null, area = "", segStart = null, lastX = null;
    for (const p of pts) {
      const v = p[s.key];
      if (!known(v) || p.t_ms < t0) { prevT = null; continue; }
      const px = x(p.t_ms).toFixed(1), py = y(v).toFixed(1);
      if (prevT === null || p.t_ms - prevT > maxGap) {
        if (segStart !== null) area += `L${lastX},${y0 + panelH}L${segStart},${y0 + panelH}Z`;
        d += `M${px},${py}`; area += `M${px},${y0 + panelH}L${px},${py}`; segStart = px;
      } else { d += `L${px},${py}`; area += `L${px},${py}`; }
      prevT = p.t_ms; lastX = px;
    }
    if (segStart !== null) area += `L${lastX},${y0 + panelH}L${segStart},${y0 + panelH}Z`;
    if (area) root.append(svg("path", { d: area, class: "area " + s.cls }));
    if (d) root.append(svg("path", { d, class: "series " + s.cls }));
    const live = pts[pts.length - 1];
    if (live && known(live[s.key])) root.append(svg("circle", { cx: x(live.t_ms), cy: y(live[s.key]), r: 4, class: "live " + s.cls }));
  });
  const yAxis = H - 2;
  const step = narrow ? 2 : 1;
  for (let k = 0; k <= 4; k += step) {
    const t = t0 + k * 6 * 3600 * 1000, px = x(t);
    const lbl = k === 4 ? "now" : new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    root.append(svg("text", { x: px, y: yAxis, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" }, lbl));
  }
  el.replaceChildren(root);
  set("chart-note", history.samples.length + " samples, every " + duration(history.interval_s * 1000).replace(/^0m /, ""));
}

// ---------- cells ----------
let cellSel = null;
function renderCells(c, b) {
  const v = c.voltages_mv || [], bal = c.balancing || [];
  set("cell-min", num(c.min_mv, 0, "mV")); set("cell-max", num(c.max_mv, 0, "mV"));
  set("cell-min-n", known(b.cell_min_number) ? "cell " + b.cell_min_number : "—");
  set("cell-max-n", known(b.cell_max_number) ? "cell " + b.cell_max_number : "—");
  set("cell-delta", known(c.min_mv) ? num(c.max_mv - c.min_mv, 0, "mV") : "—");
  set("cell-bal", String(bal.filter(Boolean).length));
  const box = $("cell-bars");
  while (box.children.length > v.length) box.lastChild.remove();
  while (box.children.length < v.length) {
    const i = box.children.length;
    const bar = h("div", { class: "bar", "data-cell": i + 1, tabindex: "0" }, h("i"));
    bar.addEventListener("mouseenter", () => showCell(i));
    bar.addEventListener("click", () => { cellSel = i; showCell(i); });
    bar.addEventListener("focus", () => showCell(i));
    box.append(bar);
  }
  if (!v.length) { set("cell-tip", "No cell voltages yet."); return; }
  const lo = Math.min(...v) - 20, hi = Math.max(...v) + 10;
  set("cell-scale-lo", lo + " mV"); set("cell-scale-hi", hi + " mV");
  v.forEach((mv, i) => {
    const bar = box.children[i];
    bar.firstChild.style.height = Math.max(2, 100 * (mv - lo) / (hi - lo)).toFixed(1) + "%";
    const cls = "bar" + (mv === c.min_mv ? " min" : "") + (mv === c.max_mv ? " max" : "") + (bal[i] ? " bal" : "") + (cellSel === i ? " sel" : "");
    if (bar.className !== cls) bar.className = cls;
    bar.title = "Cell " + (i + 1) + ": " + mv + " mV" + (bal[i] ? " (balancing)" : "");
  });
  if (cellSel !== null) showCell(cellSel);
}
function showCell(i) {
  if (!latest) return;
  const c = latest.cells, mv = c.voltages_mv[i];
  if (!known(mv)) return;
  const dmin = mv - c.min_mv;
  set("cell-tip", "Cell " + (i + 1) + ": " + mv + " mV (" + (dmin ? "+" + dmin + " mV above min" : "lowest") + ")" + (c.balancing[i] ? " · balancing" : ""));
}

// ---------- pack ----------
// Each value comes with its label, unit and decimals from the driver's table; only known ones are in the list.
function extraText(e) {
  if (typeof e.value === "boolean") return e.value ? "yes" : "no";
  if (typeof e.value === "number") return num(e.value, e.decimals || 0, e.unit);
  return String(e.value);
}
function renderPack(b) {
  set("pack-kind", b.type || "");
  const rows = (b.extras || []).map((e) => h("tr", { "data-key": e.key }, h("th", { text: e.label }), h("td", { text: extraText(e) })));
  $("pack-extras").replaceChildren(...rows);
  $("pack-empty").hidden = rows.length > 0;
}

// ---------- events ----------
let levelFilter = "";
function renderEvents() {
  const rows = (latest.events || []).filter((e) => !levelFilter || e.level === levelFilter)
    .sort((a, b) => (b.last_ms || 0) - (a.last_ms || 0));
  const body = $("event-rows");
  body.replaceChildren(...rows.map((e) => h("tr", { "data-level": e.level },
    h("td", {}, h("span", { class: "lvl " + e.level, text: e.level })),
    h("td", {}, h("code", { text: e.event_type }), e.active ? h("span", { class: "active-tag", text: "● active" }) : null),
    h("td", { class: "num", text: String(e.count) }),
    h("td", { class: "t t-first", text: clock(wallOf(e.first_ms)) }),
    h("td", { class: "t t-last", text: clock(wallOf(e.last_ms)) }),
    h("td", { class: "msg", text: e.message }))));
  $("events-empty").hidden = rows.length > 0;
}
function setupEvents() {
  for (const b of $("level-filter").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      levelFilter = b.dataset.level;
      for (const o of $("level-filter").querySelectorAll("button")) o.classList.toggle("on", o === b);
      if (latest) renderEvents();
    });
  }
}

// ---------- controls ----------
function renderControls(s) {
  set("ctl-state", s.stopped ? "stopped" : s.paused ? "paused" : "bridging");
  $("btn-pause").disabled = s.paused || s.stopped;
  $("btn-resume").disabled = !s.paused;
  $("btn-stop").disabled = s.stopped;
  $("btn-start").disabled = !s.stopped;
  const l = s.limits;
  set("ctl-temp", known(l.temporary_until_ms) ? "for " + duration(l.temporary_until_ms - s.time_ms) : "none");
  set("ctl-window", num(s.reported.soc_window_min_pct, 1) + " – " + num(s.reported.soc_window_max_pct, 1, "%"));
  const wf = $("window-form");
  if (!wf.dataset.filled) {
    wf.min_pct.value = s.reported.soc_window_min_pct; wf.max_pct.value = s.reported.soc_window_max_pct; wf.dataset.filled = "1";
  }
}
async function runCommand(name, body, question, label) {
  if (question && !(await confirmAction(label + "?", question))) return;
  try {
    await api("/api/commands/" + name, body || {});
    toast(label + ": done", "good");
  } catch (e) { toast(label + " refused: " + e.message, "bad"); }
}
function setupControls() {
  for (const b of document.querySelectorAll("button[data-cmd]")) {
    b.addEventListener("click", () => runCommand(b.dataset.cmd, {}, b.dataset.confirm, b.textContent.trim()));
  }
  const lf = $("limits-form");
  lf.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const val = (x) => (x.value.trim() === "" ? null : Number(x.value));
    const body = { charge_a: val(lf.charge_a), discharge_a: val(lf.discharge_a), timeout_s: Math.round(Number(lf.timeout_min.value) * 60) };
    const parts = [];
    if (body.charge_a !== null) parts.push("charge ≤ " + body.charge_a + " A");
    if (body.discharge_a !== null) parts.push("discharge ≤ " + body.discharge_a + " A");
    runCommand("limits", body, "Limit " + (parts.join(" and ") || "nothing") + " for " + lf.timeout_min.value + " min.", "Set temporary limits");
  });
  const wf = $("window-form");
  wf.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { min_pct: Number(wf.min_pct.value), max_pct: Number(wf.max_pct.value) };
    runCommand("soc-window", body, "Show real SOC " + body.min_pct + "–" + body.max_pct + " % to the inverter as 0–100 %.", "Set SOC window");
  });
}

// ---------- CAN ----------
let canPaused = false, canES = null, canRows = [], canCount = 0, canSince = Date.now();
const MAX_ROWS = 300;
function hex(n, w) { return n.toString(16).toUpperCase().padStart(w, "0"); }
function canConnect() {
  if (canES) canES.close();
  const q = new URLSearchParams({ port: $("can-port").value, id: $("can-ids").value.trim() });
  $("can-error").hidden = true;
  canES = new EventSource("/api/can/stream?" + q);
  canES.addEventListener("frames", (e) => {
    const m = JSON.parse(e.data);
    canCount += m.frames.length;
    if (canPaused) return;
    for (const f of m.frames) canRows.unshift(f);
    canRows.length = Math.min(canRows.length, MAX_ROWS);
    drawFrames();
  });
  canES.addEventListener("error", async () => {
    // EventSource hides the status; ask once so a bad filter is explained.
    try { await api("/api/can/stream?" + q); } catch (err) { if (err.status === 400) { $("can-error").textContent = err.message; $("can-error").hidden = false; canES.close(); } }
  });
}
function drawFrames() {
  $("can-rows").replaceChildren(...canRows.map((f) => h("tr", {},
    h("td", { text: new Date(f.time_ms).toLocaleTimeString(undefined, { hour12: false }) + "." + String(f.time_ms % 1000).padStart(3, "0") }),
    h("td", { text: f.port }),
    h("td", { text: f.direction, title: f.direction === "T" ? "sent by DBE" : "received by DBE" }),
    h("td", { text: f.extended ? hex(f.id, 8) : hex(f.id, 3) }),
    h("td", { class: "num", text: String(f.data.length) }),
    h("td", { text: f.data.map((b) => hex(b, 2)).join(" ") }))));
}
async function refreshRecording() {
  try {
    const r = await api("/api/can/recording");
    $("rec-start").hidden = r.recording; $("rec-stop").hidden = !r.recording;
    $("rec-download").hidden = r.recording || !r.started_ms;
    set("rec-status", r.recording ? "Recording… " + r.frames + " frames" : r.started_ms ? "Recorded " + r.frames + " frames" + (r.lost ? " (" + r.lost + " lost)" : "") + "." : "Not recording.");
  } catch (e) { /* shown next time */ }
}
async function setupCan() {
  if (!info.can) { $("can-none").hidden = false; return; }
  $("can-main").hidden = false;
  try {
    const p = await api("/api/can/ports");
    for (const name of p.ports) $("can-port").append(h("option", { value: name, text: name }));
  } catch (e) { /* none yet */ }
  $("can-port").addEventListener("change", canConnect);
  $("can-ids").addEventListener("change", canConnect);
  $("can-pause").addEventListener("click", () => { canPaused = !canPaused; $("can-pause").textContent = canPaused ? "Resume" : "Pause"; $("can-pause").classList.toggle("warn", canPaused); });
  $("can-clear").addEventListener("click", () => { canRows = []; drawFrames(); });
  $("rec-start").addEventListener("click", async () => { try { await api("/api/can/recording/start", {}); } catch (e) { toast(e.message, "bad"); } refreshRecording(); });
  $("rec-stop").addEventListener("click", async () => { try { await api("/api/can/recording/stop", {}); } catch (e) { toast(e.message, "bad"); } refreshRecording(); });
  setInterval(() => {
    const secs = (Date.now() - canSince) / 1000;
    set("can-rate", num(canCount / secs, 0) + " frames/s"); canCount = 0; canSince = Date.now();
    refreshRecording();
  }, 1000);
  canConnect(); refreshRecording();
}

// ---------- settings ----------
let settings = null;
function fieldFor(f, value) {
  const id = "cfg-" + f.key.replace(/[^a-zA-Z0-9_-]/g, "_");
  let input;
  if (f.type === "bool") {
    input = h("input", { type: "checkbox", id, name: f.key });
    input.checked = !!value;
  } else if (f.type === "enum") {
    input = h("select", { id, name: f.key }, ...(f.options || []).map((o) => h("option", { value: o, text: String(o) })));
    input.value = value;
  } else {
    const numeric = f.type === "integer" || f.type === "number";
    input = h("input", { id, name: f.key, type: numeric ? "number" : "text", min: f.min, max: f.max, step: f.step || (f.type === "integer" ? 1 : numeric ? "any" : null) });
    input.value = known(value) ? value : "";
  }
  input.dataset.type = f.type;
  const label = (f.label || f.key) + (f.unit ? " (" + f.unit + ")" : "") + (f.restart ? " ↻" : "");
  const err = h("span", { class: "field-error", "data-error-for": f.key });
  const help = f.help || (known(f.min) || known(f.max) ? "range " + (known(f.min) ? f.min : "") + "–" + (known(f.max) ? f.max : "") : null);
  if (f.type === "bool") return h("label", { class: "check", "data-key": f.key }, input, label, err);
  return h("label", { "data-key": f.key }, label, input, help ? h("span", { class: "field-help", text: help }) : null, err);
}
function readField(input) {
  const t = input.dataset.type;
  if (t === "bool") return input.checked;
  if (t === "integer" || t === "number") return input.value.trim() === "" ? null : Number(input.value);
  return input.value;
}
async function setupSettings() {
  if (!info.config) { $("settings-none").hidden = false; return; }
  $("settings-main").hidden = false;
  try { settings = await api("/api/config"); } catch (e) { set("settings-msg", e.message); return; }
  const form = $("settings-form");
  // One heading per config section (`[limits]`, `[mqtt.tls]`), in the file's order.
  const parts = [];
  let group = null;
  for (const f of settings.schema) {
    if (f.group && f.group !== group) { group = f.group; parts.push(h("h3", { class: "group", text: group === "general" ? "General" : "[" + group + "]" })); }
    parts.push(fieldFor(f, settings.values[f.key]));
  }
  form.replaceChildren(...parts);
  $("settings-save").addEventListener("click", async () => {
    const changed = {};
    for (const f of settings.schema) {
      const input = form.elements[f.key];
      const v = readField(input);
      if (JSON.stringify(v) !== JSON.stringify(settings.values[f.key])) changed[f.key] = v;
    }
    for (const e of form.querySelectorAll(".field-error")) e.textContent = "";
    for (const e of form.querySelectorAll(".bad")) e.classList.remove("bad");
    if (!Object.keys(changed).length) { set("settings-msg", "Nothing changed."); return; }
    try {
      const r = await api("/api/config", changed);
      settings.values = r.values || Object.assign(settings.values, changed);
      set("settings-msg", "Saved."); toast("Settings saved", "good");
    } catch (e) {
      set("settings-msg", e.message);
      for (const fe of (e.data && e.data.fields) || []) {
        const slot = form.querySelector(`[data-error-for="${CSS.escape(fe.key)}"]`);
        if (slot) { slot.textContent = fe.message; const i = form.elements[fe.key]; if (i) i.classList.add("bad"); }
      }
    }
  });
}

// ---------- start ----------
async function start() {
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.page === page);
  $("page-" + page).hidden = false;
  try { info = await api("/api/info"); } catch (e) { info = {}; }
  $("logout").hidden = !info.auth_required;
  connect();
  if (page === "status") { loadHistory(); setInterval(loadHistory, Math.max(5, info.history_interval_s || 60) * 1000); window.addEventListener("resize", () => { lastDraw = 0; drawChart(); }); }
  if (page === "events") setupEvents();
  if (page === "controls") setupControls();
  if (page === "can") setupCan();
  if (page === "settings") setupSettings();
}
start();
