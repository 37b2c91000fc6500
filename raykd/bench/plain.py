"""The plain single-process PyTorch baselines of ``raykd bench speed``: no Ray at all.

Row (a) trains the student alone (cross-entropy on the labels): the physical limit of
any distillation on this machine. Row (p) is the yardstick a careful engineer writes by
hand for frozen teachers: their logits over the training split computed once (before the
clock), kept as one (M, N, C) tensor, and every step gathers the batch's rows by index
(``index_select``), then the KD loss and the step. Row (b) is the hand-written KD loop
that users write, or get from the usual KD libraries: every batch runs the M frozen
teachers forward (in ``no_grad``), then the student step on ``kd_loss(student,
mean(teachers))``.

All three use the very pieces raykd's own loop uses (``epoch_batches`` for the batch
order, ``build_model``, ``make_optimizer``, the method's loss resolved once with
``method_loss``), so the rows differ only in where the teachers' logits come from. The
diagnostic row (c0) runs raykd's own loop (``run_student``) on cached logits without Ray.
Each row runs ``warmup_steps`` untimed steps first (c0: one untimed epoch), and runs in a
fresh process (``python -m raykd.bench.plain``) so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

PHASES = ("data", "teachers", "forward", "loss", "backward")
"""Where a plain step spends its time: slicing the batch, the teachers' forward passes,
the student's forward, the loss, and backward + optimizer step."""


@dataclass(frozen=True)
class PlainRun:
    """What one plain row trains: the same settings as the Ray rows' JobSpec.

    Attributes:
        dataset: built-in name or data file (``load_dataset``).
        student: the student's ModelSpec as a mapping.
        teachers: teacher checkpoints; empty for the student alone (row a).
        steps: optimizer steps in total (over as many epochs as needed).
        train_limit: ``data.train_limit`` (None = the whole training split).
        batch_size, lr, seed: as in ``TrainSpec``; seed also picks the batch order.
        temperature, alpha: the KD loss's T and alpha.
        threads: torch intra-op threads (all the machine's cores for a fair baseline).
        val_fraction, data_seed: the split, as in ``DataSpec``.
        loop: ``plain`` (rows a, b: teachers forward every batch, if any), ``cached`` (row
            p: the teachers' logits gathered by index) or ``raykd`` (:func:`run_raykd_loop`).
        warmup_steps: untimed steps before the clock starts (``raykd``: any > 0 means one
            untimed epoch).
    """

    dataset: str = "mnist"
    student: dict[str, Any] = field(default_factory=lambda: {"name": "cnn", "width": 8})
    teachers: tuple[str, ...] = ()
    steps: int = 100
    train_limit: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    temperature: float = 4.0
    alpha: float = 0.9
    threads: int = 2
    val_fraction: float = 0.1
    data_seed: int = 0
    loop: Literal["plain", "cached", "raykd"] = "plain"
    warmup_steps: int = 0


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's own
    memory. ``ru_maxrss`` would do elsewhere, but on Linux it keeps the parent's peak
    across fork + exec, so a row started by a big driver would report the driver's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _load(run: PlainRun) -> tuple[Any, list[Any]]:
    """The dataset and the teachers (eval mode) of a row."""
    from raykd.data import load_dataset
    from raykd.models import load_checkpoint

    data = load_dataset(run.dataset, val_fraction=run.val_fraction, seed=run.data_seed,
                        train_limit=run.train_limit)
    shape, classes = data.input_shape, data.num_classes
    teachers = [load_checkpoint(p, input_shape=shape, num_classes=classes).eval()
                for p in run.teachers]
    return data, teachers


def augment_ms(x: Any, *, batch_size: int, repeats: int = 10) -> float:
    """Mean ms of ``augment_images`` on one batch: the extra input work of online rows."""
    import torch

    from raykd.train.steps import augment_images

    gen = torch.Generator().manual_seed(0)
    xb = torch.from_numpy(x[:batch_size])
    augment_images(xb, gen)
    start = time.perf_counter()
    for _ in range(repeats):
        augment_images(xb, gen)
    return 1000 * (time.perf_counter() - start) / repeats


