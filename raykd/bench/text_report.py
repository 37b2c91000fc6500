"""Statistics and Markdown of the text benches (:mod:`raykd.bench.text_quality`,
:mod:`raykd.bench.text_speed`).

``spread(xs)``: mean and sample sd (ddof = 1; 0 for one value) of per-seed numbers.
``paired(a, b)``: the per-seed differences ``a[k] - b[k]`` over the seeds both hold, and
their mean and sd: the seed's shared noise (initialisation, batch order) cancels.
"""

from __future__ import annotations

import cProfile
import os
import platform
import pstats
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def spread(values: Sequence[float]) -> dict[str, Any]:
    """``{mean, sd, n, values}`` of per-seed values (sd with ddof = 1; 0 for fewer than two)."""
    xs = np.asarray(values, dtype=np.float64)
    sd = float(xs.std(ddof=1)) if len(xs) > 1 else 0.0
    return {"mean": float(xs.mean()) if len(xs) else float("nan"), "sd": sd, "n": len(xs),
            "values": [float(x) for x in xs]}


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """:func:`spread` of ``a[k] - b[k]`` over the seeds ``k`` in both."""
    seeds = sorted(set(a) & set(b))
    out = spread([a[k] - b[k] for k in seeds])
    return {**out, "seeds": seeds}


def pm(stat: Mapping[str, Any], scale: float = 100.0, sign: bool = False) -> str:
    """``mean ± sd`` in percent (points), e.g. ``91.2 ± 0.8``."""
    fmt = "+.1f" if sign else ".1f"
    return f"{stat['mean'] * scale:{fmt}} ± {stat['sd'] * scale:.1f}"


def _teacher_lines(result: Mapping[str, Any]) -> list[str]:
    t = result["teachers"]
    lines = ["| model | test accuracy | test macro-F1 |", "|---|---|---|"]
    for row, model, seed in zip(t["rows"], t["models"], t["seeds"], strict=True):
        name = _model_name(model)
        lines.append(f"| teacher {row['index'] + 1}: {name}, seed {seed} | "
                     f"{100 * row['test_accuracy']:.1f} | {100 * row['test_macro_f1']:.1f} |")
    ens = t["ensemble"]
    lines.append(f"| ensemble (mean logits) | {100 * ens['test_accuracy']:.1f} | "
                 f"{100 * ens['test_macro_f1']:.1f} |")
    return lines


def _model_name(model: Mapping[str, Any]) -> str:
    if model.get("path"):
        layers = model.get("num_hidden_layers")
        return f"MiniLM-L6{f', first {layers} layers' if layers and layers != 6 else ''}"
    c = model.get("config") or {}
    return f"{c.get('model_type')} {c.get('num_hidden_layers')}x{c.get('hidden_size')}"


def quality_markdown(result: Mapping[str, Any]) -> str:
    """``text_quality.md``: the set-up, the teachers, the student rows and paired differences."""
    plan, data, s = result["plan"], result["data"], result["summary"]
    n = result["seeds"]
    length = plan["student"].get("max_length")
    limit = f", train_limit {plan['train_limit']}" if plan["train_limit"] else ""
    quick = "**Quick run (tiny random models): a smoke check, not a result.** "
    lines = [
        "# Text quality: KD and WKD from fine-tuned transformers (BBC News)",
        "",
        f"BBC News, {data['num_classes']} classes; train {data['train']} / val {data['val']} / "
        f"test {data['test']} articles (split seed 0{limit}), "
        f"{length} tokens. Teachers fine-tuned once by raykd's teacher stage "
        f"({_train_words(plan['teacher_train'])}); student {_model_name(plan['student'])} from "
        f"a config, MiniLM tokenizer, {_train_words(plan['train'])}, best-validation epoch kept. "
        f"KD and WKD: T = {plan['temperature']:g}, alpha = {plan['alpha']:g}; WKD W = 0.75. "
        f"Test accuracy and macro-F1 in %, mean ± sd over {n} student seeds (seed k shared by "
        f"every row). {quick if result['quick'] else ''}"
        f"Wall time {result['wall_seconds'] / 60:.1f} min (teachers "
        f"{result['teachers']['seconds'] / 60:.1f} min){_load_words(result.get('load'))}.",
        "",
        *_teacher_lines(result),
        "",
        "| student | test accuracy | test macro-F1 |",
        "|---|---|---|",
    ]
    for name, row in s["rows"].items():
        lines.append(f"| {name} | {pm(row['test_accuracy'])} | {pm(row['test_macro_f1'])} |")
    lines += ["", "Paired differences (per seed, then mean ± sd), in points:", "",
              "| difference | test accuracy | test macro-F1 |", "|---|---|---|"]
    for name, d in s["differences"].items():
        lines.append(f"| {name} | {pm(d['test_accuracy'], sign=True)} | "
                     f"{pm(d['test_macro_f1'], sign=True)} |")
    lines += ["", f"Span extraction (bbc-speakers): {result['spans']}", ""]
    return "\n".join(lines)


