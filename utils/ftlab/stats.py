"""Paired significance tests: is model A better than model B on the same questions?

One helper for lab 08 (LoRA rank/target comparisons), lab 11 and the graders::

    cmp = stats.compare_paired("r8", res_a["correct"], "r32", res_b["correct"], nll_a=nll_a, nll_b=nll_b)
    print(cmp.verdict)      # "r32 > r8 on accuracy (McNemar p=0.013, 2 vs 12 discordant); ..."
    print(cmp.verdict_ko)   # the same in Korean, for the notebooks
    pd.DataFrame([c.row() for c in comparisons])
    stats.seed_spread([0.71, 0.73, 0.70])   # "0.713 ± 0.015 (n=3)"

Why paired tests: both models answer the SAME questions, so most of the
variation (easy vs hard questions) is shared. Comparing the two accuracies as if
they came from independent samples throws that away and misses real
differences; the paired tests below only look at how the two models differ on
each question.

- ``mcnemar_exact``: correct/incorrect per question. Only the discordant
  questions (one model right, the other wrong) carry evidence; under "no
  difference" each is equally likely to go either way, so the count is
  Binomial(b + c, 0.5) and the exact two-sided p-value is a binomial test.
- ``paired_bootstrap``: per-question numbers (e.g. NLL). Resample questions with
  replacement, keeping each question's A and B values together.
- ``wilcoxon_signed_rank``: the same numbers, rank-based (robust to a few
  questions with huge NLL).
- ``seed_spread`` / ``mean_std``: "mean ± std (n=3)" over training seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Sized

import numpy as np

# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _as_correct(values: Sequence, name: str) -> np.ndarray:
    """A 1-D bool array; True/False, 0/1 (also 0.0/1.0, as pandas stores them) are accepted."""
    if np.ndim(values) != 1:
        raise ValueError(f"{name} must be a 1-D sequence of True/False (one per question), got {np.ndim(values)}-D")
    items = np.asarray(values, dtype=object).tolist()
    if not items:
        raise ValueError(f"{name} is empty: there is nothing to compare")
    for i, v in enumerate(items):
        if not (isinstance(v, (bool, int, float)) and v in (0, 1)):
            raise ValueError(f"{name}[{i}] is {v!r}: correctness must be True/False or 0/1")
    return np.array(items, dtype=float).astype(bool)


def _as_values(values: Sequence, name: str) -> np.ndarray:
    """A 1-D float array of finite numbers (e.g. per-question NLL)."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence (one number per question), got {arr.ndim}-D")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: there is nothing to compare")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {arr[bad[0]]}: values must be finite ({bad.size} bad in all)")
    return arr


def _same_length(a: Sized, b: Sized, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} items, {name_b} has {len(b)}: "
                         "paired tests need the same questions in the same order")


