"""``raykd bench text-speed``: raykd's text paths against plain loops, as ratios in one run.

Two pairs, each on the same model, batch, lengths and threads:

- **teacher logits per second**: a raykd teacher actor (:class:`raykd.teachers.TeacherPool`,
  the actor the engine starts; its ``logits`` call on a split in the object store: raw
  bytes decoded and tokenized in the actor, batches of ``TOKENS_PER_BATCH // max_length``
  texts) against a plain ``torch.no_grad()`` loop over the same transformers model on
  batches tokenized beforehand (tokenization not timed);
- **student steps per second on cached logits**: raykd's student loop
  (:func:`raykd.train.loop.run_student`, KD T = 2, alpha = 0.5 on cached (M, N, C)
  logits; steady state = its second epoch's ``samples_per_s / batch``) against a plain
  Hugging Face loop: ``AutoModelForSequenceClassification`` from the same config,
  AdamW, the same KD loss on the same cached logits, the same batches tokenized
  beforehand (one untimed warm-up epoch, then one timed epoch).

Measures run in ``rounds`` interleaved rounds after one warm-up round (discarded); the
order of the four measures rotates each round. Each side reports the median of its rounds
with min-max; ratio = raykd median / plain median (targets: 0.95x teacher, 0.9x student).
The 1-minute load average is recorded before and after every measure: the machine may be
shared. After the rounds, one cProfile pass of each raykd side gives the share of its time
spent tokenizing (:meth:`raykd.models.hf.TextClassifier.tokenize`).

Cache bytes per window per teacher: classification stores C float32 per text; span
extraction (``bbc-speakers`` windows of the MiniLM tokenizer, L = 384, stride 128) stores
the valid positions' start/end logits in float16 plus row index
(:mod:`raykd.teachers.span_cache`) against a padded float32 ``2 * L * 4``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from raykd.bench import BenchOptionError
from raykd.bench.text_plan import MINILM
from raykd.bench.text_quality import ray_up, write_outputs
from raykd.bench.text_report import _model_name, machine, notes, speed_markdown, tokenize_share
from raykd.bench.text_speed_measures import (
    FULL_SPEED,
    MEASURES,
    QUICK_SPEED,
    Bench,
    SpeedPlan,
    _dump,
    build,
    raykd_student,
)
from raykd.data.bbc_speakers import build_bbc_speakers
from raykd.data.windows import make_windows
from raykd.models.hf_build import load_tokenizer
from raykd.teachers.span_cache import pack
from raykd.teachers.teacher import Teacher

Log = Callable[[str], None]


def measure_rounds(b: Bench, log: Log) -> dict[str, list[dict[str, float]]]:
    """Every measure once per round, order rotated; round 0 is the warm-up (dropped)."""
    names = list(MEASURES)
    got: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(b.plan.rounds + 1):
        for name in names[r % len(names):] + names[: r % len(names)]:
            before = os.getloadavg()[0]
            value = MEASURES[name](b)
            after = os.getloadavg()[0]
            log(f"round {r}{' (warm-up)' if r == 0 else ''}: {name} {value:.2f}/s "
                f"(load {before:.1f} -> {after:.1f})")
            if r > 0:
                got[name].append({"value": value, "load_before": before, "load_after": after})
    return got


def _stats(xs: list[dict[str, float]]) -> dict[str, Any]:
    v = [x["value"] for x in xs]
    return {"median": float(np.median(v)), "min": min(v), "max": max(v), "values": v}


def rows(got: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """The two ratio rows from the rounds."""
    out = []
    for side, unit, target in (("teacher", "logits/s", 0.95), ("student", "steps/s", 0.9)):
        r, p = _stats(got[f"raykd {side}"]), _stats(got[f"plain {side}"])
        loads = [(x["load_before"], x["load_after"])
                 for pair in zip(got[f"raykd {side}"], got[f"plain {side}"], strict=True)
                 for x in pair]
        out.append({"name": f"{side} {unit.split('/')[0]} per second", "unit": unit,
                    "raykd": r, "plain": p, "ratio": r["median"] / p["median"],
                    "target": target, "loads": loads})
    return out


def profile(b: Bench) -> dict[str, Any]:
    """Where raykd's time goes: the tokenizer's share in the student loop and the teacher."""
    t = Teacher(0, _dump(b.plan.teacher), (1, b.x.shape[2]), b.num_classes, threads=b.plan.threads,
                seed=1)
    teacher_share, teacher_top = tokenize_share(lambda: t.logits(b.x[: b.plan.teacher_texts]))
    student_share, student_top = tokenize_share(lambda: raykd_student(b))
    return {"teacher_tokenize_share": teacher_share, "student_tokenize_share": student_share,
            "teacher_top": teacher_top, "student_top": student_top}


def cache_bytes(plan: SpeedPlan, num_classes: int) -> list[dict[str, Any]]:
    """Bytes per window per teacher: classification dense float32; spans packed fp16."""
    rows = [{"data": f"bbc-news classification ({num_classes} classes)",
             "stored": "dense float32 (C * 4)", "bytes": float(num_classes * 4),
             "padded": float(num_classes * 4), "windows": None}]
    questions = build_bbc_speakers(seed=0).part("train")[: plan.span_questions]
    windows = make_windows(questions, load_tokenizer(MINILM), max_length=384, doc_stride=128)
    n, length = windows.x.shape[0], windows.x.shape[2]
    logits = np.random.default_rng(0).normal(size=(n, 2, length)).astype(np.float32)
    packed = pack(logits, windows.valid)
    stored = packed.values.nbytes + packed.row_offsets.nbytes + packed.context_start.nbytes
    rows.append({"data": f"bbc-speakers spans ({len(questions)} train questions, {n} windows "
                         f"of L = {length}, MiniLM tokenizer)",
                 "stored": "valid positions, fp16, + row index", "bytes": stored / n,
                 "padded": float(2 * length * 4), "windows": n,
                 "valid_mean": float(windows.valid.sum(1).mean())})
    return rows


def run_text_speed(out: Path, quick: bool = False, rounds: int | None = None, *,
                   results: Path | None = None, plan: SpeedPlan | None = None,
                   log: Log | None = None) -> dict[str, Any]:
    """Run the text speed bench; write ``text_speed.md`` and ``.json`` (see the docstring)."""
    if rounds is not None and (isinstance(rounds, bool) or rounds < 1):
        raise BenchOptionError(f"--rounds={rounds!r} is invalid; expected an integer >= 1")
    log = log or (lambda line: print(f"raykd bench text-speed: {line}", flush=True))
    plan = plan or (QUICK_SPEED if quick else FULL_SPEED)
    plan = replace(plan, rounds=rounds or plan.rounds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, stamp = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    with ray_up():
        b = build(plan)
        try:
            got = measure_rounds(b, log)
        finally:
            b.pool.shutdown()
        prof = profile(b)
    result: dict[str, Any] = {
        "quick": quick, "rounds": plan.rounds, "plan": asdict(plan), "started": stamp,
        "setup": _setup(b), "measures": got, "rows": rows(got), "profile": prof,
        "cache": cache_bytes(plan, b.num_classes),
    }
    result["notes"] = notes(result)
    result["wall_seconds"] = time.perf_counter() - start
    write_outputs(result, out, results, "text_speed", speed_markdown(result))
    log(f"wrote {out / 'text_speed.md'} in {result['wall_seconds'] / 60:.1f} min")
    return result


def _setup(b: Bench) -> dict[str, Any]:
    p = b.plan
    return {"machine": machine(), "threads": p.threads, "teacher": _model_name(p.teacher),
            "teacher_texts": p.teacher_texts,
            "teacher_batch": len(b.teacher_batches[0]["input_ids"]),
            "max_length": p.teacher["max_length"], "student": _model_name(p.student),
            "student_batch": p.student_batch, "student_steps": p.student_steps,
            "teachers": p.teachers, "actor_niceness": b.actor_nice,
            "driver_niceness": os.getpriority(os.PRIO_PROCESS, 0)}
