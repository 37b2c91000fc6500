"""``raykd bench speed``: raykd's throughput against the student alone and a plain KD loop.

One run, side by side on full MNIST, the same models (3 CNN width-8 teachers and a CNN
width-8 student, as in the ``mnist-wkd`` demo), batch 128, the same number of steps:

- (a) the student alone, plain PyTorch in one process: the physical limit of distillation;
- (b) plain PyTorch KD: the 3 teachers forward (no_grad) on every batch, then the student;
- (c) raykd, cached teacher logits, 1 Ray Train worker with 2 CPUs;
- (d) raykd online: augmentation on, the teacher actors serve logits one step ahead;
- (e) raykd cached with 1 worker x 1 CPU and with 2 workers x 1 CPU (DDP over gloo);
- (c0) a diagnostic: raykd's own loop (``run_student``), cached logits, no Ray.

Throughput is steady state: ``steps * batch / time of the training epochs`` (the
workers' own history); start-up is the rest of the row's wall time (Ray Train worker
group, imports, data, validation, teardown). Teachers are trained once (or reused from
``<out>/cache/teachers``) and their logit cache built once; both are reported apart.
The Ray rows share one ``ray.init``; the plain rows run after it is shut down.

On a shared machine the timings move: torch's OpenMP threads spin while they wait, so
a 2-thread row slows down several times as soon as anything else runs. Every row
records the share of the CPU other processes took ("other CPU"), and
``python -m raykd.bench.speed --rows a,b`` re-measures disturbed rows into the report.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raykd.bench import BenchOptionError
from raykd.bench.plain import PlainRun, run_plain_subprocess

BATCH = 128
QUICK_STEPS = 100
TEACHER_SEEDS = (1, 2, 3)
MODEL = {"name": "cnn", "width": 8}
LR = 3e-3
TEMPERATURE, ALPHA = 4.0, 0.9
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")
"""Environment that changes how torch's CPU threads behave; recorded with the results."""
BUSY = 0.25
"""Above this share of the CPU taken by other processes during a row, the report warns."""
TARGETS = (("c", "a", 0.9), ("c", "b", 2.0), ("d", "b", 0.9))
"""(row, baseline, minimum ratio of their steady-state samples/s) on a 2-core machine."""


@dataclass(frozen=True)
class Plan:
    """How many steps each row runs and the data/teacher settings that give them."""

    steps: int
    epochs: int
    train_limit: int | None
    teacher_epochs: int


