// raykd dashboard: shared helpers (API calls with the session's CSRF value, formatting,
// small SVG charts). No library: the service serves every byte the page runs.
"use strict";

const RK = (() => {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLORS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#6a3d9a", "#444444"];
  const EVENT_TYPES = ["job_started", "stage_started", "stage_finished", "teacher_ready", "epoch",
    "student_restarted", "student_finished", "trial", "message", "job_finished", "job_failed"];
  // the job states' sets come from the service (raykd.core.states), never spelled out here
  const STATES = JSON.parse((document.querySelector('meta[name="raykd-states"]') || {}).content || "{}");
  const FINAL = STATES.final || [];
  const UNFINISHED = STATES.unfinished || [];
  const ACTIVE = STATES.active || [];

  async function api(method, url, body) {
    const headers = { "X-Raykd-CSRF": csrf, Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      return { ok: false, status: 0, data: { detail: "the service did not answer (" + err + ")" } };
    }
    const text = await response.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* plain text */ }
    if (response.status === 401) toLogin();
    return { ok: response.ok, status: response.status, data };
  }

  async function html(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (response.status === 401 || response.redirected && new URL(response.url).pathname === "/login") {
      toLogin();
      return null;
    }
    return response.ok ? response.text() : null;
  }

  function toLogin() {
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
  }

  function message(data) {
    if (!data) return "no answer";
    const d = data.detail !== undefined ? data.detail : data;
    if (Array.isArray(d)) return d.map((e) => (e.loc ? e.loc.join(".") + ": " : "") + e.msg).join("; ");
    return typeof d === "string" ? d : JSON.stringify(d);
  }

  let sayTimer = null;
  function say(text, isError) {
    const box = document.getElementById("status");
    if (!box) return;
    box.textContent = text;
    box.classList.toggle("is-error", !!isError);
    box.classList.add("shown");
    clearTimeout(sayTimer);
    sayTimer = setTimeout(() => box.classList.remove("shown"), isError ? 9000 : 4000);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const isNum = (v) => typeof v === "number" && isFinite(v);
  const pct = (v, d = 1) => (isNum(v) ? (v * 100).toFixed(d) + "%" : "–");
  const fmt = (v, d = 3) => (isNum(v) ? String(+v.toFixed(d)) : "–");
  function secs(s) {
    if (!isNum(s)) return "–";
    if (s >= 120) return (s / 60).toFixed(1) + " min";
    return s.toFixed(s < 10 ? 2 : 1) + " s";
  }
  function ago(t) {
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function updateAges(root) {
    for (const t of (root || document).querySelectorAll("time.ago[data-t]")) {
      const v = parseFloat(t.dataset.t);
      if (!isFinite(v)) continue;
      t.textContent = ago(v);
      t.title = new Date(v * 1000).toLocaleString();
      t.setAttribute("datetime", new Date(v * 1000).toISOString());
    }
  }

  // Cancel / Retry buttons anywhere on a page: the API, then a "rk:changed" event.
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-act]");
    if (!button) return;
    const { act, id } = button.dataset;
    button.disabled = true;
    const r = await api("POST", `/api/v1/jobs/${encodeURIComponent(id)}/${act}`);
    button.disabled = false;
    if (r.ok) {
      say(`${act === "cancel" ? "Cancel requested for" : "Queued again:"} ${id}`);
      document.dispatchEvent(new CustomEvent("rk:changed", { detail: { id, act, job: r.data } }));
    } else {
      say(`Could not ${act} ${id}: ${message(r.data)}`, true);
    }
  });

  function follow(jobId, onEvent, onEnd, after) {
    // The job's Server-Sent Events (the browser resumes with Last-Event-ID after a drop).
    // The stream replays every attempt of the job, each from its job_started: a terminal
    // event is the end only when it is the latest attempt's, so on one the job is asked
    // for its state; the server also ends the stream once the job is final and caught up.
    const url = `/api/v1/jobs/${encodeURIComponent(jobId)}/events` + (after ? `?after=${after}` : "");
    const source = new EventSource(url, { withCredentials: true });
    let last = after || 0;
    let starts = 0; // job_started events seen, to tell a replayed attempt's end from the last one
    let attempt = null; // the attempt of the latest job_started seen
    let ended = false;
    const end = (how) => {
      if (ended) return;
      ended = true;
      source.close();
      onEnd && onEnd(how, last);
    };
    const job = () => api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
    const handle = (e) => {
      if (ended) return;
      const seq = parseInt(e.lastEventId, 10);
      if (isFinite(seq) && seq <= last) return;
      if (isFinite(seq)) last = seq;
      let data;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      if (e.type === "job_started") {
        starts += 1;
        attempt = isNum(data.attempt) ? data.attempt : attempt;
      }
      onEvent(e.type, data);
      if (e.type === "job_finished" || e.type === "job_failed") {
        const before = starts, ofAttempt = attempt;
        job().then((r) => {
          // still streaming: a later attempt started since, or the job runs (was retried)
          if (ended || starts !== before || !r.ok) return; // (a failed look: onerror decides)
          const latest = !isNum(r.data.attempts) || ofAttempt === null || ofAttempt >= r.data.attempts;
          if (FINAL.includes(r.data.state) && latest) end("final");
        });
      }
    };
    for (const t of EVENT_TYPES) source.addEventListener(t, handle);
    source.onerror = async () => {
      // The stream ended or dropped: stop for good when the job is final, else let it retry.
      if (ended) return;
      const r = await job();
      if (!r.ok || FINAL.includes(r.data.state)) end(r.ok ? "final" : "gone");
    };
    return source;
  }

  // A job's progress as the service defines it (raykd.core.status.job_status: finished epochs
  // of students or trials over all): GET /api/v1/jobs/{id}'s `progress`, never counted
  // here. The returned function asks again as the job's events arrive: soon after the first
  // (then at most every 0.3 s), and once more 1.5 s after the last (the service stores a
  // job's progress right after its events).
  function progressOf(jobId, apply) {
    let soon = null, late = null;
    const ask = async () => {
      const r = await api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
      if (r.ok && r.data && isNum(r.data.progress)) apply(r.data.progress);
    };
    return () => {
      if (!soon) soon = setTimeout(() => { soon = null; ask(); }, 300);
      clearTimeout(late);
      late = setTimeout(ask, 1500);
    };
  }

  // --- charts -------------------------------------------------------------------------

  function niceTicks(lo, hi, n) {
    const span = hi - lo || 1;
    let step = Math.pow(10, Math.floor(Math.log10(span / n)));
    const err = span / n / step;
    if (err >= 7.5) step *= 10;
    else if (err >= 3.5) step *= 5;
    else if (err >= 1.5) step *= 2;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-6; t += step) out.push(+t.toFixed(10));
    return out;
  }

  function spread(items, minGap, lo, hi) {
    // Push label positions apart (sorted by y) so that close reference lines stay readable.
    items.sort((a, b) => a.y - b.y);
    for (let i = 1; i < items.length; i++) {
      if (items[i].y - items[i - 1].y < minGap) items[i].y = items[i - 1].y + minGap;
    }
    const over = items.length ? items[items.length - 1].y - hi : 0;
    if (over > 0) for (const it of items) it.y -= over;
    for (let i = items.length - 2; i >= 0; i--) {
      if (items[i + 1].y - items[i].y < minGap) items[i].y = items[i + 1].y - minGap;
    }
    for (const it of items) it.y = Math.max(lo, it.y);
    return items;
  }

  function legend(fig, entries) {
    const list = fig.querySelector(".legend");
    if (!list) return;
    list.replaceChildren(...entries.map((e) => el("li", { cls: e.dashed ? "dashed" : "" },
      el("span", { cls: "swatch", "data-color": e.color }), e.name)));
    for (const s of list.querySelectorAll(".swatch")) {
      s.style.background = s.dataset.color; // CSSOM, allowed under the page's CSP
      s.style.borderColor = s.dataset.color;
    }
  }

  // series: [{name, points: [[x, y], ...]}]; refs: [{name, y, kind}] (horizontal lines)
  function lineChart(fig, { series, refs = [], percent = false, xLabel = "epoch", empty }) {
    const plot = fig.querySelector(".plot");
    const total = series.reduce((n, s) => n + s.points.length, 0);
    fig.dataset.points = String(total);
    if (!total) {
      plot.replaceChildren(el("p", { cls: "na", text: empty || "No epoch has finished yet." }));
      legend(fig, []);
      return;
    }
    const W = 640, H = 280, m = { l: 52, r: refs.length ? 118 : 16, t: 12, b: 40 };
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(refs.map((r) => r.y));
    let x0 = Math.min(1, ...xs), x1 = Math.max(...xs);
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    const pad = Math.max((y1 - y0) * 0.08, percent ? 0.01 : Math.abs(y1) * 0.05 || 0.05);
    y0 -= pad; y1 += pad;
    if (percent) { y0 = Math.max(0, y0); y1 = Math.min(1, y1); }
    else y0 = Math.max(0, y0);
    const X = (v) => m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (v) => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-points": total,
      "aria-label": `${fig.querySelector("figcaption").textContent}: ${series.map((s) => s.name + " " +
        s.points.map((p) => (percent ? pct(p[1]) : fmt(p[1]))).join(", ")).join("; ")}` });
    const yt = niceTicks(y0, y1, 5);
    for (const t of yt) {
      root.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "grid" }),
        svg("text", { x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end",
          text: percent ? (t * 100).toFixed(yt.length > 1 && yt[1] - yt[0] < 0.01 ? 1 : 0) + "%" : fmt(t, 3) }));
    }
    const xt = x1 - x0 <= 12 ? xs.filter((v, i, a) => a.indexOf(v) === i).sort((a, b) => a - b)
      : niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t));
    for (const t of xt) {
      root.append(svg("text", { x: X(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle", text: t }));
    }
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }),
      svg("text", { x: (m.l + W - m.r) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle", text: xLabel }));
    const labels = [];
    refs.forEach((r) => {
      const cls = r.kind === "ensemble" ? "ref ens" : "ref";
      root.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(r.y), y2: Y(r.y), class: cls, "data-ref": r.kind },
        svg("title", { text: `${r.name}: ${percent ? pct(r.y) : fmt(r.y)}` })));
      labels.push({ y: Y(r.y) + 4, text: `${r.name} ${percent ? pct(r.y) : fmt(r.y)}`, cls: r.kind });
    });
    for (const l of spread(labels, 13, m.t + 8, H - m.b)) {
      root.append(svg("text", { x: W - m.r + 6, y: l.y, class: "ref-label " + (l.cls || ""), text: l.text }));
    }
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const g = svg("g", { class: "series", "data-series": s.name, "data-points": s.points.length });
      const pts = s.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      if (s.points.length > 1) g.append(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2 }));
      for (const p of s.points) {
        g.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: color, class: "pt", "data-epoch": p[0] },
          svg("title", { text: `${s.name}, ${xLabel} ${p[0]}: ${percent ? pct(p[1], 2) : fmt(p[1], 4)}` })));
      }
      root.append(g);
    });
    plot.replaceChildren(root);
    legend(fig, series.map((s, i) => ({ name: s.name, color: COLORS[i % COLORS.length] })).concat(
      refs.some((r) => r.kind === "teacher") ? [{ name: "teachers", color: "#8a8a8a", dashed: true }] : [],
      refs.some((r) => r.kind === "ensemble") ? [{ name: "ensemble", color: "#111111", dashed: true }] : []));
  }

  function mix(a, b, t) {
    const pa = a.match(/\w\w/g).map((h) => parseInt(h, 16));
    const pb = b.match(/\w\w/g).map((h) => parseInt(h, 16));
    return "#" + pa.map((v, i) => Math.round(v + (pb[i] - v) * t).toString(16).padStart(2, "0")).join("");
  }

  // One cell per (W, T) pair: the best score (the sweep's metric, a fraction: val accuracy or
  // SQuAD val F1 / 100) among the trials at that pair.
  function heatmap(fig, trials, bestId, label = "Validation accuracy") {
    const plot = fig.querySelector(".plot");
    const ok = trials.filter((t) => isNum(t.incorrect_weight) && isNum(t.temperature) && isNum(t.score));
    const cells = new Map();
    for (const t of ok) {
      const key = `${t.incorrect_weight}|${t.temperature}`;
      const c = cells.get(key);
      if (!c || t.score > c.v || t.trial_id === bestId) {
        cells.set(key, { w: t.incorrect_weight, t: t.temperature, v: Math.max(t.score, c ? c.v : -1),
          n: (c ? c.n : 0) + 1, best: (c && c.best) || t.trial_id === bestId });
      } else {
        c.n += 1;
      }
    }
    fig.dataset.cells = String(cells.size);
    if (!cells.size) {
      plot.replaceChildren(el("p", { cls: "na", text: "No trial has reported yet." }));
      return;
    }
    const wv = [...new Set([...cells.values()].map((c) => c.w))].sort((a, b) => a - b);
    const tv = [...new Set([...cells.values()].map((c) => c.t))].sort((a, b) => a - b);
    const m = { l: 64, r: 12, t: 12, b: 46 };
    const cw = Math.min(130, Math.max(44, 480 / wv.length)), ch = Math.min(64, Math.max(26, 300 / tv.length));
    const W = m.l + cw * wv.length + m.r, H = m.t + ch * tv.length + m.b;
    const vals = [...cells.values()].map((c) => c.v);
    const lo = Math.min(...vals), hi = Math.max(...vals);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-cells": cells.size,
      "aria-label": `${label} by W and T: ` + [...cells.values()].map((c) =>
        `W=${c.w} T=${c.t}: ${pct(c.v)}`).join(", ") });
    let bestCell = null;
    for (const c of cells.values()) {
      const i = wv.indexOf(c.w), j = tv.indexOf(c.t);
      const x = m.l + i * cw, y = m.t + (tv.length - 1 - j) * ch;
      const k = hi > lo ? (c.v - lo) / (hi - lo) : 0.6;
      const fill = mix("e8f1fa", "08306b", 0.1 + 0.85 * k);
      const rect = svg("rect", { x: x + 1, y: y + 1, width: cw - 2, height: ch - 2, fill, class: "cell" + (c.best ? " best" : ""),
        "data-w": c.w, "data-t": c.t, "data-value": c.v.toFixed(4) },
      svg("title", { text: `W=${c.w}, T=${c.t}: ${pct(c.v, 2)} (${c.n} trial${c.n > 1 ? "s" : ""})${c.best ? ", best" : ""}` }));
      root.append(rect, svg("text", { x: x + cw / 2, y: y + ch / 2 + 5, "text-anchor": "middle",
        class: "cell-text" + (0.1 + 0.85 * k > 0.5 ? " light" : ""), text: pct(c.v) }));
      if (c.best) bestCell = { x, y };
    }
    if (bestCell) root.append(svg("rect", { x: bestCell.x + 2.5, y: bestCell.y + 2.5, width: cw - 5, height: ch - 5, class: "best-outline" }));
    wv.forEach((w, i) => root.append(svg("text", { x: m.l + i * cw + cw / 2, y: m.t + ch * tv.length + 16, class: "tick", "text-anchor": "middle", text: w })));
    tv.forEach((t, j) => root.append(svg("text", { x: m.l - 8, y: m.t + (tv.length - 1 - j) * ch + ch / 2 + 4, class: "tick", "text-anchor": "end", text: t })));
    root.append(svg("text", { x: m.l + cw * wv.length / 2, y: H - 8, class: "axis-label", "text-anchor": "middle", text: "W (incorrect_weight)" }),
      svg("text", { x: 14, y: m.t + ch * tv.length / 2, class: "axis-label", "text-anchor": "middle",
        transform: `rotate(-90 14 ${m.t + ch * tv.length / 2})`, text: tv.length > 1 ? "T (temperature)" : "T" }));
    plot.replaceChildren(root);
  }

  // Every trial's score against its alpha; the best one larger and orange.
  function alphaPlot(fig, trials, bestId, label = "Validation accuracy") {
    const plot = fig.querySelector(".plot");
    const ok = trials.filter((t) => isNum(t.alpha) && isNum(t.score));
    fig.dataset.points = String(ok.length);
    if (!ok.length) {
      plot.replaceChildren(el("p", { cls: "na", text: "No trial has reported yet." }));
      return;
    }
    const W = 520, H = 260, m = { l: 52, r: 16, t: 12, b: 42 };
    const av = ok.map((t) => t.alpha), yv = ok.map((t) => t.score);
    let a0 = Math.min(0, ...av), a1 = Math.max(1, ...av);
    let y0 = Math.min(...yv), y1 = Math.max(...yv);
    const pad = Math.max((y1 - y0) * 0.12, 0.01);
    y0 = Math.max(0, y0 - pad); y1 = Math.min(1, y1 + pad);
    const X = (v) => m.l + (v - a0) / (a1 - a0) * (W - m.l - m.r);
    const Y = (v) => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-points": ok.length,
      "aria-label": `${label} by alpha: ` + ok.map((t) => `alpha=${t.alpha}: ${pct(t.score)}`).join(", ") });
    for (const t of niceTicks(y0, y1, 5)) {
      root.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "grid" }),
        svg("text", { x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end", text: (t * 100).toFixed(y1 - y0 < 0.05 ? 1 : 0) + "%" }));
    }
    for (const t of niceTicks(a0, a1, 5)) {
      root.append(svg("text", { x: X(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle", text: fmt(t, 2) }));
    }
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }),
      svg("text", { x: (m.l + W - m.r) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle", text: "α (weight of the teacher term)" }));
    // the best accuracy at each alpha, joined (a trend when several alphas were tried)
    const byAlpha = new Map();
    for (const t of ok) byAlpha.set(t.alpha, Math.max(byAlpha.get(t.alpha) ?? -1, t.score));
    const trend = [...byAlpha.entries()].sort((a, b) => a[0] - b[0]);
    if (trend.length > 1) {
      root.append(svg("polyline", { points: trend.map(([a, v]) => `${X(a)},${Y(v)}`).join(" "), class: "trend", fill: "none" }));
    }
    const seen = new Map();
    for (const t of ok) {
      const n = seen.get(t.alpha) || 0;
      seen.set(t.alpha, n + 1);
      const dx = (n % 2 ? 1 : -1) * Math.ceil(n / 2) * 7; // side by side when alphas repeat
      const best = t.trial_id === bestId;
      root.append(svg("circle", { cx: X(t.alpha) + dx, cy: Y(t.score), r: best ? 7 : 4.5, class: best ? "pt best" : "pt",
        "data-trial": t.trial_id }, svg("title", { text: `${t.trial_id}: α=${t.alpha}, W=${t.incorrect_weight}, T=${t.temperature}: ${pct(t.score, 2)}` })));
    }
    plot.replaceChildren(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    updateAges();
    setInterval(updateAges, 30000);
  });

  return { api, html, say, message, el, svg, pct, fmt, secs, ago, updateAges, follow, progressOf, lineChart,
    heatmap, alphaPlot, isNum, FINAL, UNFINISHED, ACTIVE, COLORS };
})();