def train_steps(run: PlainRun, student: Any, opt: Any, teachers: list[Any], x: Any,
                y: Any, *, cached: Any = None, steps: int | None = None,
                first_epoch: int = 0) -> tuple[dict[str, float], int]:
    """``steps`` (default ``run.steps``) optimizer steps of the plain loop.

    ``cached``: the teachers' (M, N, C) logits tensor, gathered by index every step (row
    p) instead of running ``teachers`` forward. Returns the seconds spent in each phase
    and the epoch the next step would start (so the timed steps follow the warm-up's).
    """
    import torch

    from raykd.losses import method_loss
    from raykd.train.steps import epoch_batches

    steps = run.steps if steps is None else steps
    distilled = bool(teachers) or cached is not None
    loss_fn = method_loss("kd" if distilled else "none", temperature=run.temperature,
                          alpha=run.alpha)
    phase = dict.fromkeys(PHASES, 0.0)
    step, epoch = 0, first_epoch
    student.train()
    while step < steps:
        for idx in epoch_batches(len(y), batch_size=run.batch_size, seed=run.seed, epoch=epoch):
            if step == steps:
                break
            t0 = time.perf_counter()
            xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            t1 = time.perf_counter()
            tl = None
            if cached is not None:
                tl = cached.index_select(1, torch.from_numpy(idx))
            elif teachers:
                with torch.no_grad():
                    tl = torch.stack([t(xb) for t in teachers])
            t2 = time.perf_counter()
            out = student(xb)
            t3 = time.perf_counter()
            loss = loss_fn(out, tl, yb, 0.0)
            t4 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t5 = time.perf_counter()
            for name, took in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                  strict=True):
                phase[name] += took
            step += 1
        epoch += 1
    return phase, epoch


def run_plain(run: PlainRun) -> dict[str, Any]:
    """Train the student for ``run.steps`` steps in this process; time every phase.

    Returns:
        ``steps``, ``batch_size``, ``epoch_seconds`` (the training loop only),
        ``samples_per_s`` (steps * batch / loop time), ``phase_ms`` (mean ms per step of
        each of :data:`PHASES`), ``val_accuracy``, ``setup_seconds`` (data, models),
        ``augment_ms``, ``peak_rss_mb`` and ``setup_peak_rss_mb`` (the peak before the
        loop: interpreter, torch, data, models).
    """
    import torch

    from raykd.models import build_model
    from raykd.train.steps import accuracy, make_optimizer, predict_logits, set_threads

    start = time.perf_counter()
    set_threads(run.threads)
    data, teachers = _load(run)
    cached = None
    if run.loop == "cached":  # row p: the teachers' logits once, as the cache would hold them
        cached = torch.from_numpy(np.stack([predict_logits(t, data.train.x) for t in teachers]))
    torch.manual_seed(run.seed)
    student = build_model(run.student, data.input_shape, data.num_classes)
    opt = make_optimizer(student, lr=run.lr, weight_decay=0.0)  # its first call imports dynamo
    x, y = data.train.x, data.train.y
    epoch = 0
    if run.warmup_steps:
        _, epoch = train_steps(run, student, opt, teachers, x, y, cached=cached,
                               steps=run.warmup_steps)
    setup, setup_rss = time.perf_counter() - start, peak_rss_mb()
    loop_start = time.perf_counter()
    phase, _ = train_steps(run, student, opt, teachers, x, y, cached=cached, first_epoch=epoch)
    seconds = time.perf_counter() - loop_start
    return {
        "steps": run.steps, "batch_size": run.batch_size, "epoch_seconds": seconds,
        "samples_per_s": run.steps * run.batch_size / seconds,
        "phase_ms": {k: 1000 * v / run.steps for k, v in phase.items()},
        "val_accuracy": accuracy(predict_logits(student, data.val.x), data.val.y),
        "setup_seconds": setup, "augment_ms": augment_ms(data.train.x, batch_size=run.batch_size),
        "peak_rss_mb": peak_rss_mb(), "setup_peak_rss_mb": setup_rss, "threads": run.threads,
        "teachers": len(teachers), "warmup_steps": run.warmup_steps,
    }