# ---------------------------------------------------------------------------
# McNemar (correct / incorrect)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """The paired 2x2 table of two models and the exact McNemar p-value.

    ``a_only`` and ``b_only`` are the discordant counts, McNemar's b and c.
    """

    n: int  # questions
    both_correct: int
    a_only: int  # A right, B wrong (McNemar's b)
    b_only: int  # A wrong, B right (McNemar's c)
    both_wrong: int
    acc_a: float
    acc_b: float
    diff: float  # acc_a - acc_b = (a_only - b_only) / n
    p_value: float  # two-sided, exact

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def mcnemar_exact(correct_a: Sequence, correct_b: Sequence) -> McNemarResult:
    """Exact McNemar test on paired correctness (same questions, same order).

    The p-value is ``binomtest(b, b + c, 0.5)``, which for p = 0.5 equals
    ``min(1, 2 * binom.cdf(min(b, c), b + c, 0.5))``. No chi-square
    approximation: eval sets are small and the discordant counts smaller.
    With no discordant question there is no evidence at all: p = 1.0.
    """
    from scipy.stats import binomtest

    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    _same_length(a, b, "correct_a", "correct_b")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if a_only + b_only == 0 else min(1.0, float(binomtest(a_only, a_only + b_only, 0.5).pvalue))
    n = len(a)
    return McNemarResult(n, int(np.sum(a & b)), a_only, b_only, int(np.sum(~a & ~b)),
                         float(a.mean()), float(b.mean()), (a_only - b_only) / n, p)


# ---------------------------------------------------------------------------
# Paired bootstrap (per-question numbers)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """``statistic(a) - statistic(b)``, its percentile confidence interval and a bootstrap p-value."""

    n: int
    diff: float  # observed statistic(a) - statistic(b)
    ci_low: float
    ci_high: float
    confidence: float  # 0.95: a 95% interval
    p_value: float  # see paired_bootstrap
    n_resamples: int
    seed: int


def paired_bootstrap(
    values_a: Sequence[float],
    values_b: Sequence[float],
    n_resamples: int = 10_000,
    seed: int = 0,
    statistic: Callable = np.mean,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Resample questions with replacement (A and B together) and look at ``statistic(a) - statistic(b)``.

    ``statistic`` must accept ``axis=`` (``np.mean``, ``np.median``). The CI is
    the percentile interval of the resampled differences. The p-value is
    ``min(1, 2 * (k + 1) / (n_resamples + 1))`` with ``k`` the number of resampled
    differences on the far side of 0 (``<= 0`` or ``>= 0``, whichever is rarer):
    it is the dual of the percentile CI (p < 0.05 when the 95% interval excludes
    0, up to quantile interpolation), so the p-value and the CI never tell
    different stories; the +1 keeps it from reading 0, which no finite number of
    resamples can show (the smallest is 2 / 10001). Same seed, same result.
    """
    a, b = _as_values(values_a, "values_a"), _as_values(values_b, "values_b")
    _same_length(a, b, "values_a", "values_b")
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for a 95% CI), got {confidence!r}")
    rng, n = np.random.default_rng(seed), len(a)
    block = max(1, 2_000_000 // n)  # resamples per batch: bounded memory for long eval sets
    diffs = []
    for start in range(0, n_resamples, block):
        idx = rng.integers(0, n, size=(min(block, n_resamples - start), n))  # each row: one resampled eval set
        diffs.append(statistic(a[idx], axis=1) - statistic(b[idx], axis=1))
    diffs = np.concatenate(diffs)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    k = min(int(np.sum(diffs <= 0)), int(np.sum(diffs >= 0)))
    p = min(1.0, 2 * (k + 1) / (n_resamples + 1))
    return BootstrapResult(n, float(statistic(a) - statistic(b)), float(low), float(high), confidence, p,
                           n_resamples, seed)


# ---------------------------------------------------------------------------
# Wilcoxon signed-rank (per-question numbers)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WilcoxonResult:
    """Wilcoxon signed-rank test of ``a - b`` (two-sided; zero differences dropped, scipy's default)."""

    n: int
    n_nonzero: int  # questions with a - b != 0: the ones that count
    statistic: float  # scipy's: min(r_plus, r_minus)
    r_plus: float  # rank sum of questions where a > b
    r_minus: float  # rank sum of questions where a < b
    p_value: float
    note: str = ""


def wilcoxon_signed_rank(values_a: Sequence[float], values_b: Sequence[float]) -> WilcoxonResult:
    """``scipy.stats.wilcoxon(a, b)``, plus the two rank sums, which tell the direction.

    All differences zero (identical inputs) gives p = 1.0 and a note instead of
    scipy's warning: there is no evidence of a difference.
    """
    from scipy.stats import rankdata, wilcoxon

    a, b = _as_values(values_a, "values_a"), _as_values(values_b, "values_b")
    _same_length(a, b, "values_a", "values_b")
    d = a - b
    nz = d[d != 0]
    if nz.size == 0:
        return WilcoxonResult(len(d), 0, 0.0, 0.0, 0.0, 1.0, "all differences are zero: p set to 1.0")
    ranks = rankdata(np.abs(nz))
    res = wilcoxon(a, b, alternative="two-sided")
    return WilcoxonResult(len(d), int(nz.size), float(res.statistic), float(ranks[nz > 0].sum()),
                          float(ranks[nz < 0].sum()), float(res.pvalue))


# ---------------------------------------------------------------------------
# A vs B, in words
# ---------------------------------------------------------------------------


def _fmt_p(p: float, alpha: float) -> str:
    """2 significant digits; 3 near alpha, so 0.0496 does not print as 0.05 next to "significant"."""
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.{3 if abs(p - alpha) < 0.005 else 2}g}"


