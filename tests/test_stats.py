"""ftlab.stats: paired significance tests (McNemar, paired bootstrap, Wilcoxon) and their verdicts."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ftlab import stats


def paired(both_correct: int, a_only: int, b_only: int, both_wrong: int) -> tuple[list[bool], list[bool]]:
    """Correctness lists of A and B with the given 2x2 table (questions in a fixed order)."""
    a = [True] * both_correct + [True] * a_only + [False] * b_only + [False] * both_wrong
    b = [True] * both_correct + [False] * a_only + [True] * b_only + [False] * both_wrong
    return a, b


# ---------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------


def test_mcnemar_matches_hand_computation():
    a, b = paired(5, 10, 2, 3)
    res = stats.mcnemar_exact(a, b)
    # 2 * P(X <= 2), X ~ Binomial(12, 0.5) = 2 * (1 + 12 + 66) / 4096
    assert res.p_value == pytest.approx(2 * 79 / 4096) and round(res.p_value, 4) == 0.0386
    assert (res.n, res.both_correct, res.a_only, res.b_only, res.both_wrong) == (20, 5, 10, 2, 3)
    assert res.discordant == 12
    assert res.acc_a == pytest.approx(15 / 20) and res.acc_b == pytest.approx(7 / 20)
    assert res.diff == pytest.approx(8 / 20)


def test_mcnemar_is_symmetric():
    a, b = paired(40, 10, 2, 8)
    ab, ba = stats.mcnemar_exact(a, b), stats.mcnemar_exact(b, a)
    assert ab.p_value == ba.p_value
    assert (ab.a_only, ab.b_only) == (ba.b_only, ba.a_only)
    assert ab.diff == -ba.diff


def test_mcnemar_without_discordant_pairs_is_one():
    a, b = paired(7, 0, 0, 3)
    res = stats.mcnemar_exact(a, b)
    assert res.p_value == 1.0 and res.diff == 0.0


@pytest.mark.parametrize("b", range(0, 13))
@pytest.mark.parametrize("c", [0, 1, 2, 5, 12])
def test_binomtest_agrees_with_doubled_binomial_tail(b, c):
    a_list, b_list = paired(3, b, c, 2)
    expected = 1.0 if b + c == 0 else min(1.0, 2 * sps.binom.cdf(min(b, c), b + c, 0.5))
    assert stats.mcnemar_exact(a_list, b_list).p_value == pytest.approx(expected, rel=1e-12)


def test_accepts_zero_one_and_numpy_bools():
    a, b = paired(5, 10, 2, 3)
    ref = stats.mcnemar_exact(a, b)
    assert stats.mcnemar_exact([int(x) for x in a], np.array(b)) == ref
    assert stats.mcnemar_exact(np.array(a, dtype=float), [int(x) for x in b]) == ref


# Plausible wrong implementations. On the fixed example (9 vs 2 discordant of 100) each gives a
# different p, and all but Fisher even flip the conclusion at 0.05; mcnemar_exact must match the reference.

A_FIX, B_FIX = paired(60, 9, 2, 29)
REFERENCE_P = 2 * (1 + 11 + 55) / 2**11  # exact two-sided: 0.0654


def one_sided_p(a, b):
    """Wrong: the binomial tail is not doubled."""
    n01 = sum(x and not y for x, y in zip(a, b))
    n10 = sum(y and not x for x, y in zip(a, b))
    return sps.binom.cdf(min(n01, n10), n01 + n10, 0.5)


def unpaired_fisher_p(a, b):
    """Wrong: Fisher's exact test on the totals (right/wrong per model), ignoring the pairing."""
    table = [[sum(a), len(a) - sum(a)], [sum(b), len(b) - sum(b)]]
    return sps.fisher_exact(table).pvalue


def unpaired_chi2_p(a, b):
    """Wrong: chi-square test of independence on the totals."""
    table = [[sum(a), len(a) - sum(a)], [sum(b), len(b) - sum(b)]]
    return sps.chi2_contingency(table).pvalue


