"""Checks for lab 11's exercises: the soft-label distillation loss and a paired significance call."""

from __future__ import annotations

import random
from typing import Callable


def trl_soft_label_loss(student_hidden, teacher_hidden, student_head, teacher_head, labels, temperature: float):
    """The reference: T^2 times the pinned trl's distillation loss (``DistillationTrainer``'s chunked
    generalized JSD with ``beta=0``, i.e. forward KL(teacher || student), mean over scored tokens)."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    mask = (labels != -100).long()
    loss, _, _ = _chunked_divergence_loss(student_hidden, teacher_hidden, student_head, teacher_head, mask,
                                          beta=0.0, temperature=temperature)
    return temperature**2 * loss


def _case(rng: random.Random, case: int):
    import torch

    batch, tokens, hidden, vocab = rng.choice([1, 2, 3]), rng.choice([4, 7]), rng.choice([8, 16]), rng.choice([11, 32])
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    student_hidden = torch.randn(batch, tokens, hidden, generator=gen)
    teacher_hidden = torch.randn(batch, tokens, hidden, generator=gen)
    student_head = torch.randn(vocab, hidden, generator=gen) * rng.choice([0.3, 1.0])
    teacher_head = torch.randn(vocab, hidden, generator=gen) * rng.choice([0.5, 1.5])
    labels = torch.randint(0, vocab, (batch, tokens), generator=gen)
    labels[0, : rng.randint(1, tokens - 2)] = -100  # a prompt that is not scored
    if batch > 1:
        labels[-1, tokens - rng.randint(1, 2):] = -100  # padding at the end of another row
    temperature = (2.0, 0.5, 4.0, 1.0, 3.0)[case % 5]
    return student_hidden, teacher_hidden, student_head, teacher_head, labels, temperature


def check_soft_label_loss(fn: Callable, cases: int = 6, seed: int = 0) -> int:
    """``fn(student_logits, teacher_logits, labels, temperature)`` equals T^2 x trl's distillation loss.

    Logits are (batch, tokens, vocab), aligned with ``labels`` (batch, tokens);
    positions with ``labels == -100`` are not scored. Returns the cases checked.
    """
    import torch

    rng = random.Random(seed)
    for case in range(cases):
        sh, th, sw, tw, labels, temperature = _case(rng, case)
        student_logits, teacher_logits = sh @ sw.T, th @ tw.T  # (batch, tokens, vocab)
        want = float(trl_soft_label_loss(sh, th, sw, tw, labels, temperature))
        got = fn(student_logits.clone(), teacher_logits.clone(), labels.clone(), temperature)
        assert torch.is_tensor(got) and got.dim() == 0, "return a scalar tensor (so that it can be backpropagated)"
        assert abs(float(got) - want) <= 1e-4 * max(1.0, abs(want)), (
            f"T={temperature}, {int((labels != -100).sum())} scored of {labels.numel()} positions: you give "
            f"{float(got):.5f}, T^2 x trl's distillation loss gives {want:.5f}. Hint: soften BOTH distributions by T, "
            "KL(teacher || student) = sum p_teacher * (log p_teacher - log p_student) over the vocabulary, averaged "
            "over the scored positions only, times T^2."
        )
        same = fn(teacher_logits.clone(), teacher_logits.clone(), labels.clone(), temperature)
        assert abs(float(same)) < 1e-5, f"a student equal to its teacher must have loss 0, you give {float(same):.3g}"
    return cases


def reference_call(values_a, values_b, n_resamples: int = 20_000, seed: int = 0, confidence: float = 0.95) -> dict:
    """``ftlab.stats.paired_bootstrap`` as a call: which of A and B has the lower mean, or "none"."""
    from ftlab.stats import paired_bootstrap

    boot = paired_bootstrap(values_a, values_b, n_resamples=n_resamples, seed=seed, confidence=confidence)
    call = "a" if boot.ci_high < 0 else "b" if boot.ci_low > 0 else "none"
    return {"diff": boot.diff, "low": boot.ci_low, "high": boot.ci_high, "call": call}


def _paired_values(rng: random.Random, case: int):
    """Per-question values with a large shared part (question difficulty) and a small A-B difference."""
    n = (40, 80, 150)[case % 3]
    shift = (0.12, 0.0, -0.12, 0.0)[case % 4] * rng.choice([1.0, 1.5])
    noise = rng.choice([0.15, 0.25])
    difficulty = [rng.expovariate(0.5) for _ in range(n)]  # shared by A and B: what pairing removes
    a = [d + rng.gauss(0, noise) for d in difficulty]
    b = [d + shift + rng.gauss(0, noise) for d in difficulty]
    return a, b


def check_paired_call(fn: Callable, cases: int = 12, seed: int = 0, n_resamples: int = 4000) -> int:
    """``fn(values_a, values_b, n_resamples, seed, confidence)`` gives ``{"diff", "low", "high", "call"}``
    like ``ftlab.stats.paired_bootstrap``: the same observed difference, a percentile interval within
    Monte-Carlo error, and the same call where the reference interval is clear of 0 (or clearly holds it)."""
    rng = random.Random(seed)
    calls = set()
    for case in range(cases):
        a, b = _paired_values(rng, case)
        want = reference_call(a, b)
        got = fn(a, b, n_resamples=n_resamples, seed=case, confidence=0.95)
        assert isinstance(got, dict) and {"diff", "low", "high", "call"} <= set(got), (
            'return a dict with keys "diff", "low", "high" and "call"')
        width = want["high"] - want["low"]
        where = f"{len(a)} questions, observed mean(a)-mean(b) = {want['diff']:.4f}"
        assert abs(got["diff"] - want["diff"]) < 1e-9, f"{where}: you give diff {got['diff']:.4f} (mean of a minus mean of b)"
        assert abs(got["low"] - want["low"]) <= 0.2 * width and abs(got["high"] - want["high"]) <= 0.2 * width, (
            f"{where}: your 95% interval [{got['low']:.4f}, {got['high']:.4f}], the paired bootstrap's "
            f"[{want['low']:.4f}, {want['high']:.4f}]. Hint: resample QUESTIONS (one index array used for both a and b), "
            "take the mean difference of each resample, and read the 2.5% and 97.5% quantiles."
        )
        margin = min(abs(want["low"]), abs(want["high"]))
        if margin >= 0.25 * width:  # the reference is clear; a correct bootstrap cannot disagree by chance
            assert got["call"] == want["call"], (
                f"{where}, interval [{want['low']:.4f}, {want['high']:.4f}]: the call is {want['call']!r}, you say "
                f"{got['call']!r}. Hint: 'a' when the whole interval of a-b is below 0 (A lower), 'b' when above, "
                "'none' when it contains 0."
            )
            calls.add(want["call"])
    assert len(calls) >= 2 or cases < 4, f"the check itself saw too few clear cases ({sorted(calls)}): use more cases"
    return cases
