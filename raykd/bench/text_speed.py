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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raykd.bench import BenchOptionError
from raykd.bench.text_quality import MINILM, _config_bert, _minilm, ray_up, write_outputs
from raykd.bench.text_report import _model_name, machine, notes, speed_markdown, tokenize_share
from raykd.core.spec import MethodSpec, ModelSpec, TrainSpec
from raykd.data import load_dataset
from raykd.data.bbc_speakers import build_bbc_speakers
from raykd.data.text_bytes import decode_batch
from raykd.data.windows import make_windows
from raykd.models import build_model
from raykd.models.hf_build import load_tokenizer
from raykd.teachers import TeacherConfig, TeacherPool
from raykd.teachers.span_cache import pack
from raykd.teachers.teacher import Teacher
from raykd.train.config import StudentConfig
from raykd.train.loop import LoopData, run_student
from raykd.train.steps import epoch_batches, inference_batch

Log = Callable[[str], None]


@dataclass(frozen=True)
class SpeedPlan:
    """Models and sizes of the speed bench (see the module docstring)."""

    teacher: dict[str, Any]
    student: dict[str, Any]
    teacher_texts: int
    student_batch: int
    student_steps: int
    rounds: int
    threads: int = 2
    teachers: int = 3
    span_questions: int | None = None  # bbc-speakers train questions windowed (None: all)
    seed: int = 0


FULL_SPEED = SpeedPlan(teacher=_minilm(6, 64), student=_config_bert(128, 2, 2, 64),
                       teacher_texts=512, student_batch=32, student_steps=40, rounds=3)
QUICK_SPEED = SpeedPlan(teacher=_config_bert(32, 2, 2, 32), student=_config_bert(32, 1, 2, 32),
                        teacher_texts=64, student_batch=16, student_steps=4, rounds=1,
                        span_questions=40)


@dataclass
class Bench:
    """What the measures share: data, models, pre-tokenized batches, the pool."""

    plan: SpeedPlan
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    cached: np.ndarray
    pool: Any
    x_ref: Any
    plain_teacher: Any
    teacher_batches: list[dict[str, torch.Tensor]]
    student_batches: list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]
    student_model: dict[str, Any]
    actor_nice: int | None = None


def _dump(model: dict[str, Any]) -> dict[str, Any]:
    return ModelSpec.model_validate(model).model_dump()


def _texts(x: np.ndarray) -> list[str]:
    return [row[0] for row in decode_batch(x)]


def build(plan: SpeedPlan) -> Bench:
    """Load BBC News, start the teacher actor, build the plain models, tokenize beforehand."""
    import ray

    data = load_dataset("bbc-news", seed=0)
    n_student = plan.student_batch * plan.student_steps
    x = data.train.x[: max(plan.teacher_texts, n_student)]
    y = data.train.y[: len(x)]
    teacher = _dump(plan.teacher)
    pool = TeacherPool([TeacherConfig(model=teacher, seed=1)], input_shape=data.input_shape,
                       num_classes=data.num_classes, use_gpu=False)
    torch.manual_seed(1)
    plain_teacher = build_model(teacher, data.input_shape, data.num_classes).eval()
    batch = inference_batch(plain_teacher, 2048)
    tok, length = plain_teacher.tokenizer, plain_teacher.max_length
    texts = _texts(x[: plan.teacher_texts])
    teacher_batches = [dict(tok(texts[i:i + batch], truncation=True, max_length=length,
                                padding=True, return_tensors="pt"))
                       for i in range(0, len(texts), batch)]
    student = _dump(plan.student)
    s_len = student["max_length"]

    s_tok = load_tokenizer(student.get("tokenizer") or student["path"])  # the student's own
    rng = np.random.default_rng(plan.seed)
    cached = rng.normal(size=(plan.teachers, n_student, data.num_classes)).astype(np.float32)
    s_texts = _texts(x[:n_student])
    student_batches = []
    for epoch in range(2):  # the same batches as run_student's two epochs
        for idx in epoch_batches(n_student, batch_size=plan.student_batch, seed=plan.seed,
                                 epoch=epoch):
            enc = dict(s_tok([s_texts[i] for i in idx], truncation=True, max_length=s_len,
                           padding=True, return_tensors="pt"))
            student_batches.append((enc, torch.from_numpy(y[idx]),
                                    torch.from_numpy(cached[:, idx])))
    actor_nice = _nice_of(pool.infos()[0]["pid"])
    return Bench(plan=plan, x=x, y=y, num_classes=data.num_classes, cached=cached, pool=pool,
                 actor_nice=actor_nice,
                 x_ref=ray.put(np.ascontiguousarray(x[: plan.teacher_texts])),
                 plain_teacher=plain_teacher, teacher_batches=teacher_batches,
                 student_batches=student_batches, student_model=student)