def chi2_no_correction_p(a, b):
    """Wrong on small counts: McNemar's chi-square (b - c)^2 / (b + c), no continuity correction."""
    n01 = sum(x and not y for x, y in zip(a, b))
    n10 = sum(y and not x for x, y in zip(a, b))
    return sps.chi2.sf((n01 - n10) ** 2 / (n01 + n10), df=1)


@pytest.mark.parametrize("wrong", [one_sided_p, unpaired_fisher_p, unpaired_chi2_p, chi2_no_correction_p])
def test_wrong_implementations_disagree_with_the_reference(wrong):
    assert stats.mcnemar_exact(A_FIX, B_FIX).p_value == pytest.approx(REFERENCE_P)
    assert abs(wrong(A_FIX, B_FIX) - REFERENCE_P) > 0.01


def test_wrong_implementations_flip_conclusions():
    assert REFERENCE_P > 0.05  # exact: not significant
    assert one_sided_p(A_FIX, B_FIX) < 0.05 and chi2_no_correction_p(A_FIX, B_FIX) < 0.05
    # and the unpaired test misses a difference the paired test finds (10 vs 0 discordant)
    a, b = paired(60, 10, 0, 30)
    assert stats.mcnemar_exact(a, b).p_value < 0.01 < 0.05 < unpaired_fisher_p(a, b)


# ---------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------


def shifted(n=100, shift=0.5, noise=0.5, seed=1):
    rng = np.random.default_rng(seed)
    base = rng.normal(2.0, 1.0, n)  # per-question difficulty, shared by both models
    return base, base + shift + rng.normal(0.0, noise, n)


def test_bootstrap_is_deterministic_for_a_seed():
    a, b = shifted()
    assert stats.paired_bootstrap(a, b, seed=3) == stats.paired_bootstrap(a, b, seed=3)
    assert stats.paired_bootstrap(a, b, seed=3).ci_low != stats.paired_bootstrap(a, b, seed=4).ci_low


def test_bootstrap_finds_a_clear_shift():
    a, b = shifted(shift=0.5)
    res = stats.paired_bootstrap(a, b)
    assert res.ci_low < -0.5 < res.ci_high < 0  # contains the true difference, excludes 0
    assert res.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert res.p_value < 0.01
    assert res.p_value == pytest.approx(2 / 10_001)  # no resample crosses 0: the smallest p it reports


def test_bootstrap_without_shift():
    a, b = shifted(shift=0.0)
    res = stats.paired_bootstrap(a, b)
    assert res.ci_low < 0 < res.ci_high and res.p_value > 0.2


