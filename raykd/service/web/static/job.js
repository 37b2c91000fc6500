// A job's page (a run or a sweep): its event stream drives the stage timeline, the
// students' curves (runs) or the trials, heatmap and alpha plot (sweeps); when the job
// ends, the results table (server-rendered), the artifacts and the log are fetched again.
"use strict";

(() => {
  const meta = document.getElementById("job-meta");
  const id = meta.dataset.job;
  const isSweep = meta.dataset.kind === "sweep";
  const enc = encodeURIComponent(id);
  const sweepData = (() => {
    const node = document.getElementById("sweep-data");
    try { return node ? JSON.parse(node.textContent) : {}; } catch (_) { return {}; }
  })();
  const st = {
    stages: [], // {stage, start, end, seconds, attempt}
    attempt: 0,
    teachers: new Map(), // index -> val accuracy
    curves: new Map(), // "student/generation" -> {label, points: Map(epoch -> metrics)}
    trials: new Map(), // trial id -> row
    ensembleVal: null,
    best: sweepData.best ? sweepData.best.trial_id : null,
    ended: RK.FINAL.includes(meta.dataset.state),
    endedAt: null,
  };
  let frame = 0;
  let sort = { key: "score", dir: -1 };
  // a trial's score is the sweep's metric: val accuracy, or SQuAD val F1 (as a fraction) for spans
  const metric = { span: false, label: "val accuracy" };

  // the progress bar shows the service's progress (raykd.core.results), asked as events arrive
  const askProgress = RK.progressOf(id, (p) => {
    const bar = document.getElementById("m-progress");
    if (st.ended || !(p > bar.value)) return;
    bar.value = p;
    document.getElementById("m-pct").textContent = Math.round(p * 100) + "%";
  });

  // --- events -------------------------------------------------------------------------

  function onEvent(type, e) {
    if (type === "job_started") {
      st.attempt = e.attempt;
      st.stages = st.stages.filter((s) => s.end !== null); // a dead attempt's open stages end here
      st.endedAt = null;
    } else if (type === "stage_started") {
      st.stages.push({ stage: e.stage, start: e.time, end: null, seconds: null, attempt: st.attempt });
    } else if (type === "stage_finished") {
      const s = [...st.stages].reverse().find((x) => x.stage === e.stage && x.end === null);
      if (s) { s.end = e.time; s.seconds = e.seconds; }
      else st.stages.push({ stage: e.stage, start: e.time - e.seconds, end: e.time, seconds: e.seconds, attempt: st.attempt });
    } else if (type === "teacher_ready") {
      st.teachers.set(e.index, e.val_accuracy);
    } else if (type === "epoch") {
      const key = `${e.student}/${e.generation}`;
      if (!st.curves.has(key)) st.curves.set(key, { label: e.label || `student ${e.student}`, generation: e.generation, points: new Map() });
      st.curves.get(key).points.set(e.epoch, e.metrics || {});
    } else if (type === "trial") {
      const prev = st.trials.get(e.trial_id) || {};
      const m = e.metrics || {};
      const row = { ...prev, trial_id: e.trial_id, ...e.config, ...m, done: prev.done || e.done };
      row.epoch = m.training_iteration || m.epoch || prev.epoch;
      if (RK.isNum(m.val_f1)) spanSweep();
      row.score = metric.span ? (RK.isNum(row.val_f1) ? row.val_f1 / 100 : null) : row.val_accuracy;
      st.trials.set(e.trial_id, row);
    } else if (type === "job_finished" || type === "job_failed") {
      st.endedAt = e.time;
      for (const s of st.stages) if (s.end === null) s.end = e.time;
    }
    if (["job_started", "epoch", "student_finished", "trial", "job_finished"].includes(type)) askProgress();
    schedule();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
  }

  // --- rendering ----------------------------------------------------------------------

  function render() {
    renderTimeline();
    if (isSweep) renderSweep();
    else renderCurves();
  }

  function renderTimeline() {
    const list = document.getElementById("timeline");
    if (!st.stages.length) return;
    const now = Date.now() / 1000;
    const t0 = Math.min(...st.stages.map((s) => s.start));
    const t1 = Math.max(...st.stages.map((s) => s.end ?? now), t0 + 1e-3);
    const count = new Map(), nth = new Map();
    for (const s of st.stages) count.set(s.stage, (count.get(s.stage) || 0) + 1);
    list.replaceChildren(...st.stages.map((s) => {
      nth.set(s.stage, (nth.get(s.stage) || 0) + 1); // a stage run once per student: "students 2"
      const name = count.get(s.stage) > 1 ? `${s.stage} ${nth.get(s.stage)}` : s.stage;
      const running = s.end === null && !st.ended;
      const dur = (s.end ?? now) - s.start;
      const bar = RK.el("span", { cls: "tl-bar" + (running ? " running" : "") });
      const track = RK.el("span", { cls: "tl-track", "aria-hidden": "true" }, bar);
      // positions through CSSOM (the page's CSP allows no inline style attributes)
      bar.style.left = ((s.start - t0) / (t1 - t0) * 100).toFixed(2) + "%";
      bar.style.width = Math.max(0.6, dur / (t1 - t0) * 100).toFixed(2) + "%";
      return RK.el("li", { cls: running ? "running" : "done", "data-stage": s.stage },
        RK.el("span", { cls: "tl-name", text: name }),
        track,
        RK.el("span", { cls: "tl-time", text: running ? `running, ${RK.secs(dur)}` : RK.secs(s.seconds ?? dur) }));
    }));
  }

  function renderCurves() {
    const entries = [...st.curves.values()];
    const multiGen = entries.some((c) => c.generation > 1);
    const name = (c) => (multiGen ? `${c.label} g${c.generation}` : c.label);
    const series = (metric, scale = 1) => entries.map((c) => ({
      name: name(c),
      points: [...c.points.entries()].filter(([, m]) => RK.isNum(m[metric])).sort((a, b) => a[0] - b[0])
        .map(([ep, m]) => [ep, m[metric] / scale]),
    })).filter((s) => s.points.length);
    // span extraction: the per-epoch SQuAD F1 (percent in the events) is the curve that matters
    const spans = entries.some((c) => [...c.points.values()].some((m) => RK.isNum(m.val_f1)));
    const caption = document.getElementById("cap-val");
    if (caption) caption.textContent = spans ? "Validation F1 (SQuAD v2.0)" : "Validation accuracy";
    const refs = spans ? [] : [...st.teachers.entries()].filter(([, v]) => RK.isNum(v)).sort((a, b) => a[0] - b[0])
      .map(([i, v]) => ({ name: `teacher ${i}`, y: v, kind: "teacher" }));
    if (!spans && RK.isNum(st.ensembleVal)) refs.push({ name: "ensemble", y: st.ensembleVal, kind: "ensemble" });
    RK.lineChart(document.getElementById("chart-val"), {
      series: spans ? series("val_f1", 100) : series("val_accuracy"), refs, percent: true });
    RK.lineChart(document.getElementById("chart-loss"), { series: series("train_loss") });
  }

  // A span sweep's trials report SQuAD val F1: the score, the plots and the column say so.
  function spanSweep() {
    if (metric.span) return;
    Object.assign(metric, { span: true, label: "val F1" });
    for (const r of st.trials.values()) r.score = RK.isNum(r.val_f1) ? r.val_f1 / 100 : null;
    const head = document.querySelector('#trials th[data-key="score"] button');
    if (head) head.textContent = "Val F1";
    for (const p of document.querySelectorAll("#h-heat ~ p.sub, #h-alpha ~ p.sub")) {
      p.textContent = p.textContent.replace("Validation accuracy", "Validation F1 (SQuAD v2.0)");
    }
  }

  function bestTrial(rows) {
    if (st.best && st.trials.has(st.best)) return st.best;
    let best = null;
    for (const r of rows) if (RK.isNum(r.score) && (!best || r.score > best.score)) best = r;
    return best ? best.trial_id : null;
  }

  function renderSweep() {
    const rows = [...st.trials.values()];
    const bestId = bestTrial(rows);
    const label = metric.span ? "Validation F1" : "Validation accuracy";
    RK.heatmap(document.getElementById("heatmap"), rows, bestId, label);
    RK.alphaPlot(document.getElementById("alphaplot"), rows, bestId, label);
    const line = document.getElementById("best-line");
    const b = st.trials.get(bestId);
    if (b) {
      line.replaceChildren(RK.el("strong", { text: st.best ? "Best trial: " : "Best so far: " }),
        `${b.trial_id} — ${b.method}, W=${RK.fmt(b.incorrect_weight)}, T=${RK.fmt(b.temperature)}, ` +
        `α=${RK.fmt(b.alpha)}: ${metric.label} ${RK.pct(b.score, 2)}`);
      const link = document.querySelector("#result a[data-best-student]");
      if (link) line.append(" · ", RK.el("a", { href: link.getAttribute("href"), download: true, text: "download the retrained best student" }));
    }
    const tbody = document.querySelector("#trials tbody");
    if (!rows.length) return;
    const val = (r) => r[sort.key];
    const bestFirst = (a, b) => (b.trial_id === bestId) - (a.trial_id === bestId); // on ties
    rows.sort((a, b) => {
      const x = val(a), y = val(b);
      if (typeof x === "number" || typeof y === "number") {
        const xn = RK.isNum(x) ? x : -Infinity, yn = RK.isNum(y) ? y : -Infinity;
        return (xn - yn) * sort.dir || bestFirst(a, b) || String(a.trial_id).localeCompare(String(b.trial_id));
      }
      return String(x ?? "").localeCompare(String(y ?? "")) * sort.dir || bestFirst(a, b);
    });
    tbody.replaceChildren(...rows.map((r) => {
      const best = r.trial_id === bestId;
      return RK.el("tr", { cls: best ? "best" : "", "data-trial": r.trial_id },
        RK.el("th", { scope: "row" }, r.trial_id, best ? RK.el("span", { cls: "tag best-tag", text: "best" }) : null),
        RK.el("td", { text: r.method ?? "–" }),
        RK.el("td", { cls: "num", text: RK.fmt(r.incorrect_weight) }),
        RK.el("td", { cls: "num", text: RK.fmt(r.temperature) }),
        RK.el("td", { cls: "num", text: RK.fmt(r.alpha) }),
        RK.el("td", { cls: "num", text: RK.pct(r.score, 2) }),
        RK.el("td", { cls: "num", text: RK.fmt(r.train_loss, 4) }),
        RK.el("td", { cls: "num", text: r.epoch ?? "–" }),
        RK.el("td", { cls: "num", text: RK.secs(r.trial_seconds) }),
        RK.el("td", { text: r.done ? "done" : (st.ended ? "stopped" : "running") }));
    }));
  }

  const trials = document.getElementById("trials");
  if (trials) {
    trials.querySelector("thead").addEventListener("click", (ev) => {
      const th = ev.target.closest("th[data-key]");
      if (!th) return;
      const key = th.dataset.key;
      sort = { key, dir: sort.key === key ? -sort.dir : (["trial_id", "method", "status"].includes(key) ? 1 : -1) };
      for (const h of trials.querySelectorAll("th[data-key]")) h.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      renderSweep();
    });
  }

  // --- the job record, results, artifacts, log ---------------------------------------------

  async function refreshJob() {
    const r = await RK.api("GET", `/api/v1/jobs/${enc}`);
    if (!r.ok) return null;
    const job = r.data;
    const badge = document.querySelector("#m-state .badge");
    badge.className = `badge s-${job.state}`;
    badge.dataset.state = job.state;
    badge.textContent = job.state;
    meta.dataset.state = job.state;
    document.getElementById("m-stage").textContent = job.stage || "–";
    const bar = document.getElementById("m-progress");
    if (job.progress >= bar.value || RK.FINAL.includes(job.state)) {
      bar.value = job.state === "succeeded" ? 1 : Math.max(job.progress, bar.value);
      document.getElementById("m-pct").textContent = Math.round(bar.value * 100) + "%";
    }
    if (job.started_at) {
      const end = job.finished_at || Date.now() / 1000;
      document.getElementById("m-elapsed").textContent = RK.secs(end - job.started_at);
    }
    const ens = job.result && job.result.ensemble;
    if (ens && RK.isNum(ens.val_accuracy)) st.ensembleVal = ens.val_accuracy;
    if (job.result && job.result.best) st.best = job.result.best.trial_id;
    for (const b of document.querySelectorAll(".page-head button[data-act]")) {
      b.hidden = (b.dataset.act === "cancel") === RK.FINAL.includes(job.state);
    }
    schedule();
    return job;
  }

  async function refreshResult() {
    const text = await RK.html(`/partials/jobs/${enc}/result`);
    if (text !== null) document.getElementById("result").innerHTML = text;
  }

  async function refreshArtifacts() {
    const r = await RK.api("GET", `/api/v1/jobs/${enc}/artifacts`);
    const list = document.getElementById("artifacts");
    if (!r.ok) return;
    if (!r.data.length) {
      list.replaceChildren(RK.el("li", { cls: "na", text: "None yet." }));
      return;
    }
    list.replaceChildren(...r.data.map((a) => RK.el("li", {},
      RK.el("a", { href: `/api/v1/jobs/${enc}/artifacts/${a.path.split("/").map(encodeURIComponent).join("/")}`, download: true, text: a.path }),
      RK.el("span", { cls: "size", text: size(a.size) }))));
  }

  function size(n) {
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
    return (n / (1 << 20)).toFixed(1) + " MiB";
  }

  const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;
  let logBusy = false, logAt = 0;
  async function refreshLog(force) {
    if (logBusy || (!force && Date.now() - logAt < 3000)) return;
    logBusy = true;
    logAt = Date.now();
    try {
      const r = await fetch(`/api/v1/jobs/${enc}/logs?tail=200`, { credentials: "same-origin" });
      const pre = document.getElementById("log");
      if (r.ok) {
        const text = await r.text();
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        const plain = text.replace(ANSI, ""); // Ray colours its log prefixes
        pre.textContent = plain.trim() ? plain : "(no log yet)";
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
    } finally {
      logBusy = false;
    }
  }
  document.getElementById("log-refresh").addEventListener("click", () => refreshLog(true));

  // --- live ---------------------------------------------------------------------------

  let source = null;
  let jobTimer = null;
  function start() {
    source = RK.follow(id, (type, e) => {
      onEvent(type, e);
      if (!st.ended && ["stage_started", "stage_finished", "student_finished", "job_started"].includes(type)) {
        clearTimeout(jobTimer);
        jobTimer = setTimeout(refreshJob, 400);
        refreshLog(false);
      }
    }, async () => {
      const wasEnded = st.ended;
      st.ended = true;
      await refreshJob();
      if (!wasEnded) {
        await Promise.all([refreshResult(), refreshArtifacts(), refreshLog(true)]);
      }
      schedule();
    });
  }

  document.addEventListener("rk:changed", (ev) => {
    if (ev.detail.act === "retry") location.reload(); // a new attempt: start the page afresh
    else refreshJob();
  });
  window.addEventListener("pagehide", () => source && source.close());
  setInterval(() => { if (!st.ended) render(); }, 1000); // running stages' clocks

  refreshJob();
  refreshArtifacts();
  refreshLog(true);
  start();
})();