SPAN_COLUMNS = (("test_exact", "EM"), ("test_f1", "F1"), ("test_HasAns_f1", "HasAns F1"),
                ("test_NoAns_f1", "NoAns acc"))
"""The span tables' columns: run keys (percent) and their headers."""


def _span_cells(test: Mapping[str, Any]) -> str:
    """``| EM | F1 | HasAns F1 | NoAns acc |`` cells of one model's SQuAD test scores."""
    return " | ".join(f"{test[k]:.1f}" if k in test else "-"
                      for k in ("exact", "f1", "HasAns_f1", "NoAns_f1"))


def _span_teacher_lines(result: Mapping[str, Any]) -> list[str]:
    t = result["teachers"]
    head = " | ".join(name for _, name in SPAN_COLUMNS)
    lines = [f"| model | {head} |", "|---|---|---|---|---|"]
    for row, model, seed in zip(t["rows"], t["models"], t["seeds"], strict=True):
        lines.append(f"| teacher {row['index'] + 1}: {_model_name(model)}, seed {seed} | "
                     f"{_span_cells(row['span']['test'])} |")
    lines.append(f"| ensemble (mean logits) | {_span_cells(t['ensemble']['span']['test'])} |")
    return lines


def span_markdown(result: Mapping[str, Any]) -> str:
    """``span_quality.md``: the set-up, teachers, student rows and paired differences (SQuAD
    v2.0 EM/F1 on test, percent)."""
    plan, data, s = result["plan"], result["data"], result["summary"]
    w = plan["windows"]
    limit = f" (train_limit {plan['train_limit']} questions)" if plan["train_limit"] else ""
    quick = "**Quick run (tiny random models): a smoke check, not a result.** "
    head = " | ".join(name for _, name in SPAN_COLUMNS)
    lines = [
        "# Span quality: KD and WKD on bbc-speakers (SQuAD v2.0 EM/F1)",
        "",
        f"bbc-speakers (quote/speaker questions from the BBC articles, a third unanswerable; split "
        f"by article, seed 0{limit}): windows of {w['max_length']} tokens, doc_stride "
        f"{w['doc_stride']}, questions cut to {w['max_query_length']} tokens, MiniLM's tokenizer "
        f"for every model; train {data['train']} / val {data['val']} / test {data['test']} "
        f"windows. Teachers fine-tuned once by raykd's teacher stage "
        f"({_train_words(plan['teacher_train'])}); student {_model_name(plan['student'])} from "
        f"a config, {_train_words(plan['train'])}, the epoch of the best validation F1 kept. "
        f"KD and WKD: T = {plan['temperature']:g}, alpha = {plan['alpha']:g}; WKD W = 0.75. "
        f"SQuAD v2.0 scores over the test questions, no-answer threshold chosen on validation, "
        f"in %; students: mean ± sd over {result['seeds']} seeds (seed k shared by every row). "
        f"{quick if result['quick'] else ''}"
        f"Wall time {result['wall_seconds'] / 60:.1f} min (teachers "
        f"{result['teachers']['seconds'] / 60:.1f} min){_load_words(result.get('load'))}.",
        "",
        *_span_teacher_lines(result),
        "",
        f"| student | {head} |",
        "|---|---|---|---|---|",
    ]
    for name, row in s["rows"].items():
        cells = " | ".join(pm(row[k], scale=1.0) for k, _ in SPAN_COLUMNS)
        lines.append(f"| {name} | {cells} |")
    lines += ["", "Paired differences (per seed, then mean ± sd), in points:", "",
              f"| difference | {head} |", "|---|---|---|---|---|"]
    for name, d in s["differences"].items():
        cells = " | ".join(pm(d[k], scale=1.0, sign=True) for k, _ in SPAN_COLUMNS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def _load_words(load: Mapping[str, Any] | None) -> str:
    if not load:
        return ""
    words = f" on {load['cpus']} CPUs, 1-minute load average {load['start']:.1f} at the start "
    words += f"and {load['end']:.1f} at the end"
    return words + (f" ({load['note']})" if load.get("note") else "")


def _train_words(train: Mapping[str, Any]) -> str:
    sched = train.get("schedule", "constant")
    warm = f", warm-up {train['warmup_fraction']:g}" if sched == "linear" else ""
    return (f"{train['epochs']} epoch{'s' if train['epochs'] != 1 else ''}, batch "
            f"{train['batch_size']}, AdamW lr {train['lr']:g} {sched}{warm}")


def speed_markdown(result: Mapping[str, Any]) -> str:
    """``text_speed.md``: each measured pair, its medians with min-max, the ratio and loads."""
    s = result["setup"]
    lines = [
        "# Text speed: raykd against plain PyTorch / Hugging Face loops",
        "",
        f"One run, {result['rounds']} interleaved rounds after a warm-up round (order rotated "
        f"each round); medians with [min-max] over the rounds; ratio = raykd median / plain "
        f"median. Machine: {s['machine']}; torch threads {s['threads']}; the teacher actor "
        f"runs at Ray's worker niceness {s.get('actor_niceness')} and so does the plain "
        f"teacher loop; both student loops run in the driver at niceness "
        f"{s.get('driver_niceness')}. "
        f"{'**Quick run (tiny models).** ' if result['quick'] else ''}",
        "",
        f"- teacher: {s['teacher']}, {s['teacher_texts']} texts per measure, batches of "
        f"{s['teacher_batch']}, {s['max_length']} tokens;",
        f"- student: {s['student']}, batch {s['student_batch']}, {s['student_steps']} timed "
        f"steps per measure, KD (T = 2, alpha = 0.5) on cached logits of {s['teachers']} "
        f"teachers.",
        "",
        "| measure | raykd | plain | ratio | target | load 1-min before → after |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        r, p = row["raykd"], row["plain"]
        ok = "met" if row["ratio"] >= row["target"] else "**missed**"
        lines.append(
            f"| {row['name']} ({row['unit']}) | {_med(r)} | {_med(p)} | {row['ratio']:.2f}x | "
            f">= {row['target']:.2f}x ({ok}) | {_loads(row['loads'])} |")
    lines += ["", "Cache bytes per window (one text) per teacher:", "",
              "| data | stored | bytes | padded float32 | saving |", "|---|---|---|---|---|"]
    for c in result["cache"]:
        lines.append(f"| {c['data']} | {c['stored']} | {c['bytes']:.0f} | {c['padded']:.0f} | "
                     f"{c['padded'] / c['bytes']:.1f}x |")
    if result.get("notes"):
        lines += ["", *result["notes"]]
    return "\n".join(lines) + "\n"


def _med(stat: Mapping[str, Any]) -> str:
    return f"{stat['median']:.1f} [{stat['min']:.1f}-{stat['max']:.1f}]"


def _loads(loads: Sequence[Sequence[float]]) -> str:
    return "; ".join(f"{a:.1f} → {b:.1f}" for a, b in loads)


def tokenize_share(fn: Callable[[], Any]) -> tuple[float, list[str]]:
    """cProfile ``fn``: the share of its time inside ``TextClassifier.tokenize``; top lines."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof)
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    tok = sum(v[3] for k, v in stats.stats.items()  # type: ignore[attr-defined]
              if k[2] == "tokenize" and k[0].endswith("hf.py"))
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])  # type: ignore[attr-defined]
    lines = [f"{v[3]:.2f} s cumulative: {Path(k[0]).name}:{k[1]} {k[2]}" for k, v in top[:12]]
    return tok / total, lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, CPU only"


def notes(result: dict[str, Any]) -> list[str]:
    """Where the time goes, in words, from the profile."""
    prof = result["profile"]
    return [
        f"Profile (cProfile, one pass each): tokenization is "
        f"{100 * prof['teacher_tokenize_share']:.0f}% of a raykd teacher's logits call and "
        f"{100 * prof['student_tokenize_share']:.0f}% of raykd's student loop (decode bytes, "
        "tokenize, pad; a fresh model's first pass: a text model memoizes each row's tokens, "
        "so later epochs only hash and pad). The plain loops tokenize once, beforehand.",
    ]