def test_bootstrap_identical_inputs_and_median():
    a, _ = shifted()
    res = stats.paired_bootstrap(a, a)
    assert (res.diff, res.ci_low, res.ci_high, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    a, b = shifted()
    med = stats.paired_bootstrap(a, b, n_resamples=2000, statistic=np.median, confidence=0.9)
    assert med.diff == pytest.approx(np.median(a) - np.median(b)) and med.ci_low < med.diff < med.ci_high


def test_bootstrap_p_is_the_dual_of_the_ci():
    a, b = shifted(n=40, shift=0.2, noise=0.8, seed=5)
    res = stats.paired_bootstrap(a, b)
    excludes_zero = res.ci_high < 0 or res.ci_low > 0
    assert excludes_zero == (res.p_value < 0.05)


# ---------------------------------------------------------------------------
# Wilcoxon
# ---------------------------------------------------------------------------


def test_wilcoxon_agrees_with_scipy():
    a = [1.2, 0.8, 2.5, 1.9, 0.4, 3.1, 1.0, 2.2, 1.7, 0.9, 2.8, 1.4]
    b = [1.0, 0.9, 2.0, 1.5, 0.4, 2.6, 1.1, 1.6, 1.2, 0.5, 2.0, 1.3]
    res, ref = stats.wilcoxon_signed_rank(a, b), sps.wilcoxon(a, b)
    assert res.p_value == pytest.approx(ref.pvalue) and res.statistic == pytest.approx(ref.statistic)
    assert res.n_nonzero == 11 and res.r_plus + res.r_minus == pytest.approx(11 * 12 / 2)
    assert res.statistic == pytest.approx(min(res.r_plus, res.r_minus)) and res.r_plus > res.r_minus


def test_wilcoxon_identical_inputs():
    res = stats.wilcoxon_signed_rank([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert res.p_value == 1.0 and res.n_nonzero == 0 and "zero" in res.note


# ---------------------------------------------------------------------------
# compare_paired
# ---------------------------------------------------------------------------


def test_verdict_significant_accuracy():
    a, b = paired(60, 2, 12, 26)
    cmp = stats.compare_paired("r8", a, "r32", b)
    assert cmp.verdict == "r32 > r8 on accuracy (McNemar p=0.013, 2 vs 12 discordant)"
    assert cmp.verdict_ko == "r32가 r8보다 정답률이 높다 (McNemar p=0.013, 불일치 2 대 12)"
    swapped = stats.compare_paired("r32", b, "r8", a)
    assert swapped.verdict.startswith("r32 > r8 on accuracy") and swapped.verdict_ko.startswith("r32가 r8보다")
    assert stats.compare_paired("all", b, "qv", a).verdict_ko.startswith("all이 qv보다")


def test_verdict_not_significant_claims_no_direction():
    a, b = paired(60, 7, 5, 28)
    cmp = stats.compare_paired("A", a, "B", b)
    assert cmp.verdict == "no significant difference in accuracy (McNemar p=0.77, 7 vs 5 discordant)"
    assert cmp.verdict_ko == "정답률 차이는 유의하지 않다 (McNemar p=0.77, 불일치 7 대 5)"
    assert ">" not in cmp.verdict and "높다" not in cmp.verdict_ko
    # 9 vs 2: p = 0.065, not significant at 0.05 but at 0.1
    assert stats.compare_paired("A", A_FIX, "B", B_FIX).verdict.startswith("no significant")
    assert stats.compare_paired("A", A_FIX, "B", B_FIX, alpha=0.1).verdict.startswith("A > B")


def test_verdict_nll():
    nll_a, nll_b = shifted(shift=0.3)  # A has the lower NLL
    a, b = paired(60, 7, 5, 28)
    cmp = stats.compare_paired("LoRA", a, "QLoRA", b, nll_a=nll_a, nll_b=nll_b)
    boot = cmp.nll_bootstrap
    ci = f"[{boot.ci_low:.2f}, {boot.ci_high:.2f}]"
    assert f"; LoRA lower NLL than QLoRA (bootstrap 95% CI of LoRA-QLoRA {ci}, Wilcoxon p<0.001)" in cmp.verdict
    assert "; LoRA가 QLoRA보다 NLL이 낮다 (bootstrap 95% CI(LoRA-QLoRA)" in cmp.verdict_ko
    same = stats.compare_paired("A", a, "B", b, nll_a=nll_a, nll_b=nll_a)
    assert "no significant difference in NLL" in same.verdict and "NLL 차이는 유의하지 않다" in same.verdict_ko


def test_verdict_nll_tests_disagree():
    # Most questions: A slightly worse (Wilcoxon sees it); two huge outliers pull the mean the other way
    nll_b = np.linspace(1.0, 2.0, 32)
    nll_a = nll_b + np.r_[np.full(30, 0.1), -5.0, -5.0]
    a, b = paired(20, 6, 6, 0)
    cmp = stats.compare_paired("A", a, "B", b, nll_a=nll_a, nll_b=nll_b)
    assert cmp.nll_wilcoxon.p_value < 0.05 and cmp.nll_bootstrap.ci_low < 0 < cmp.nll_bootstrap.ci_high
    assert "NLL: the tests disagree, no claim" in cmp.verdict and "엇갈려" in cmp.verdict_ko
    assert "lower NLL" not in cmp.verdict


def test_row_for_pandas():
    a, b = paired(60, 2, 12, 26)
    nll_a, nll_b = shifted()
    row = stats.compare_paired("A", a, "B", b, nll_a=nll_a, nll_b=nll_b).row()
    assert row["A"] == "A" and row["n"] == 100 and (row["A only right"], row["B only right"]) == (2, 12)
    assert row["acc A"] == 0.62 and row["acc B"] == 0.72 and row["acc diff"] == pytest.approx(-0.1)
    assert row["McNemar p"] == pytest.approx(stats.mcnemar_exact(a, b).p_value)
    assert row["NLL CI low"] < row["NLL diff"] < row["NLL CI high"] < 0 and row["Wilcoxon p"] < 0.001
    assert "NLL diff" not in stats.compare_paired("A", a, "B", b).row()


# ---------------------------------------------------------------------------
# Validation: errors name the field and the problem
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(correct_a=[True] * 167, correct_b=[True] * 166), "correct_a has 167 items, correct_b has 166"),
    (dict(correct_a=[], correct_b=[]), "correct_a is empty"),
    (dict(correct_a=[1, 0, 1], correct_b=[1, 0, 2]), r"correct_b\[2\] is 2"),
    (dict(correct_a=["yes", "no"], correct_b=[1, 0]), r"correct_a\[0\] is 'yes'"),
    (dict(correct_a=[1.0, float("nan")], correct_b=[1, 0]), r"correct_a\[1\] is nan"),
    (dict(correct_a=[1, 0, 1], correct_b=[1, 0, 0], nll_a=[0.1, 0.2, 0.3]), "nll_a given without nll_b"),
    (dict(correct_a=[1, 0, 1], correct_b=[1, 0, 0], nll_a=[0.1, 0.2, 0.3], nll_b=[0.1, float("nan"), 0.3]),
     r"nll_b\[1\] is nan"),
    (dict(correct_a=[1, 0, 1, 1], correct_b=[1, 0, 0, 1], nll_a=[0.1, 0.2, 0.3], nll_b=[0.1, 0.2, 0.3]),
     "nll_a has 3 items, correct_a has 4"),
    (dict(correct_a=[1, 0], correct_b=[1, 0], nll_a=[0.1, 0.2], nll_b=[0.1, math.inf]), r"nll_b\[1\] is inf"),
])
def test_compare_paired_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stats.compare_paired("A", kwargs.pop("correct_a"), "B", kwargs.pop("correct_b"), **kwargs)


def test_other_validation():
    with pytest.raises(ValueError, match="values_a has 2 items, values_b has 3"):
        stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="n_resamples"):
        stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="values_b is empty"):
        stats.wilcoxon_signed_rank([1.0], [])
    with pytest.raises(ValueError, match="values is empty"):
        stats.mean_std([])
    with pytest.raises(ValueError, match="alpha"):
        stats.compare_paired("A", [1], "B", [0], alpha=5)


# ---------------------------------------------------------------------------
# Spread over seeds
# ---------------------------------------------------------------------------


def test_seed_spread():
    mean, std = stats.mean_std([0.71, 0.73, 0.70])
    assert mean == pytest.approx(0.71333333) and std == pytest.approx(np.std([0.71, 0.73, 0.70], ddof=1))
    assert stats.seed_spread([0.71, 0.73, 0.70]) == "0.713 ± 0.015 (n=3)"
    assert stats.seed_spread([1.5, 2.5], fmt=".1f") == "2.0 ± 0.7 (n=2)"
    assert math.isnan(stats.mean_std([0.7])[1]) and stats.seed_spread([0.7]) == "0.700 (n=1, no spread)"