def _fmt_ci(low: float, high: float) -> str:
    """Both bounds with the same decimals, 2 significant digits on the larger: "[-0.31, -0.12]"."""
    decimals = max(0, 1 - math.floor(math.log10(max(abs(low), abs(high), 1e-12))))
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def _ko_subject(name: str) -> str:
    """``name`` + the subject particle 이 or 가, chosen by how its last character is read.

    Hangul: by its final consonant. Latin letters and digits as read in Korean:
    L, M, N, R (엘, 엠, 엔, 알) and 0, 1, 3, 6, 7, 8 (영, 일, 삼, 육, 칠, 팔) end in
    a consonant ("r8" -> "r8이", "LoRA" -> "LoRA가"). Anything else: "이(가)".
    """
    last = name.rstrip(" )]}.,!?'\"")[-1:]
    if "가" <= last <= "힣":
        final = (ord(last) - ord("가")) % 28 != 0
    elif last.isascii() and last.isalnum():
        final = last.upper() in "LMNR013678"
    else:
        return f"{name}이(가)"
    return f"{name}{'이' if final else '가'}"


@dataclass(frozen=True)
class PairedComparison:
    """McNemar on correctness, and (when NLL is given) bootstrap + Wilcoxon on per-question NLL."""

    name_a: str
    name_b: str
    accuracy: McNemarResult
    nll_bootstrap: BootstrapResult | None
    nll_wilcoxon: WilcoxonResult | None
    alpha: float

    def _acc_winner(self) -> tuple[str, str] | None:
        acc = self.accuracy
        if acc.p_value >= self.alpha:
            return None
        return (self.name_a, self.name_b) if acc.a_only > acc.b_only else (self.name_b, self.name_a)

    def _nll_outcome(self) -> str:
        """Who has the lower NLL: "a" or "b" (both tests agree), "none" (neither test), "mixed" (they disagree)."""
        boot, wil = self.nll_bootstrap, self.nll_wilcoxon
        boot_side = "a" if boot.ci_high < 0 else "b" if boot.ci_low > 0 else "none"
        wil_side = "none" if wil.p_value >= self.alpha else "a" if wil.r_minus > wil.r_plus else "b"
        return boot_side if boot_side == wil_side else "mixed"

    def _acc_detail(self) -> str:
        return f"McNemar {_fmt_p(self.accuracy.p_value, self.alpha)}"

    def _nll_detail(self, ci_label: str) -> str:
        boot = self.nll_bootstrap
        level = f"{100 * boot.confidence:g}%"
        return (f"bootstrap {level} CI{ci_label} {_fmt_ci(boot.ci_low, boot.ci_high)}, "
                f"Wilcoxon {_fmt_p(self.nll_wilcoxon.p_value, self.alpha)}")

    @property
    def verdict(self) -> str:
        """What the tests support, in plain English; no direction is claimed without significance."""
        acc, a, b = self.accuracy, self.name_a, self.name_b
        counts = f"{acc.a_only} vs {acc.b_only} discordant"
        win = self._acc_winner()
        parts = [f"{win[0]} > {win[1]} on accuracy ({self._acc_detail()}, {counts})" if win
                 else f"no significant difference in accuracy ({self._acc_detail()}, {counts})"]
        if self.nll_bootstrap is not None:
            detail = self._nll_detail(f" of {a}-{b}")
            parts.append({"a": f"{a} lower NLL than {b} ({detail})", "b": f"{b} lower NLL than {a} ({detail})",
                          "none": f"no significant difference in NLL ({detail})",
                          "mixed": f"NLL: the tests disagree, no claim ({detail})"}[self._nll_outcome()])
        return "; ".join(parts)

    @property
    def verdict_ko(self) -> str:
        """The verdict in Korean, for the notebooks."""
        acc, a, b = self.accuracy, self.name_a, self.name_b
        counts = f"불일치 {acc.a_only} 대 {acc.b_only}"
        win = self._acc_winner()
        parts = [f"{_ko_subject(win[0])} {win[1]}보다 정답률이 높다 ({self._acc_detail()}, {counts})" if win
                 else f"정답률 차이는 유의하지 않다 ({self._acc_detail()}, {counts})"]
        if self.nll_bootstrap is not None:
            detail = self._nll_detail(f"({a}-{b})")
            parts.append({"a": f"{_ko_subject(a)} {b}보다 NLL이 낮다 ({detail})",
                          "b": f"{_ko_subject(b)} {a}보다 NLL이 낮다 ({detail})",
                          "none": f"NLL 차이는 유의하지 않다 ({detail})",
                          "mixed": f"NLL 차이는 검정마다 엇갈려 결론을 내릴 수 없다 ({detail})",
                          }[self._nll_outcome()])
        return "; ".join(parts)

    def row(self) -> dict:
        """One row for a pandas table (numbers unrounded; round when displaying)."""
        acc = self.accuracy
        row = {"A": self.name_a, "B": self.name_b, "n": acc.n, "acc A": acc.acc_a, "acc B": acc.acc_b,
               "acc diff": acc.diff, "A only right": acc.a_only, "B only right": acc.b_only,
               "McNemar p": acc.p_value}
        if self.nll_bootstrap is not None:
            boot = self.nll_bootstrap
            row.update({"NLL diff": boot.diff, "NLL CI low": boot.ci_low, "NLL CI high": boot.ci_high,
                        "bootstrap p": boot.p_value, "Wilcoxon p": self.nll_wilcoxon.p_value})
        return row