def run_raykd_loop(run: PlainRun) -> dict[str, Any]:
    """raykd's own student loop (``run_student``) with cached logits, in this process, no Ray.

    A diagnostic: the same code the Ray Train worker runs, fed the teachers' logits
    (computed here, before the clock starts) as the worker is fed them from the object
    store. Its gap to row (a) is the loop's; its gap to row (c) is Ray's.
    """
    from raykd.core.spec import MethodSpec, TrainSpec
    from raykd.train.config import StudentConfig
    from raykd.train.loop import LoopData, run_student
    from raykd.train.steps import predict_logits, set_threads, steps_per_epoch

    start = time.perf_counter()
    set_threads(run.threads)
    data, teachers = _load(run)
    logits = np.stack([predict_logits(t, data.train.x) for t in teachers])
    per_epoch = steps_per_epoch(len(data.train), batch_size=run.batch_size)
    epochs = max(1, -(-run.steps // per_epoch))
    warmup = 1 if run.warmup_steps else 0  # an untimed first epoch
    config = StudentConfig(
        model=dict(run.student), input_shape=data.input_shape, num_classes=data.num_classes,
        method=MethodSpec(method="kd", temperature=run.temperature, alpha=run.alpha,
                          incorrect_weight=1.0),
        train=TrainSpec(epochs=epochs + warmup, batch_size=run.batch_size, lr=run.lr,
                        weight_decay=0.0,
                        seed=run.seed),
        augment=False, threads=run.threads, label="raykd loop, no Ray",
    )
    loop_data = LoopData(x_train=data.train.x, y_train=data.train.y, x_val=data.val.x,
                         y_val=data.val.y, teacher_train=logits)
    setup = time.perf_counter() - start
    history = run_student(config, loop_data, report=lambda metrics, model: None)
    seconds = sum(h["epoch_seconds"] for h in history[warmup:])
    steps = epochs * per_epoch
    return {
        "steps": steps, "batch_size": run.batch_size, "epoch_seconds": seconds,
        "samples_per_s": steps * run.batch_size / seconds,
        "val_accuracy": history[-1].get("val_accuracy", float("nan")), "setup_seconds": setup,
        "peak_rss_mb": peak_rss_mb(), "threads": run.threads, "teachers": len(teachers),
        "warmup_steps": warmup * per_epoch,
    }


def run_plain_subprocess(run: PlainRun, *, workdir: Path, name: str,
                         timeout_s: float = 3600) -> dict[str, Any]:
    """Run :func:`run_plain` in a fresh Python process; add its wall and start-up time.

    ``wall_seconds`` is the whole process as seen from here (interpreter, imports, data,
    models, loop, validation, exit); ``startup_seconds`` is that minus the loop.
    """
    import subprocess

    workdir.mkdir(parents=True, exist_ok=True)
    args, out = workdir / f"{name}.args.json", workdir / f"{name}.json"
    args.write_text(json.dumps(asdict(run)))
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raykd.bench.plain", "--args", str(args),
                           "--out", str(out)], capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"plain row {name!r} failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    result = json.loads(out.read_text())
    result["wall_seconds"] = wall
    result["startup_seconds"] = max(0.0, wall - result["epoch_seconds"])
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m raykd.bench.plain --args RUN.json --out RESULT.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--args", type=Path, required=True, help="PlainRun fields as JSON.")
    parser.add_argument("--out", type=Path, required=True, help="Where to write the result JSON.")
    ns = parser.parse_args(argv)
    fields = json.loads(ns.args.read_text())
    fields["teachers"] = tuple(fields.get("teachers", ()))
    run = PlainRun(**fields)
    result = run_raykd_loop(run) if run.loop == "raykd" else run_plain(run)
    ns.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
