"""Lab 11's exercise checks accept the reference and reject plausible wrong answers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ftlab import distill
from ftlab.checks import lab11


def _kl(student_logits, teacher_logits, labels, t_student, t_teacher, factor, reverse=False, all_positions=False):
    mask = labels != -100 if not all_positions else torch.ones_like(labels, dtype=torch.bool)
    log_q = F.log_softmax(student_logits[mask] / t_student, dim=-1)
    log_p = F.log_softmax(teacher_logits[mask] / t_teacher, dim=-1)
    if reverse:
        log_p, log_q = log_q, log_p
    return factor * (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def test_soft_label_check_accepts_the_reference():
    assert lab11.check_soft_label_loss(distill.soft_label_loss, cases=10) == 10


@pytest.mark.parametrize("wrong", [
    lambda s, t, y, T: _kl(s, t, y, T, T, 1.0),  # no T^2
    lambda s, t, y, T: _kl(s, t, y, T, T, T),  # T instead of T^2
    lambda s, t, y, T: _kl(s, t, y, T, T, T**2, reverse=True),  # reverse KL(student || teacher)
    lambda s, t, y, T: _kl(s, t, y, T, 1.0, T**2),  # teacher not softened
    lambda s, t, y, T: _kl(s, t, y, T, T, T**2, all_positions=True),  # prompt and padding scored
    lambda s, t, y, T: T**2 * -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1)[y != -100].mean(),  # cross-entropy
    lambda s, t, y, T: T**2 * (F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) - F.log_softmax(s / T, -1))).sum(-1)[y != -100].sum() / y.shape[0],  # per sequence
    lambda s, t, y, T: T**2 * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean"),  # batchmean over rows, all positions
])
def test_soft_label_check_rejects_wrong_losses(wrong):
    with pytest.raises(AssertionError):
        lab11.check_soft_label_loss(wrong, cases=6)


def bootstrap_call(a, b, n_resamples=2000, seed=0, confidence=0.95):
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"diff": a.mean() - b.mean(), "low": low, "high": high, "call": "a" if high < 0 else "b" if low > 0 else "none"}


def unpaired(a, b, n_resamples=2000, seed=0, confidence=0.95):
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    ia, ib = (rng.integers(0, len(a), size=(n_resamples, len(a))) for _ in range(2))
    diffs = a[ia].mean(1) - b[ib].mean(1)
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"diff": a.mean() - b.mean(), "low": low, "high": high, "call": "a" if high < 0 else "b" if low > 0 else "none"}


def flipped(a, b, **kw):
    out = bootstrap_call(a, b, **kw)
    return out | {"call": {"a": "b", "b": "a", "none": "none"}[out["call"]]}


def sign_only(a, b, **kw):
    out = bootstrap_call(a, b, **kw)
    return out | {"call": "a" if out["diff"] < 0 else "b"}


def values_ci(a, b, n_resamples=2000, seed=0, confidence=0.95):
    d = np.asarray(a) - np.asarray(b)
    low, high = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])  # spread of questions, not of the mean
    return {"diff": d.mean(), "low": low, "high": high, "call": "a" if high < 0 else "b" if low > 0 else "none"}


def test_paired_call_check_accepts_the_reference():
    assert lab11.check_paired_call(bootstrap_call) == 12
    assert lab11.check_paired_call(lambda a, b, **kw: lab11.reference_call(a, b, **kw), cases=8, seed=3) == 8


@pytest.mark.parametrize("wrong", [unpaired, flipped, sign_only, values_ci])
def test_paired_call_check_rejects_wrong_calls(wrong):
    with pytest.raises(AssertionError):
        lab11.check_paired_call(wrong)