def plan_steps(*, quick: bool, steps: int | None, n_train: int = 54_000) -> Plan:
    """Steps per row: one epoch of the training split, ~100 with ``quick``, or ``steps``.

    Fewer steps than one epoch use ``data.train_limit = steps * batch``; more use as many
    whole epochs as needed over a limited split so every row runs exactly the same steps.
    """
    per_epoch = n_train // BATCH
    wanted = steps if steps is not None else (QUICK_STEPS if quick else per_epoch)
    if wanted < 1:
        raise BenchOptionError(f"--steps={wanted} is invalid; expected an integer >= 1")
    epochs = -(-wanted // per_epoch)
    per = -(-wanted // epochs)
    limit = None if per == per_epoch else per * BATCH
    return Plan(steps=epochs * per, epochs=epochs, train_limit=limit,
                teacher_epochs=1 if quick else 3)


@dataclass(frozen=True)
class RayRow:
    """One raykd row: how the student is scaled and whether it is online."""

    key: str
    label: str
    num_workers: int
    cpus_per_worker: float
    augment: bool = False


RAY_ROWS = (
    RayRow("c", "raykd, cached logits, 1 worker x 2 CPU", 1, 2.0),
    RayRow("d", "raykd online (augment), teacher actors, 1 worker x 2 CPU", 1, 2.0, augment=True),
    RayRow("e1", "raykd, cached, 1 worker x 1 CPU", 1, 1.0),
    RayRow("e2", "raykd, cached, 2 workers x 1 CPU (DDP gloo)", 2, 1.0),
)
PLAIN_LABELS = {"a": "plain PyTorch, student alone (no teachers)",
                "b": "plain PyTorch KD, 3 teachers forward every batch",
                "c0": "diagnostic: raykd loop (run_student), cached, no Ray"}
ROW_ORDER = ("a", "b", "c", "d", "e1", "e2", "c0")


def bench_spec(plan: Plan, out: Path, *, checkpoints: list[str] | None,
               row: RayRow | None = None) -> Any:
    """The JobSpec of a Ray row (or of the setup, without a row): demo models, method kd."""
    from raykd.spec import JobSpec

    row = row or RAY_ROWS[0]
    teachers = [{"model": MODEL, "seed": s, "checkpoint": checkpoints[i] if checkpoints else None}
                for i, s in enumerate(TEACHER_SEEDS)]
    return JobSpec.model_validate({
        "name": f"bench-speed-{row.key}",
        "data": {"dataset": "mnist", "val_fraction": 0.1, "seed": 0,
                 "train_limit": plan.train_limit, "augment": row.augment},
        "teachers": teachers,
        "teacher_train": {"epochs": plan.teacher_epochs, "batch_size": BATCH, "lr": LR},
        "student": {"model": MODEL},
        "train": {"epochs": plan.epochs, "batch_size": BATCH, "lr": LR, "seed": 0},
        "methods": [{"method": "kd", "temperature": TEMPERATURE, "alpha": ALPHA}],
        "scaling": {"num_workers": row.num_workers, "cpus_per_worker": row.cpus_per_worker,
                    "use_gpu": False},
        "storage": str(out),
    })


def setup_teachers(plan: Plan, out: Path, log: Any) -> dict[str, Any]:
    """Start Ray, train the teachers and build their logit cache, or reuse both.

    Returns ``checkpoints``, ``ray_init_seconds`` and what the one-off work cost; a
    rerun that reuses them reports the numbers recorded when they were built
    (``<out>/setup-<train_limit>.json``).
    """
    from raykd.data import load_dataset
    from raykd.engine.context import Job
    from raykd.engine.prepare import ensure_ray, put_splits, run_teachers
    from raykd.teachers.cache import LogitCache

    job = Job(spec=bench_spec(plan, out, checkpoints=None), job_dir=out / "setup", log=log)
    data = load_dataset("mnist", val_fraction=0.1, seed=0, train_limit=plan.train_limit)
    start = time.perf_counter()
    ensure_ray()
    ray_init = time.perf_counter() - start
    teachers = run_teachers(job, data, LogitCache(out / "cache"), put_splits(data))
    cache = job.result["logit_cache"]["teacher"].values()
    forward = sum(s["teacher_forward_examples"] for s in cache)
    trained = any(t["trained_by_raykd"] for t in job.result["teachers"])
    record = out / f"setup-{plan.train_limit or 'full'}.json"
    info = json.loads(record.read_text()) if record.exists() else {}
    now = datetime.now(UTC).isoformat()
    if trained:
        info.update(teacher_train_seconds=job.timer.stages["teacher_train"],
                    teachers_trained_at=now)
    if forward:
        info.update(cache_build_seconds=sum(s["seconds"] for s in cache), cache_built_at=now,
                    cache_forward_examples=forward)
    info.update(teacher_test_accuracy=[t["test_accuracy"] for t in job.result["teachers"]],
                ensemble_test_accuracy=job.result["ensemble"]["test_accuracy"])
    record.write_text(json.dumps(info, indent=2))
    return {**info, "checkpoints": teachers.checkpoints, "ray_init_seconds": ray_init,
            "teachers_reused": not trained, "cache_reused": not forward}


def _psutil() -> Any:
    """psutil: installed, or the copy Ray vendors (importing ray puts it on ``sys.path``)."""
    import importlib

    try:
        return importlib.import_module("psutil")
    except ModuleNotFoundError:
        importlib.import_module("ray")
        return importlib.import_module("psutil")


class RowMonitor(threading.Thread):
    """Samples this process tree every second while a row runs: memory and CPU.

    - ``peak_workers_mb``: peak of the summed RSS of the ``ray::`` worker processes under
      this driver (train controller and workers, teacher actors), split by process title
      in ``peak_by_title``; pre-started idle workers and the head's own processes (GCS,
      raylet, dashboard, agents) are summed apart as ``peak_head_mb``. Shared
      object-store pages count in every process that maps them.
    - ``own_cpu_s``: CPU seconds this tree used; ``other_share``: the share of the
      machine's CPU that processes outside this tree took during the row (other users'
      work disturbs the timings). Each process's CPU time is read while it lives, since
      the raylet's exited workers leave no trace in its children's times; a process's
      last second may be missed.
    """

    SYSTEM = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_workers_mb = self.peak_head_mb = self.other_share = self.own_cpu_s = 0.0
        self.peak_by_title: dict[str, float] = {}
        self._cpu: dict[tuple[int, float], list[float]] = {}  # (pid, created): [first, last]
        self._stop_event = threading.Event()
        self._start: tuple[float, float] = (0.0, 0.0)

    def sample(self, *, first: bool = False) -> None:
        psutil = _psutil()
        me = psutil.Process()
        head, by_title = 0.0, {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    key, times = (proc.pid, proc.create_time()), proc.cpu_times()
                    title, mb = (proc.cmdline() or [""])[0], proc.memory_info().rss / 2**20
            except (psutil.Error, OSError):
                continue
            used = times.user + times.system
            self._cpu.setdefault(key, [used if first else 0.0, used])[1] = used
            if proc.pid == me.pid:
                continue
            if title.startswith("ray::") and not title.startswith(self.SYSTEM):
                name = title.split(".")[0].split()[0]
                by_title[name] = by_title.get(name, 0.0) + mb
            else:
                head += mb
        if sum(by_title.values()) > self.peak_workers_mb:
            self.peak_workers_mb, self.peak_by_title = sum(by_title.values()), by_title
        self.peak_head_mb = max(self.peak_head_mb, head)

    @staticmethod
    def _busy() -> float:
        total = _psutil().cpu_times()
        return sum(total) - total.idle - getattr(total, "iowait", 0.0)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RowMonitor:
        self._start = (time.perf_counter(), self._busy())
        self.sample(first=True)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()
        self.sample()
        wall, busy = time.perf_counter() - self._start[0], self._busy() - self._start[1]
        self.own_cpu_s = sum(last - first for first, last in self._cpu.values())
        capacity = max(1e-9, wall * (os.cpu_count() or 1))
        self.other_share = max(0.0, min(1.0, (busy - self.own_cpu_s) / capacity))


def run_ray_row(row: RayRow, plan: Plan, out: Path, checkpoints: list[str],
                log: Any) -> dict[str, Any]:
    """One raykd row: ``run_job`` with the setup's teachers; steady-state and start-up time."""
    from raykd.engine import run_job

    job_dir = out / "jobs" / row.key
    shutil.rmtree(job_dir, ignore_errors=True)
    with RowMonitor() as mem:
        spec = bench_spec(plan, out, checkpoints=checkpoints, row=row)
        result = run_job(spec, job_dir=job_dir, log=log)
    gen = result["students"][0]["generations"][0]
    epoch_s = sum(h["epoch_seconds"] for h in gen["history"])
    return {
        "kind": "ray", "steps": plan.steps, "batch_size": BATCH, "epoch_seconds": epoch_s,
        "samples_per_s": plan.steps * BATCH / epoch_s, "wall_seconds": gen["seconds"],
        "startup_seconds": gen["seconds"] - epoch_s,
        "worker_group_start_seconds": gen.get("startup_seconds", float("nan")),
        "job_seconds": result["timings"]["total"], "timings": result["timings"],
        "val_accuracy": gen["val_accuracy"], "peak_mem_mb": mem.peak_workers_mb,
        "peak_mem_by_process": mem.peak_by_title, "head_mem_mb": mem.peak_head_mb,
        "num_workers": row.num_workers, "cpus_per_worker": row.cpus_per_worker,
        "augment": row.augment, "other_cpu_share": mem.other_share,
    }


def run_plain_row(key: str, plan: Plan, out: Path, checkpoints: list[str]) -> dict[str, Any]:
    """A plain row in a fresh process: (a) alone, (b) plain KD, (c0) raykd's loop without Ray."""
    teachers = () if key == "a" else tuple(checkpoints)
    run = PlainRun(dataset="mnist", student=MODEL, teachers=teachers, steps=plan.steps,
                   train_limit=plan.train_limit, batch_size=BATCH, lr=LR, temperature=TEMPERATURE,
                   alpha=ALPHA, threads=2, loop="raykd" if key == "c0" else "plain")
    with RowMonitor() as mon:
        res = run_plain_subprocess(run, workdir=out / "plain", name=key)
    return {**res, "kind": "plain", "peak_mem_mb": res["peak_rss_mb"],
            "other_cpu_share": mon.other_share}


def wait_for_ray_exit(timeout_s: float = 20.0) -> None:
    """Shut down the local Ray this bench started and wait for its processes to go."""
    import ray

    psutil = _psutil()
    children = psutil.Process().children(recursive=True)
    ray.shutdown()
    psutil.wait_procs(children, timeout=timeout_s)


def run_speed_bench(*, out: Path, quick: bool = False, steps: int | None = None,
                    rows: tuple[str, ...] | None = None, log: Any = print) -> dict[str, Any]:
    """Run every row, print the table, write ``speed.md``, ``speed.json`` and ``speed.png``.

    ``rows`` re-measures only those rows (e.g. ``("a", "b")`` when other processes
    disturbed them) and merges them into the ``speed.json`` already in ``out``.
    """
    import ray

    plan = plan_steps(quick=quick, steps=steps)
    out = Path(out).resolve()  # Ray's workers and actors get absolute checkpoint paths
    out.mkdir(parents=True, exist_ok=True)
    keys, previous = _rows_to_run(rows, out, plan)
    started_ray = not ray.is_initialized()
    start = time.perf_counter()
    log(f"bench speed: {plan.steps} steps x batch {BATCH} per row, rows {keys}, out {out}")
    ray_rows = [r for r in RAY_ROWS if r.key in keys]
    setup = previous["setup"] if previous and not ray_rows else setup_teachers(plan, out, log)
    checkpoints = setup["checkpoints"]
    measured: dict[str, dict[str, Any]] = {}
    for row in ray_rows:
        log(f"row ({row.key}): {row.label}")
        measured[row.key] = {"label": row.label, "measured_at": datetime.now(UTC).isoformat(),
                             **_guard(lambda r=row: run_ray_row(r, plan, out, checkpoints, log))}
    if started_ray and ray.is_initialized():  # the plain rows get a machine without Ray
        wait_for_ray_exit()
    for key in (k for k in ("a", "b", "c0") if k in keys):
        log(f"row ({key}): {PLAIN_LABELS[key]}")
        measured[key] = {"label": PLAIN_LABELS[key], "measured_at": datetime.now(UTC).isoformat(),
                         **_guard(lambda k=key: run_plain_row(k, plan, out, checkpoints))}
    merged = {**(previous or {}).get("rows", {}), **measured}
    remeasured = {*(previous or {}).get("remeasured", []), *(measured if rows else ())}
    report = {
        "created_at": datetime.now(UTC).isoformat(), "steps": plan.steps, "batch_size": BATCH,
        "epochs": plan.epochs, "train_limit": plan.train_limit, "quick": quick,
        "cpus": os.cpu_count(), "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "setup": setup, "rows": {k: merged[k] for k in ROW_ORDER if k in merged},
        "remeasured": sorted(remeasured),
        "bench_seconds": time.perf_counter() - start,
    }
    write_report(report, out)
    return report


def _rows_to_run(rows: tuple[str, ...] | None, out: Path,
                 plan: Plan) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """The row keys to measure and, for a partial rerun, the earlier report to merge into."""
    if not rows:
        return ROW_ORDER, None
    unknown = [k for k in rows if k not in ROW_ORDER]
    if unknown:
        raise BenchOptionError(
            f"--rows={','.join(rows)}: unknown {unknown}; accepted: {list(ROW_ORDER)}"
        )
    path = out / "speed.json"
    previous = _previous_report(path, rows)
    if previous["steps"] != plan.steps:
        raise BenchOptionError(
            f"--rows={','.join(rows)}: {path} has {previous['steps']} steps per row, this run "
            f"{plan.steps}; use the same --steps/--quick"
        )
    return tuple(rows), previous


def _previous_report(path: Path, rows: tuple[str, ...]) -> dict[str, Any]:
    """The ``speed.json`` a partial rerun merges into; BenchOptionError when it is unusable."""
    flag = f"--rows={','.join(rows)}"
    if not path.is_file():
        raise BenchOptionError(f"{flag}: no {path} to merge into; run the whole bench first")
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        reason = f"{flag}: {path} cannot be read ({err}); rerun the whole bench"
        raise BenchOptionError(reason) from None
    if not isinstance(previous, dict) or not isinstance(previous.get("steps"), int):
        raise BenchOptionError(
            f"{flag}: {path} is not a speed report (no integer 'steps'); rerun the whole bench"
        )
    return previous


def _guard(fn: Any) -> dict[str, Any]:
    """A failed row becomes an ``error`` entry; the other rows still run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table, not swallowed
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"error": f"{type(exc).__name__}: {first}"}


COLUMNS = ("row", "what", "samples/s", "vs (a)", "train s", "start-up s", "wall s", "peak mem MB",
           "val acc", "other CPU")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One table line per row: steady-state samples/s, its ratio to (a), times, memory."""
    base = report["rows"].get("a", {}).get("samples_per_s")
    lines = []
    for key, r in report["rows"].items():
        if "error" in r:
            lines.append([f"({key})", f"{r.get('label', '')}: failed ({r['error']})"] + ["-"] * 8)
            continue
        sps = r["samples_per_s"]
        lines.append([f"({key})", r["label"], f"{sps:,.0f}", f"{sps / base:.2f}" if base else "-",
                      f"{r['epoch_seconds']:.1f}", f"{r['startup_seconds']:.1f}",
                      f"{r['wall_seconds']:.1f}", f"{r['peak_mem_mb']:,.0f}",
                      f"{r['val_accuracy']:.4f}", f"{r.get('other_cpu_share', float('nan')):.0%}"])
    return lines


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target ratio, met or missed, with a one-line reason drawn from the measurements."""
    rows, out = report["rows"], []
    for row, base, need in TARGETS:
        r, b = rows.get(row, {}), rows.get(base, {})
        value = None
        if "samples_per_s" in r and "samples_per_s" in b:
            value = r["samples_per_s"] / b["samples_per_s"]
        met = value is not None and value >= need
        reason = "" if met else _reason(row, base, rows) if value else "a row failed; see the table"
        out.append({"ratio": f"({row})/({base})", "value": value, "target": need, "met": met,
                    "reason": reason})
    return out


def _ms(r: dict[str, Any]) -> float:
    return 1000 * r["batch_size"] / r["samples_per_s"]


def _reason(row: str, base: str, rows: dict[str, dict[str, Any]]) -> str:
    """One line on why ``row`` missed its target against ``base``, from the other rows."""
    a, b, c, c0 = (rows.get(k, {}) for k in ("a", "b", "c", "c0"))
    have = all("samples_per_s" in r for r in (a, b, c, c0))
    if row == "c" and base == "b" and have and a["samples_per_s"] < 2 * b["samples_per_s"]:
        return (f"(c) cannot beat the student alone and (a)/(b) is only "
                f"{a['samples_per_s'] / b['samples_per_s']:.2f}: the 3 teachers' forwards are "
                f"{b['phase_ms']['teachers']:.1f} of {_ms(b):.1f} ms per step in (b)")
    if row == "c" and have:
        return (f"{_ms(c):.1f} ms per step vs {_ms(a):.1f} for the student alone: raykd's loop "
                f"without Ray (c0) adds {_ms(c0) - _ms(a):+.1f} ms (KD loss, logit slicing), the "
                f"Ray Train worker {_ms(c) - _ms(c0):+.1f} ms more")
    if row == "d" and "samples_per_s" in b:
        return (f"{_ms(rows['d']):.1f} ms per step vs {_ms(b):.1f} in (b) for the same work "
                f"(+ augmentation, {a.get('augment_ms', float('nan')):.1f} ms): 3 teacher actors "
                f"(1 thread each) and the 2-thread student share {os.cpu_count()} cores, plus 3 "
                f"actor round trips per step")
    return f"{_ms(rows[row]):.1f} ms per step vs {_ms(rows[base]):.1f} ms"


NOTE = ("samples/s: steady state, steps x batch / time of the training epochs (the worker's "
        "own history). start-up: wall minus training (Ray: worker-group start, imports, data, "
        "validation, checkpoint, teardown; plain: interpreter, imports, data, models, "
        "validation). Peak memory: plain rows the peak RSS (VmHWM) of their own process; Ray "
        "rows the summed RSS of the Ray worker processes (train controller, workers, teacher "
        "actors; shared object-store pages count in each), head processes apart.")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the table, the targets, the one-off costs and the profile."""
    from raykd.report import markdown_table

    s, rows = report.get("setup", {}), report["rows"]
    limit = f", train_limit {report['train_limit']}" if report.get("train_limit") else ""
    lines = ["# raykd bench speed", "",
             f"MNIST, {report['steps']} steps x batch {report['batch_size']} per row{limit}; 3 CNN "
             f"width-8 teachers, CNN width-8 student, KD T={TEMPERATURE:g} alpha={ALPHA:g}; "
             f"{report.get('cpus')} CPUs; {report.get('created_at', '')}; thread environment: "
             f"{report.get('env') or 'defaults'}.", "",
             markdown_table(list(COLUMNS), table_rows(report)), "", NOTE, ""]
    if report.get("remeasured"):
        when = ", ".join(f"({k}) {rows[k].get('measured_at', '?')[11:19]}"
                         for k in report["remeasured"] if k in rows)
        lines += [f"Re-measured after the first run (UTC): {when}.", ""]
    lines += ["## Targets", ""]
    for t in check_targets(report):
        got = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        verdict = "met" if t["met"] else f"**missed**: {t['reason']}"
        lines.append(f"- {t['ratio']} = {got} (target >= {t['target']:g}): {verdict}")
    lines += ["", "## One-off and fixed costs (not per step)", ""]
    if s:
        acc = ", ".join(f"{a:.4f}" for a in s["teacher_test_accuracy"])
        lines += [f"- ray.init: {s['ray_init_seconds']:.1f} s (once per bench)",
                  f"- teachers: "
                  f"{_once(s, 'teacher_train_seconds', 'teachers_reused', 'teachers_trained_at')}",
                  f"- logit cache build, paid once per teacher and dataset: "
                  f"{_once(s, 'cache_build_seconds', 'cache_reused', 'cache_built_at')}",
                  f"- teachers' test accuracy {acc}; ensemble {s['ensemble_test_accuracy']:.4f}"]
    for key, r in rows.items():
        if r.get("kind") == "ray":
            t = r["timings"]
            procs = ", ".join(f"{n.removeprefix('ray::')} {mb:,.0f}"
                              for n, mb in r.get("peak_mem_by_process", {}).items())
            before = t.get("teacher_start", 0) + t.get("teacher_logits", 0)
            lines.append(f"- ({key}) Ray Train worker-group start "
                         f"{r['worker_group_start_seconds']:.1f} s; before the fit, teacher actors "
                         f"up + cached logits {before:.1f} s; peak MB: {procs}; Ray head + idle "
                         f"workers {r['head_mem_mb']:,.0f} MB")
    profile = [[f"({k})", *(f"{v:.1f}" for v in r["phase_ms"].values()), f"{_ms(r):.1f}"]
               for k, r in rows.items() if "phase_ms" in r]
    lines += ["", "## Per-step profile of the plain rows (ms)", "",
              markdown_table(["row", "data", "teachers", "forward", "loss", "backward+step",
                              "total"], profile)]
    if "augment_ms" in rows.get("a", {}):
        lines.append(f"\naugment_images: {rows['a']['augment_ms']:.1f} ms per batch (row d only).")
    setup_mb = ", ".join(f"({k}) {r['setup_peak_rss_mb']:,.0f} MB" for k, r in rows.items()
                         if "setup_peak_rss_mb" in r)
    if setup_mb:
        lines.append(f"\nPlain rows' peak RSS before their loop (interpreter, torch, data, "
                     f"models): {setup_mb}.")
    lines += ["", "other CPU: the share of the machine's CPU that other processes took during the "
                  "row (0% = the row had the machine to itself; more disturbs its timings)."]
    if any(r.get("other_cpu_share", 0.0) > BUSY for r in rows.values()):
        lines.append(f"**Warning**: other processes took more than {BUSY:.0%} of the CPU during "
                     f"some rows; their timings are disturbed, rerun on a quiet machine.")
    return "\n".join([*lines, ""])


def _once(s: dict[str, Any], seconds: str, reused: str, when: str) -> str:
    if s.get(seconds) is None:
        return "reused (built before this bench recorded it)"
    took = f"{s[seconds]:.1f} s"
    return f"reused, built in {took} at {s[when]}" if s[reused] else f"built now in {took}"


def write_report(report: dict[str, Any], out: Path) -> None:
    """Print the table; write ``speed.md``, ``speed.json`` and the bar chart ``speed.png``."""
    from rich.console import Console
    from rich.table import Table

    (out / "speed.json").write_text(json.dumps(report, indent=2))
    (out / "speed.md").write_text(markdown(report))
    table = Table(title=f"raykd bench speed: {report['steps']} steps x {report['batch_size']}")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("row", "what") else "right")
    for line in table_rows(report):
        table.add_row(*line)
    console = Console(width=160)
    console.print(table)
    for t in check_targets(report):
        got = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        console.print(f"{t['ratio']} = {got} (target >= {t['target']:g}): "
                      f"{'met' if t['met'] else 'MISSED: ' + t['reason']}")
    bar_chart(report, out / "speed.png")
    console.print(f"wrote {out / 'speed.md'}, speed.json, speed.png")


def bar_chart(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars of steady-state samples/s per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(f"({k}) {r['label']}", r["samples_per_s"]) for k, r in report["rows"].items()
             if "samples_per_s" in r]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(items) + 1.2))
    bars = ax.barh([n for n, _ in items][::-1], [v for _, v in items][::-1], color="#4c72b0")
    ax.bar_label(bars, fmt="%.0f", padding=3)
    ax.set_xlabel("samples/s (steady state, higher is better)")
    ax.set_title(f"raykd bench speed: {report['steps']} steps x batch {report['batch_size']}, "
                 f"{report.get('cpus')} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """``python -m raykd.bench.speed [--quick] [--steps N] [--rows a,b] [--out DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("raykd-runs/bench-speed"))
    parser.add_argument("--quick", action="store_true", help="~100 steps per row.")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per row.")
    parser.add_argument("--rows", default=None,
                        help=f"Re-measure only these rows ({','.join(ROW_ORDER)}, comma-separated) "
                             "and merge them into OUT/speed.json.")
    ns = parser.parse_args(argv)
    rows = tuple(r.strip() for r in ns.rows.split(",") if r.strip()) if ns.rows else None
    run_speed_bench(out=ns.out, quick=ns.quick, steps=ns.steps, rows=rows)


if __name__ == "__main__":
    main()