def _nice_of(pid: int) -> int | None:
    """The niceness of process ``pid`` (None when it cannot be read, e.g. on another node)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, int(pid))
    except OSError:
        return None


def raykd_teacher(b: Bench) -> float:
    """Logits per second of the teacher actor over ``teacher_texts`` texts."""
    import ray

    start = time.perf_counter()
    got = ray.get(b.pool.actors[0].logits.remote(b.x_ref))
    seconds = time.perf_counter() - start
    assert got.shape == (b.plan.teacher_texts, b.num_classes)
    return b.plan.teacher_texts / seconds


@contextmanager
def niceness(value: int | None) -> Iterator[None]:
    """Run the block at the scheduling niceness ``value`` (None: unchanged), then restore it.

    Ray starts its workers at niceness 15, so on a busy machine a teacher actor gets less CPU
    than a loop in the driver at 0; the plain teacher loop runs at the actor's niceness.
    """
    old = os.getpriority(os.PRIO_PROCESS, 0)
    if value is None or value == old:
        yield
        return
    os.setpriority(os.PRIO_PROCESS, 0, value)
    try:
        yield
    finally:
        with suppress(PermissionError):  # lowering it back needs CAP_SYS_NICE
            os.setpriority(os.PRIO_PROCESS, 0, old)


def plain_teacher(b: Bench) -> float:
    """Logits per second of a ``no_grad`` loop on the pre-tokenized batches (the actor's
    niceness)."""
    torch.set_num_threads(b.plan.threads)
    hf = b.plain_teacher.hf
    with niceness(b.actor_nice), torch.no_grad():
        start = time.perf_counter()
        out = [hf(**batch).logits.float() for batch in b.teacher_batches]
        seconds = time.perf_counter() - start
    assert sum(len(o) for o in out) == b.plan.teacher_texts
    return b.plan.teacher_texts / seconds


def _student_config(b: Bench) -> Any:
    return StudentConfig(
        model=b.student_model, input_shape=(1, b.x.shape[2]), num_classes=b.num_classes,
        method=MethodSpec(method="kd", temperature=2.0, alpha=0.5),
        train=TrainSpec(epochs=2, batch_size=b.plan.student_batch, lr=5e-4, weight_decay=0.0,
                        seed=b.plan.seed),
        threads=b.plan.threads, label="bench-text-speed")


def raykd_student(b: Bench) -> float:
    """Steps per second of :func:`run_student`'s second epoch on cached logits."""
    n = b.plan.student_batch * b.plan.student_steps
    data = LoopData(x_train=b.x[:n], y_train=b.y[:n], x_val=b.x[:8], y_val=b.y[:8],
                    teacher_train=b.cached)
    history = run_student(_student_config(b), data, report=lambda m, s: None)
    return history[-1]["samples_per_s"] / b.plan.student_batch


def plain_student(b: Bench) -> float:
    """Steps per second of a plain Hugging Face KD loop (second epoch timed)."""
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(b.plan.threads)
    torch.manual_seed(b.plan.seed)
    config = build_model(b.student_model, (1, b.x.shape[2]), b.num_classes).hf.config
    model = AutoModelForSequenceClassification.from_config(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.0)
    t, alpha, half = 2.0, 0.5, len(b.student_batches) // 2
    start = 0.0
    for i, (enc, yb, tl) in enumerate(b.student_batches):
        if i == half:
            start = time.perf_counter()
        s = model(**enc).logits
        soft = F.softmax(tl.mean(0) / t, dim=-1)
        kl = F.kl_div(F.log_softmax(s / t, dim=-1), soft, reduction="batchmean")
        loss = alpha * t * t * kl + (1 - alpha) * F.cross_entropy(s, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (len(b.student_batches) - half) / (time.perf_counter() - start)


MEASURES: dict[str, Callable[[Bench], float]] = {
    "raykd teacher": raykd_teacher, "plain teacher": plain_teacher,
    "raykd student": raykd_student, "plain student": plain_student,
}


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