def compare_paired(
    name_a: str,
    correct_a: Sequence,
    name_b: str,
    correct_b: Sequence,
    nll_a: Sequence[float] | None = None,
    nll_b: Sequence[float] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models answering the same questions; see ``PairedComparison.verdict``.

    NLL (lower is better) is called significant only when the bootstrap
    (1 - alpha) CI of A-B excludes 0 AND Wilcoxon agrees, in the same direction.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    accuracy = mcnemar_exact(correct_a, correct_b)
    if (nll_a is None) != (nll_b is None):
        raise ValueError(f"{'nll_a' if nll_b is None else 'nll_b'} given without "
                         f"{'nll_b' if nll_b is None else 'nll_a'}: give both or neither")
    boot = wil = None
    if nll_a is not None:
        a, b = _as_values(nll_a, "nll_a"), _as_values(nll_b, "nll_b")
        _same_length(a, b, "nll_a", "nll_b")
        _same_length(a, range(accuracy.n), "nll_a", "correct_a")
        boot = paired_bootstrap(a, b, seed=seed, confidence=1 - alpha)
        wil = wilcoxon_signed_rank(a, b)
    return PairedComparison(name_a, name_b, accuracy, boot, wil, alpha)


# ---------------------------------------------------------------------------
# Spread over seeds
# ---------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of per-seed results.

    One value gives std ``nan``, not 0.0: a single seed says nothing about the
    spread, and 0.0 would read as "perfectly reproducible".
    """
    arr = _as_values(values, "values")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else math.nan)


def seed_spread(values: Sequence[float], fmt: str = ".3f") -> str:
    """``"0.713 ± 0.015 (n=3)"`` for per-seed results; one seed: ``"0.713 (n=1, no spread)"``."""
    mean, std = mean_std(values)
    if math.isnan(std):
        return f"{mean:{fmt}} (n=1, no spread)"
    return f"{mean:{fmt}} ± {std:{fmt}} (n={len(values)})"
