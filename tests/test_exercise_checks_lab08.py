"""Lab 08's exercise checks accept the reference and reject plausible wrong answers."""

import math

import pytest

from ftlab.checks import lab08


def trainable_reference(config, r, targets, embeddings):
    h, i = config.hidden_size, config.intermediate_size
    head_dim = h // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    names = list(shapes) if targets == "all-linear" else targets.split(",")
    lora = config.num_hidden_layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)
    copies = 1 if config.tie_word_embeddings else 2
    return lora + (copies * config.vocab_size * h if embeddings else 0)


def mcnemar_reference(a, b):
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n) if n else 1.0


def test_checks_accept_the_reference():
    assert lab08.check_trainable_params(trainable_reference, cases=4) == 4
    assert lab08.check_mcnemar(mcnemar_reference) == 40


@pytest.mark.parametrize("wrong", [
    lambda c, r, t, e: trainable_reference(c, r, t, e) - (trainable_reference(c, r, t, False) // 2 if t else 0),  # A only
    lambda c, r, t, e: trainable_reference(c, r, "q_proj,k_proj,v_proj,o_proj" if t == "all-linear" else t, e),  # no MLP
    lambda c, r, t, e: trainable_reference(c, r, t, False) + (2 * c.vocab_size * c.hidden_size if e else 0),  # tie ignored
    lambda c, r, t, e: trainable_reference(c, r, t, e) + c.num_hidden_layers * r * (c.hidden_size * 2) * ("k_proj" in t or t == "all-linear"),  # kv = hidden
])
def test_trainable_check_rejects_wrong_counts(wrong):
    with pytest.raises(AssertionError):
        lab08.check_trainable_params(wrong, cases=6)


def one_sided(a, b):
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n = only_a + only_b
    return sum(math.comb(n, j) for j in range(only_a + 1)) / 2**n if n else 1.0


def unpaired_fisher(a, b):
    from scipy.stats import fisher_exact

    n = len(a)
    return fisher_exact([[sum(a), n - sum(a)], [sum(b), n - sum(b)]]).pvalue


def uncapped(a, b):
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    return 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n if n else 1.0


@pytest.mark.parametrize("wrong", [one_sided, unpaired_fisher, uncapped])
def test_mcnemar_check_rejects_wrong_tests(wrong):
    with pytest.raises(AssertionError):
        lab08.check_mcnemar(wrong)
