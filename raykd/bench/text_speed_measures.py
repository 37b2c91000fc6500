"""The four measures of ``raykd bench text-speed`` (:mod:`raykd.bench.text_speed`) and what
they share: :class:`SpeedPlan` (models and sizes, the full run's and ``--quick``'s) and
:class:`Bench`, built once by :func:`build` (BBC News, the raykd teacher actor, the plain
models, the batches tokenized beforehand). :data:`MEASURES` maps each measure's name to
the function that returns its rate: the raykd teacher actor's and a plain ``no_grad``
loop's logits per second, raykd's student loop's and a plain Hugging Face loop's steps per
second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raykd.bench.text_plan import _config_bert, _minilm
from raykd.core.spec import MethodSpec, ModelSpec, TrainSpec
from raykd.data import load_dataset
from raykd.data.text_bytes import decode_batch
from raykd.models import build_model
from raykd.models.hf_build import load_tokenizer
from raykd.teachers import TeacherConfig, TeacherPool
from raykd.train.config import StudentConfig
from raykd.train.loop import LoopData, run_student
from raykd.train.steps import epoch_batches, inference_batch


@dataclass(frozen=True)
class SpeedPlan:
    """Models and sizes of the speed bench (see :mod:`raykd.bench.text_speed`)."""

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
