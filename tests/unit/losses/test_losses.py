"""Tests for raykd.losses: properties, golden values from a float64 reference, bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F
from torch.testing import assert_close

from raykd.losses import (
    METHODS,
    annealing_loss,
    annealing_targets,
    check_finite_logits,
    combine_teachers,
    distillation_loss,
    kd_loss,
    method_loss,
    wkd_combine,
    wkd_weights,
)
from tests.helpers.imports import assert_imports_none_of

# --- an independent float64 reference, written plainly with loops -------------------


def ref_log_softmax(row, valid, temperature=1.0):
    """log softmax(row / T) over valid positions; None at invalid ones."""
    scaled = [row[c] / temperature for c in range(len(row)) if valid[c]]
    top = max(scaled)
    lse = top + math.log(sum(math.exp(v - top) for v in scaled))
    return [row[c] / temperature - lse if valid[c] else None for c in range(len(row))]


def ref_wkd_weights(z, y, w, valid):
    """z (M, B, H, C), y (B, H), valid (B, H, C) -> (M, B, H) weights, ROaD Algorithm 2."""
    m_count, b_count, h_count, c_count = z.shape
    out = np.ones((m_count, b_count, h_count))
    for b in range(b_count):
        for h in range(h_count):
            correct = []
            for m in range(m_count):
                best = None
                for c in range(c_count):
                    if valid[b, h, c] and (best is None or z[m, b, h, c] > z[m, b, h, best]):
                        best = c
                correct.append(best == y[b, h])
            n_right = sum(correct)
            if n_right == 0:
                continue
            w_hat = (m_count - (m_count - n_right) * w) / n_right
            for m in range(m_count):
                out[m, b, h] = w_hat if correct[m] else w
    return out


def ref_combine(z, weights):
    """z (M, B, H, C), weights (M, B, H) -> (1/M) sum_m w_m z_m, (B, H, C)."""
    m_count, b_count, h_count, c_count = z.shape
    out = np.zeros((b_count, h_count, c_count))
    for b in range(b_count):
        for h in range(h_count):
            for c in range(c_count):
                total = 0.0
                for m in range(m_count):
                    total += weights[m, b, h] * z[m, b, h, c]
                out[b, h, c] = total / m_count
    return out


def ref_reduce(per_bh, reduction):
    per_example = [sum(row) / len(row) for row in per_bh]
    if reduction == "none":
        return np.array(per_example)
    total = sum(per_example)
    return np.array(total / len(per_example) if reduction == "mean" else total)


def ref_kd_loss(s, z, y, temperature, alpha, valid, reduction="mean"):
    """s, z (B, H, C), y (B, H), valid (B, H, C)."""
    per_bh = []
    for b in range(s.shape[0]):
        row = []
        for h in range(s.shape[1]):
            lpt = ref_log_softmax(z[b, h], valid[b, h], temperature)
            lps = ref_log_softmax(s[b, h], valid[b, h], temperature)
            kl = sum(
                math.exp(lpt[c]) * (lpt[c] - lps[c]) for c in range(len(lpt)) if valid[b, h, c]
            )
            ce = -ref_log_softmax(s[b, h], valid[b, h])[y[b, h]]
            row.append(alpha * temperature**2 * kl + (1 - alpha) * ce)
        per_bh.append(row)
    return ref_reduce(per_bh, reduction)


def ref_annealing_loss(s, z, y, progress, temperature, valid, reduction="mean"):
    per_bh = []
    for b in range(s.shape[0]):
        row = []
        for h in range(s.shape[1]):
            lpt = ref_log_softmax(z[b, h], valid[b, h], temperature)
            lps = ref_log_softmax(s[b, h], valid[b, h])
            loss = 0.0
            for c in range(s.shape[2]):
                if valid[b, h, c]:
                    target = progress * (c == y[b, h]) + (1 - progress) * math.exp(lpt[c])
                    loss -= target * lps[c]
            row.append(loss)
        per_bh.append(row)
    return ref_reduce(per_bh, reduction)


# --- helpers ------------------------------------------------------------------------


def make_batch(seed, *, m=3, b=5, h=None, c=7, masked=False, dtype=torch.float64):
    """Random per-teacher logits, student logits, labels and (optionally) a mask.

    Labels always sit at valid positions. Returns torch tensors.
    """
    rng = np.random.default_rng(seed)
    heads = () if h is None else (h,)
    z = rng.normal(size=(m, b, *heads, c)) * 2.0
    s = rng.normal(size=(b, *heads, c)) * 2.0
    y = rng.integers(0, c, size=(b, *heads))
    valid = rng.random((b, *heads, c)) < 0.7
    if not masked:
        valid[...] = True
    np.put_along_axis(valid, y[..., None], True, axis=-1)
    mask = torch.tensor(valid) if masked else None
    z_t, s_t = (torch.tensor(a, dtype=dtype) for a in (z, s))
    return z_t, s_t, torch.tensor(y, dtype=torch.int64), mask


def to_bhc(logits):
    """numpy array with an explicit head dim: (B, C) -> (B, 1, C); (B, H, C) unchanged."""
    a = logits.detach().numpy()
    return a if a.ndim == 3 else a[:, None]


def to_bh(labels):
    """numpy array with an explicit head dim: (B,) -> (B, 1); (B, H) unchanged."""
    a = labels.numpy()
    return a if a.ndim == 2 else a[:, None]


def to_bhc_teachers(z):
    """(M, B, C) -> (M, B, 1, C); (M, B, H, C) unchanged."""
    a = z.detach().numpy()
    return a if a.ndim == 4 else a[:, :, None]


def ref_valid(mask, s):
    return np.ones(to_bhc(s).shape, dtype=bool) if mask is None else to_bhc(mask)


# --- properties: ensembling and WKD weights -----------------------------------------


def test_combine_without_weights_is_plain_average():
    z, _, _, _ = make_batch(0, h=2, dtype=torch.float32)
    assert_close(combine_teachers(z), z.mean(dim=0))
    assert_close(combine_teachers(z, torch.ones(z.shape[:-1])), z.mean(dim=0))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 5), h=st.sampled_from([None, 2]))
def test_wkd_with_w_1_is_plain_average(seed, m, h):
    z, _, y, mask = make_batch(seed, m=m, h=h, c=3, masked=True, dtype=torch.float32)
    assert_close(wkd_weights(z, y, incorrect_weight=1.0, mask=mask), torch.ones(z.shape[:-1]))
    assert_close(wkd_combine(z, y, incorrect_weight=1.0, mask=mask), z.mean(dim=0))


def test_all_teachers_right_is_plain_average():
    z, _, y, _ = make_batch(1, m=4, b=6, dtype=torch.float32)
    z = z + 20.0 * F.one_hot(y, z.shape[-1])  # every teacher's argmax is the label
    assert_close(wkd_weights(z, y, incorrect_weight=0.75), torch.ones(4, 6))
    assert_close(wkd_combine(z, y, incorrect_weight=0.75), z.mean(dim=0))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 5),
    b=st.integers(1, 6),
    c=st.integers(2, 5),
    h=st.sampled_from([None, 1, 2]),
    w=st.floats(min_value=0.01, max_value=1.0),
    masked=st.booleans(),
)
def test_wkd_weights_sum_to_m_and_follow_the_rule(seed, m, b, c, h, w, masked):
    z, _, y, mask = make_batch(seed, m=m, b=b, h=h, c=c, masked=masked)
    weights = wkd_weights(z, y, incorrect_weight=w, mask=mask)
    assert weights.shape == z.shape[:-1]
    assert weights.dtype == z.dtype
    assert_close(weights.sum(dim=0), torch.full(z.shape[1:-1], float(m), dtype=z.dtype))
    expected = ref_wkd_weights(to_bhc_teachers(z), to_bh(y), w, ref_valid(mask, z[0]))
    assert_close(weights.reshape(expected.shape), torch.tensor(expected))


@pytest.mark.parametrize(
    ("n_wrong", "expected"),
    [
        (0, [1.0, 1.0, 1.0]),
        (1, [0.75, 1.125, 1.125]),
        (2, [0.75, 0.75, 1.5]),
        (3, [1.0, 1.0, 1.0]),  # all wrong: plain average
    ],
)
def test_method_md_examples(n_wrong, expected):
    label = 2
    z = torch.zeros(3, 1, 4)
    for m in range(3):
        z[m, 0, 0 if m < n_wrong else label] = 5.0
    y = torch.tensor([label])
    weights = wkd_weights(z, y, incorrect_weight=0.75)
    assert_close(weights[:, 0], torch.tensor(expected))
    assert_close(wkd_combine(z, y, incorrect_weight=0.75), (weights[..., None] * z).mean(0))


def test_correctness_is_decided_per_head():
    # Heads: 0 = start (gold 1), 1 = end (gold 2). Teacher 0 is right on the start head
    # and wrong on the end head; teachers 1 and 2 are right on both.
    z = torch.zeros(3, 1, 2, 4)
    z[:, 0, 0, 1] = 5.0
    z[1:, 0, 1, 2] = 5.0
    z[0, 0, 1, 0] = 5.0
    y = torch.tensor([[1, 2]])
    weights = wkd_weights(z, y, incorrect_weight=0.75)
    assert_close(weights[:, 0, 0], torch.tensor([1.0, 1.0, 1.0]))
    assert_close(weights[:, 0, 1], torch.tensor([0.75, 1.125, 1.125]))


def test_wkd_argmax_ignores_masked_positions():
    # Unmasked, teacher 0's argmax would be position 3 (wrong); masked, it is the label 1.
    z = torch.tensor([[[0.0, 2.0, 0.0, 9.0]], [[0.0, 0.0, 3.0, 0.0]]])
    y = torch.tensor([1])
    mask = torch.tensor([[True, True, True, False]])
    assert_close(wkd_weights(z, y, incorrect_weight=0.5, mask=mask)[:, 0], torch.tensor([1.5, 0.5]))
    assert_close(wkd_weights(z, y, incorrect_weight=0.5)[:, 0], torch.tensor([1.0, 1.0]))


# --- properties: KD and annealing losses --------------------------------------------


@pytest.mark.parametrize("h", [None, 3])
def test_alpha_0_is_cross_entropy(h):
    z, s, y, _ = make_batch(2, h=h, dtype=torch.float32)
    expected = F.cross_entropy(s if h is None else s.movedim(-1, 1), y)
    loss = kd_loss(s, z.mean(0), y, temperature=3.0, alpha=0.0)
    if h is None:  # bit for bit on (B, C)
        assert torch.equal(loss, expected)
        assert torch.equal(distillation_loss("none", s, None, y), expected)
    assert_close(loss, expected)
    sums = kd_loss(s, z.mean(0), y, temperature=3.0, alpha=0.0, reduction="sum")
    assert_close(sums, expected * s.shape[0])


def test_alpha_0_ignores_an_extreme_teacher():
    _, s, y, _ = make_batch(3, dtype=torch.float32)
    extreme = torch.full_like(s, -3e38)
    extreme[:, 0] = 3e38
    loss = kd_loss(s, extreme, y, temperature=0.01, alpha=0.0)
    assert_close(loss, F.cross_entropy(s, y))


@pytest.mark.parametrize(("h", "masked"), [(None, False), (2, True)])
def test_kl_of_identical_distributions_is_zero(h, masked):
    _, s, y, mask = make_batch(4, h=h, masked=masked, dtype=torch.float32)
    for temperature in (0.5, 1.0, 4.0):
        loss = kd_loss(s, s.clone(), y, temperature=temperature, alpha=1.0, mask=mask)
        assert_close(loss, torch.tensor(0.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_soft_term_is_t_squared_times_kl(temperature):
    z, s, y, _ = make_batch(5, dtype=torch.float32)
    teacher = z.mean(0)
    kl = F.kl_div(
        F.log_softmax(s / temperature, -1),
        F.log_softmax(teacher / temperature, -1),
        reduction="batchmean",
        log_target=True,
    )
    soft = kd_loss(s, teacher, y, temperature=temperature, alpha=1.0)
    assert_close(soft, temperature**2 * kl)
    mixed = kd_loss(s, teacher, y, temperature=temperature, alpha=0.3)
    assert_close(mixed, 0.3 * temperature**2 * kl + 0.7 * F.cross_entropy(s, y))


def test_soft_gradient_scale_is_roughly_independent_of_large_t():
    z, s, y, _ = make_batch(6, dtype=torch.float32)
    norms = []
    for temperature in (50.0, 100.0):
        student = s.clone().requires_grad_()
        kd_loss(student, z.mean(0), y, temperature=temperature, alpha=1.0).backward()
        norms.append(student.grad.norm())
    assert_close(norms[0], norms[1], rtol=0.05, atol=0)


@pytest.mark.parametrize("h", [None, 2])
def test_annealing_endpoints(h):
    z, s, y, _ = make_batch(7, h=h, dtype=torch.float32)
    teacher = z.mean(0)
    start = annealing_targets(teacher, y, progress=0.0, temperature=2.0)
    assert_close(start, torch.softmax(teacher / 2.0, dim=-1))
    end = annealing_targets(teacher, y, progress=1.0, temperature=2.0)
    assert torch.equal(end, F.one_hot(y, teacher.shape[-1]).float())
    ce = F.cross_entropy(s if h is None else s.movedim(-1, 1), y)
    assert_close(annealing_loss(s, teacher, y, progress=1.0), ce)


def test_annealing_targets_are_zero_at_masked_positions_and_sum_to_one():
    z, _, y, mask = make_batch(8, h=2, masked=True, dtype=torch.float32)
    targets = annealing_targets(z.mean(0), y, progress=0.4, mask=mask)
    assert torch.all(targets[~mask] == 0)
    assert_close(targets.sum(-1), torch.ones(y.shape))


@pytest.mark.parametrize("method", METHODS)
def test_masked_positions_never_affect_the_result(method):
    z, s, y, mask = make_batch(9, m=3, b=6, h=2, c=8, masked=True, dtype=torch.float32)
    kwargs = dict(temperature=2.0, alpha=0.6, incorrect_weight=0.75, progress=0.3, mask=mask)
    student = s.clone().requires_grad_()
    loss = distillation_loss(method, student, z, y, **kwargs)
    loss.backward()
    assert torch.all(student.grad[~mask.expand_as(s)] == 0)

    generator = torch.Generator().manual_seed(0)
    z2, s2 = z.clone(), s.clone()
    z2[:, ~mask] = 100.0 + torch.randn(z2[:, ~mask].shape, generator=generator)
    z2[0, ~mask] = float("nan")
    z2[1, ~mask] = float("inf")
    s2[~mask] = 50.0 * torch.randn(s2[~mask].shape, generator=generator)
    changed = distillation_loss(method, s2, z2, y, **kwargs)
    assert torch.isfinite(changed)
    assert_close(changed, loss.detach())


def test_reductions():
    z, s, y, mask = make_batch(10, b=4, h=2, masked=True, dtype=torch.float32)
    per_example = kd_loss(s, z.mean(0), y, temperature=2.0, alpha=0.5, mask=mask, reduction="none")
    assert per_example.shape == (4,)
    total = kd_loss(s, z.mean(0), y, temperature=2.0, alpha=0.5, mask=mask, reduction="sum")
    mean = kd_loss(s, z.mean(0), y, temperature=2.0, alpha=0.5, mask=mask)
    assert_close(total, per_example.sum())
    assert_close(mean, per_example.mean())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    z, s, y, mask = make_batch(11, h=2, masked=True, dtype=torch.float32)
    z, s = z.to(dtype), s.to(dtype)
    for method in METHODS:
        kwargs = dict(temperature=2.0, alpha=0.5, incorrect_weight=0.75, progress=0.5, mask=mask)
        loss = distillation_loss(method, s, z, y, **kwargs)
        assert loss.dtype == torch.float32
        expected = distillation_loss(method, s.float(), z.float(), y, **kwargs)
        assert_close(loss, expected, rtol=1e-2, atol=1e-2)
    assert wkd_weights(z, y, incorrect_weight=0.75, mask=mask).dtype == dtype
    assert combine_teachers(z).dtype == dtype


def test_distillation_loss_dispatch():
    z, s, y, mask = make_batch(12, h=2, masked=True, dtype=torch.float32)
    kw = dict(temperature=2.0, mask=mask)
    assert_close(
        distillation_loss("none", s, None, y, mask=mask),
        kd_loss(s, z.mean(0), y, temperature=1.0, alpha=0.0, mask=mask),
    )
    assert_close(
        distillation_loss("kd", s, z, y, alpha=0.4, **kw),
        kd_loss(s, combine_teachers(z), y, alpha=0.4, **kw),
    )
    assert_close(
        distillation_loss("wkd", s, z, y, alpha=0.4, incorrect_weight=0.6, **kw),
        kd_loss(s, wkd_combine(z, y, incorrect_weight=0.6, mask=mask), y, alpha=0.4, **kw),
    )
    assert_close(
        distillation_loss("annealing", s, z, y, progress=0.25, **kw),
        annealing_loss(s, combine_teachers(z), y, progress=0.25, **kw),
    )


# --- golden values against the float64 reference -----------------------------------


@pytest.mark.parametrize("seed", [20, 21, 22])
@pytest.mark.parametrize(("h", "masked"), [(None, False), (None, True), (3, True)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kd_loss_matches_reference(seed, h, masked, reduction):
    z, s, y, mask = make_batch(seed, h=h, masked=masked)
    temperature, alpha = 2.5, 0.7
    teacher = wkd_combine(z, y, incorrect_weight=0.75, mask=mask)
    valid = ref_valid(mask, s)
    ref_weights = ref_wkd_weights(to_bhc_teachers(z), to_bh(y), 0.75, valid)
    ref_teacher = ref_combine(to_bhc_teachers(z), ref_weights)
    assert_close(teacher.reshape(ref_teacher.shape), torch.tensor(ref_teacher))
    loss = kd_loss(
        s, teacher, y, temperature=temperature, alpha=alpha, mask=mask, reduction=reduction
    )
    expected = ref_kd_loss(to_bhc(s), ref_teacher, to_bh(y), temperature, alpha, valid, reduction)
    assert_close(loss, torch.tensor(expected))
    loss32 = kd_loss(
        s.float(),
        teacher.float(),
        y,
        temperature=temperature,
        alpha=alpha,
        mask=mask,
        reduction=reduction,
    )
    assert_close(loss32, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("seed", [30, 31])
@pytest.mark.parametrize(("h", "masked"), [(None, False), (2, True)])
@pytest.mark.parametrize("progress", [0.0, 0.35, 1.0])
def test_annealing_loss_matches_reference(seed, h, masked, progress):
    z, s, y, mask = make_batch(seed, h=h, masked=masked)
    teacher = combine_teachers(z)
    loss = annealing_loss(s, teacher, y, progress=progress, temperature=1.5, mask=mask)
    expected = ref_annealing_loss(
        to_bhc(s), to_bhc(teacher), to_bh(y), progress, 1.5, ref_valid(mask, s)
    )
    assert_close(loss, torch.tensor(expected))


# --- bad input ----------------------------------------------------------------------


def _bad_cases():
    z, s, y, mask = make_batch(40, b=4, c=5, dtype=torch.float32)
    nan_teacher = z.clone()
    nan_teacher[1, 2, 3] = float("nan")
    span_z, span_s, span_y, span_mask = make_batch(41, b=4, h=2, c=5, masked=True)
    label_masked = span_mask.clone()
    label_masked[0, 0, span_y[0, 0]] = False
    return {
        "nan teacher (kd)": (
            lambda: kd_loss(s, nan_teacher.mean(0), y, temperature=1.0, alpha=0.5),
            r"teacher logits contain NaN/inf at 1 positions",
        ),
        "nan teacher (wkd)": (
            lambda: wkd_weights(nan_teacher, y, incorrect_weight=0.75),
            r"teacher logits contain NaN/inf at 1 positions",
        ),
        "inf teacher (check)": (
            lambda: check_finite_logits(torch.tensor([1.0, float("inf"), -float("inf")])),
            r"teacher logits contain NaN/inf at 2 positions",
        ),
        "labels too large": (
            lambda: kd_loss(s, z.mean(0), y + 5, temperature=1.0, alpha=0.5),
            r"labels must be class indices in \[0, 5\)",
        ),
        "labels negative": (
            lambda: distillation_loss("none", s, None, y - 10),
            r"labels must be class indices in \[0, 5\)",
        ),
        "labels float": (
            lambda: kd_loss(s, z.mean(0), y.float(), temperature=1.0, alpha=0.5),
            r"labels must be an integer tensor",
        ),
        "labels at masked position": (
            lambda: distillation_loss("kd", span_s, span_z, span_y, mask=label_masked),
            r"labels point at 1 masked-out positions",
        ),
        "W = 0": (
            lambda: wkd_weights(z, y, incorrect_weight=0.0),
            r"incorrect_weight must be in \(0, 1\], got 0.0",
        ),
        "W = 1.5": (
            lambda: distillation_loss("wkd", s, z, y, incorrect_weight=1.5),
            r"incorrect_weight must be in \(0, 1\], got 1.5",
        ),
        "T = 0": (
            lambda: kd_loss(s, z.mean(0), y, temperature=0.0, alpha=0.5),
            r"temperature must be a finite number > 0, got 0.0",
        ),
        "alpha = 1.2": (
            lambda: kd_loss(s, z.mean(0), y, temperature=1.0, alpha=1.2),
            r"alpha must be in \[0, 1\], got 1.2",
        ),
        "progress = -0.1": (
            lambda: annealing_loss(s, z.mean(0), y, progress=-0.1),
            r"progress must be in \[0, 1\], got -0.1",
        ),
        "reduction": (
            lambda: kd_loss(s, z.mean(0), y, temperature=1.0, alpha=0.5, reduction="avg"),
            r"reduction must be one of .*got 'avg'",
        ),
        "student/teacher shapes": (
            lambda: kd_loss(s, z.mean(0)[:, :4], y, temperature=1.0, alpha=0.5),
            r"student_logits shape \(4, 5\) and teacher_logits shape \(4, 4\)",
        ),
        "per-teacher shape": (
            lambda: distillation_loss("kd", s, z[:, :3], y),
            r"student_logits shape \(4, 5\) and teacher_logits shape \(3, 5\)",
        ),
        "labels shape": (
            lambda: wkd_weights(z, y[:3], incorrect_weight=0.5),
            r"labels shape \(3,\) does not fit teacher_logits shape \(3, 4, 5\)",
        ),
        "mask shape": (
            lambda: kd_loss(s, z.mean(0), y, temperature=1.0, alpha=0.5, mask=span_mask),
            r"mask shape \(4, 2, 5\) does not fit student_logits shape \(4, 5\)",
        ),
        "mask not bool": (
            lambda: annealing_targets(s, y, progress=0.5, mask=torch.ones(4, 5)),
            r"mask must be a bool tensor",
        ),
        "weights shape": (
            lambda: combine_teachers(z, torch.ones(3, 5)),
            r"weights shape \(3, 5\) does not fit teacher_logits shape \(3, 4, 5\)",
        ),
        "teacher rank": (
            lambda: combine_teachers(z[0]),
            r"teacher_logits must have shape \(M, B, C\) or \(M, B, H, C\).*\(4, 5\)",
        ),
        "missing teachers": (
            lambda: distillation_loss("kd", s, None, y),
            r"method 'kd' needs teacher_logits_per_teacher",
        ),
        "unknown method": (
            lambda: distillation_loss("distill", s, z, y),
            r"method must be one of \('none', 'kd', 'wkd', 'annealing'\), got 'distill'",
        ),
    }


_BAD = _bad_cases()


@pytest.mark.parametrize("name", sorted(_BAD))
def test_bad_input_raises_a_value_error_that_names_it(name):
    call, pattern = _BAD[name]
    with pytest.raises(ValueError, match=pattern):
        call()


# --- import hygiene -----------------------------------------------------------------


def test_import_pulls_in_neither_ray_nor_fastapi():
    assert_imports_none_of(["raykd.losses"], ("ray", "fastapi"))


# --- method_loss: the training step's loss, resolved once ----------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_method_loss_equals_distillation_loss_exactly(method: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(16, 7, generator=gen, dtype=dtype, requires_grad=True)
    z = 3 * torch.randn(3, 16, 7, generator=gen, dtype=dtype)
    y = torch.randint(0, 7, (16,), generator=gen)
    params = {"temperature": 2.5, "alpha": 0.7, "incorrect_weight": 0.6}
    fast = method_loss(method, **params)(s, z, y, 0.3)
    checked = distillation_loss(method, s, z, y, progress=0.3, **params)
    assert_close(fast, checked, rtol=0, atol=0)
    (g_fast,) = torch.autograd.grad(fast, s)
    (g_checked,) = torch.autograd.grad(checked, s)
    assert_close(g_fast, g_checked, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("kld", {}, r"method must be one of \('none', 'kd', 'wkd', 'annealing'\), got 'kld'"),
        ("kd", {"temperature": 0.0}, r"temperature must be a finite number > 0, got 0.0"),
        ("kd", {"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ("wkd", {"incorrect_weight": 0.0}, r"incorrect_weight must be in \(0, 1\], got 0.0"),
        ("annealing", {"temperature": float("nan")}, r"temperature must be a finite number"),
    ],
)
def test_method_loss_checks_its_hyperparameters_once_up_front(
    method: str, params: dict, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        method_loss(method, **params)


def test_method_loss_without_teacher_logits_names_the_method() -> None:
    loss = method_loss("kd", temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match=r"method 'kd' needs teacher logits"):
        loss(torch.randn(2, 3), None, torch.tensor([0, 1]), 0.0)


# --- per-teacher weights: accuracy_weights and teacher_weights -----------------------


def ref_accuracy_weights(acc, c, clip=1e-3):
    """The log-odds weights written out: r = max(0, log((C-1) a / (1 - a))), q = M r / sum r."""
    r = []
    for a in acc:
        a = min(a, 1.0 - clip)
        r.append(max(0.0, math.log((c - 1) * a / (1.0 - a))) if a > 0 else 0.0)
    total = sum(r)
    return [1.0] * len(acc) if total == 0 else [len(acc) * v / total for v in r]


def ref_prior_wkd_weights(z, y, w, q):
    """z (M, B, C), y (B,), q (M,) -> (M, B): the rule of wkd_weights with teacher weights."""
    m_count, b_count, _ = z.shape
    out = np.zeros((m_count, b_count))
    for b in range(b_count):
        correct = [int(np.argmax(z[m, b])) == int(y[b]) for m in range(m_count)]
        right = sum(q[m] for m in range(m_count) if correct[m])
        wrong = sum(q[m] for m in range(m_count) if not correct[m])
        for m in range(m_count):
            if right == 0:
                out[m, b] = q[m]
            else:
                out[m, b] = q[m] * ((m_count - w * wrong) / right if correct[m] else w)
    return out


def test_accuracy_weights_golden_and_properties():
    from raykd.losses import accuracy_weights

    q = accuracy_weights([0.78, 0.70, 0.635], num_classes=5)
    assert_close(q, torch.tensor(ref_accuracy_weights([0.78, 0.70, 0.635], 5), dtype=torch.float64))
    assert_close(q, torch.tensor([1.1656, 0.9817, 0.8527], dtype=torch.float64), atol=1e-4, rtol=0)
    assert_close(q.sum(), torch.tensor(3.0, dtype=torch.float64))
    # equal teachers: the plain average; a teacher at chance (1/C) counts for nothing
    assert_close(accuracy_weights([0.9, 0.9], num_classes=10), torch.ones(2, dtype=torch.float64))
    assert float(accuracy_weights([0.9, 0.1], num_classes=10)[1]) == pytest.approx(0.0, abs=1e-12)
    assert_close(accuracy_weights([0.2, 0.1], num_classes=5), torch.ones(2, dtype=torch.float64))
    # binary: plain log-odds; a perfect teacher is clipped to a finite weight
    assert_close(accuracy_weights([0.75, 0.6], num_classes=2),
                 torch.tensor(ref_accuracy_weights([0.75, 0.6], 2), dtype=torch.float64))
    perfect = accuracy_weights([1.0, 0.9], num_classes=3)
    assert torch.isfinite(perfect).all() and perfect[0] > perfect[1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (([], 3), r"accuracy must have shape \(M,\) with M >= 1"),
        (([0.5, 1.2], 3), r"accuracy must lie in \[0, 1\].*1.2"),
        (([0.5, float("nan")], 3), r"accuracy must lie in \[0, 1\]"),
        (([0.5], 1), r"num_classes must be an integer >= 2, got 1"),
    ],
)
def test_accuracy_weights_bad_input(args, expected):
    from raykd.losses import accuracy_weights

    with pytest.raises(ValueError, match=expected):
        accuracy_weights(args[0], num_classes=args[1])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), w=st.floats(0.01, 1.0))
def test_wkd_teacher_weights_follow_the_rule_and_sum_to_m(seed, m, w):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(m, 6, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    q = torch.rand(m, generator=gen, dtype=torch.float64) + 0.05
    q = m * q / q.sum()
    weights = wkd_weights(z, y, incorrect_weight=w, teacher_weights=q)
    assert_close(weights, torch.tensor(ref_prior_wkd_weights(z.numpy(), y.numpy(), w, q.numpy())))
    assert_close(weights.sum(0), torch.full((6,), float(m), dtype=torch.float64))
    # all q = 1 is ROaD's Algorithm 2; W = 1 is q itself
    ones = torch.ones(m, dtype=torch.float64)
    assert_close(wkd_weights(z, y, incorrect_weight=w, teacher_weights=ones),
                 wkd_weights(z, y, incorrect_weight=w))
    assert_close(wkd_weights(z, y, incorrect_weight=1.0, teacher_weights=q),
                 q[:, None].expand(m, 6))


def test_wkd_teacher_weights_fall_back_to_q_when_no_weighted_teacher_is_right():
    z = torch.zeros(3, 1, 4)
    z[0, 0, 1] = z[1, 0, 1] = 5.0  # teachers 0, 1 wrong; teacher 2 right but weighted 0
    z[2, 0, 2] = 5.0
    q = torch.tensor([1.5, 1.5, 0.0])
    weights = wkd_weights(z, torch.tensor([2]), incorrect_weight=0.5, teacher_weights=q)
    assert_close(weights[:, 0], q)


@pytest.mark.parametrize("method", ["kd", "wkd", "annealing"])
def test_teacher_weights_in_the_losses(method):
    gen = torch.Generator().manual_seed(5)
    s = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    z = 2 * torch.randn(3, 8, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (8,), generator=gen)
    q = torch.tensor([1.8, 0.9, 0.3], dtype=torch.float64)
    params = {"temperature": 2.0, "alpha": 0.6, "incorrect_weight": 0.4}
    weighted = distillation_loss(method, s, z, y, progress=0.2, teacher_weights=q, **params)
    fast = method_loss(method, teacher_weights=q, **params)(s, z, y, 0.2)
    assert_close(fast, weighted, rtol=0, atol=0)
    if method == "kd":  # KD on (1/M) sum_m q_m z_m
        target = (q[:, None, None] * z).mean(0)
        assert_close(weighted, kd_loss(s, target, y, temperature=2.0, alpha=0.6))
    same = distillation_loss(method, s, z, y, progress=0.2, teacher_weights=torch.ones(3,
                             dtype=torch.float64), **params)
    assert_close(same, distillation_loss(method, s, z, y, progress=0.2, **params))
    assert not torch.allclose(weighted, same)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (torch.ones(2), r"teacher_weights has 2 entries for 3 teachers"),
        (torch.tensor([1.0, -1.0, 3.0]), r"teacher_weights must be finite and >= 0"),
        (torch.zeros(3), r"with a positive sum"),
        (torch.ones(3, 1), r"teacher_weights must have shape \(M,\)"),
    ],
)
def test_bad_teacher_weights_are_named(weights, expected):
    z, s, y, _ = make_batch(4, m=3, b=4, c=5, dtype=torch.float32)
    with pytest.raises(ValueError, match=expected):
        distillation_loss("wkd", s, z, y, incorrect_weight=0.5, teacher_weights=weights)
    if weights.dim() == 1 and len(weights) == 3:
        with pytest.raises(ValueError, match=expected):
            method_loss("kd", teacher_weights=weights)


def test_spec_teacher_weights_option_is_validated():
    from raykd.core.spec import MethodSpec, SpecError, parse_spec

    method = MethodSpec(method="wkd", incorrect_weight=0.5, teacher_weights="val_accuracy")
    assert method.display == "wkd W=0.5 (val_accuracy)"
    assert MethodSpec(method="kd").teacher_weights == "uniform"
    base = {"teachers": [{"model": {"name": "linear"}}], "student": {"model": {"name": "linear"}}}
    for bad, expected in [
        ({"method": "kd", "teacher_weights": "accuracy"}, "'uniform' or 'val_accuracy'"),
        ({"method": "none", "teacher_weights": "val_accuracy"}, "method none does not use"),
    ]:
        with pytest.raises(SpecError, match=expected):
            parse_spec({**base, "methods": [bad]})


def test_the_loop_turns_val_accuracy_into_the_losss_teacher_weights():
    from raykd.core.spec import MethodSpec, TrainSpec
    from raykd.data.checks import DataError
    from raykd.losses import accuracy_weights
    from raykd.train.config import StudentConfig, teacher_accuracy
    from raykd.train.loop import LoopData, loop_teacher_weights

    y_val = np.array([0, 1, 2, 1])
    val_logits = np.eye(3, dtype=np.float32)[np.array([[0, 1, 2, 1], [0, 1, 0, 0]])]
    acc = teacher_accuracy(val_logits, y_val)
    assert acc == (1.0, 0.5)
    data = LoopData(x_train=np.zeros((2, 4), np.float32), y_train=np.array([0, 1]),
                    x_val=np.zeros((4, 4), np.float32), y_val=y_val,
                    teacher_train=np.zeros((2, 2, 3), np.float32))

    def config(weights: str, accuracy: tuple[float, ...] | None) -> StudentConfig:
        return StudentConfig(model={"name": "linear"}, input_shape=(4,), num_classes=3,
                             method=MethodSpec(method="wkd", teacher_weights=weights),
                             train=TrainSpec(), teacher_accuracy=accuracy)

    assert loop_teacher_weights(config("uniform", acc), data) is None
    assert_close(loop_teacher_weights(config("val_accuracy", acc), data),
                 accuracy_weights([1.0, 0.5], num_classes=3))
    with pytest.raises(DataError, match="needs each teacher's accuracy"):
        loop_teacher_weights(config("val_accuracy", None), data)
    with pytest.raises(DataError, match="3 teacher accuracies for 2 teachers"):
        loop_teacher_weights(config("val_accuracy", (0.9, 0.8, 0.7)), data)
