// The jobs page: every active job streams its events (progress and stage move as they
// arrive); the rows are fetched again, as server-rendered HTML, when a job ends or starts,
// after an action, and every 20 s while the page is visible (to see jobs others submit).
"use strict";

(() => {
  const MAX_STREAMS = 5; // browsers allow ~6 connections per host over HTTP/1.1
  const body = document.getElementById("job-rows");
  const table = document.getElementById("jobs");
  const filter = document.getElementById("state-filter");
  const streams = new Map(); // job id -> {source, progress: asks the service for the job's progress}
  const endedAt = new Map(); // job id -> seq of the end its last stream saw (a retried job goes on from there)
  let refreshTimer = null;

  filter.addEventListener("change", () => filter.form.requestSubmit());

  function row(id) {
    return body.querySelector(`tr[data-job="${CSS.escape(id)}"]`);
  }

  function setProgress(tr, value) {
    const current = parseFloat(tr.dataset.progress) || 0;
    if (!(value > current)) return;
    tr.dataset.progress = value.toFixed(4);
    tr.querySelector("progress").value = value;
    tr.querySelector(".pct").textContent = Math.round(value * 100) + "%";
  }

  function setState(tr, state) {
    if (tr.dataset.state === state) return;
    tr.dataset.state = state;
    const badge = tr.querySelector(".badge");
    badge.className = `badge s-${state}`;
    badge.dataset.state = state;
    badge.textContent = state;
    tr.querySelector(".c-queue").textContent = "–";
  }

  const MOVES = ["job_started", "epoch", "student_finished", "trial", "job_finished"];

  function onEvent(id, type, e) {
    const s = streams.get(id);
    const tr = row(id);
    if (!s || !tr) return;
    if (type === "job_started") {
      setState(tr, "running");
    } else if (type === "stage_started") {
      tr.querySelector(".c-stage").textContent = e.stage;
    }
    if (MOVES.includes(type)) s.progress(); // the service's progress, asked again
  }

  function sync() {
    // one stream per unfinished job shown (pending and running first, then those not on Ray
    // yet: queued and submitting, whose job_started turns them running), none for the others
    const rows = [...body.querySelectorAll("tr[data-job]")];
    const waiting = (tr) => RK.UNFINISHED.includes(tr.dataset.state) && !RK.ACTIVE.includes(tr.dataset.state);
    const wanted = rows.filter((tr) => RK.ACTIVE.includes(tr.dataset.state))
      .concat(rows.filter(waiting))
      .slice(0, MAX_STREAMS).map((tr) => tr.dataset.job);
    for (const [id, s] of streams) {
      if (!wanted.includes(id)) {
        s.source.close();
        streams.delete(id);
      }
    }
    for (const id of wanted) {
      if (streams.has(id)) continue;
      const s = { progress: RK.progressOf(id, (p) => { const tr = row(id); if (tr) setProgress(tr, p); }) };
      streams.set(id, s);
      s.source = RK.follow(id, (type, e) => onEvent(id, type, e), (_, last) => {
        streams.delete(id);
        if (last) endedAt.set(id, last);
        refreshSoon(300);
        refreshSoon(2500); // the next queued job starts when the scheduler sees the slot free
      }, endedAt.get(id));
    }
  }

  async function refresh() {
    const state = table.dataset.stateFilter;
    const text = await RK.html("/partials/jobs" + (state ? `?state=${encodeURIComponent(state)}` : ""));
    if (text === null) return;
    const kept = new Map([...body.querySelectorAll("tr[data-job]")].map((tr) => [tr.dataset.job, parseFloat(tr.dataset.progress) || 0]));
    const focused = document.activeElement && document.activeElement.closest("button[data-act]");
    const focusKey = focused ? `${focused.dataset.act}|${focused.dataset.id}` : null;
    body.innerHTML = text;
    for (const tr of body.querySelectorAll("tr[data-job]")) {
      // a stream may be ahead of the stored record by a moment: never move backwards
      const before = kept.get(tr.dataset.job);
      if (before && RK.UNFINISHED.includes(tr.dataset.state)) setProgress(tr, before);
    }
    if (focusKey) {
      const [act, id] = focusKey.split("|");
      const again = body.querySelector(`button[data-act="${act}"][data-id="${CSS.escape(id)}"]`);
      if (again) again.focus();
    }
    RK.updateAges(body);
    sync();
  }

  function refreshSoon(ms) {
    setTimeout(refresh, ms);
  }

  document.addEventListener("rk:changed", () => refreshSoon(0));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refreshSoon(0);
  });
  refreshTimer = setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, 20000);
  window.addEventListener("pagehide", () => {
    clearInterval(refreshTimer);
    for (const s of streams.values()) s.source.close();
  });
  sync();
})();
