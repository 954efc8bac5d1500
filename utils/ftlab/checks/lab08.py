"""Checks for lab 08's exercises: LoRA parameter arithmetic and the paired significance call."""

from __future__ import annotations

import random
from typing import Callable

TARGET_SETS = ("q_proj,v_proj", "all-linear", "gate_proj,up_proj,down_proj", "q_proj,k_proj,v_proj,o_proj")


def _random_llama(rng: random.Random):
    """A small random Llama config: GQA or not, tied embeddings or not."""
    from transformers import LlamaConfig

    heads = rng.choice([2, 4, 8])
    kv = rng.choice([h for h in (1, 2, 4, 8) if heads % h == 0 and h <= heads])
    head_dim = rng.choice([8, 16])
    return LlamaConfig(vocab_size=rng.choice([96, 160]), hidden_size=heads * head_dim, intermediate_size=rng.choice([48, 80, 112]),
                       num_hidden_layers=rng.choice([1, 2, 3]), num_attention_heads=heads, num_key_value_heads=kv,
                       tie_word_embeddings=rng.random() < 0.5)


def peft_trainable(config, r: int, targets: str, embeddings: bool) -> int:
    """The reference: build the model, attach peft's LoRA, count parameters that require grad."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    modules = "all-linear" if targets == "all-linear" else targets.split(",")
    lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules=modules, task_type="CAUSAL_LM",
                      modules_to_save=["embed_tokens", "lm_head"] if embeddings else None,
                      ensure_weight_tying=embeddings and config.tie_word_embeddings)
    model = get_peft_model(model, lora)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_trainable_params(fn: Callable, cases: int = 6, seed: int = 0) -> int:
    """``fn(config, r, targets, embeddings)`` equals peft's count on random configs; returns the cases checked."""
    rng = random.Random(seed)
    for _ in range(cases):
        config = _random_llama(rng)
        r, targets, embeddings = rng.choice([2, 4, 8]), rng.choice(TARGET_SETS), rng.random() < 0.5
        want = peft_trainable(config, r, targets, embeddings)
        got = fn(config, r, targets, embeddings)
        assert got == want, (
            f"r={r}, targets={targets!r}, embeddings={embeddings}, hidden {config.hidden_size}, "
            f"kv heads {config.num_key_value_heads}/{config.num_attention_heads}, tied={config.tie_word_embeddings}: "
            f"you count {got:,}, peft trains {want:,}. Hint: A is r x d_in, B is d_out x r; k/v project to "
            f"kv_heads x head_dim; all-linear includes the MLP; modules_to_save trains a copy of the whole "
            f"(vocab x hidden) weight, one per module, or one shared copy when the embeddings are tied."
        )
    return cases


def check_mcnemar(fn: Callable, cases: int = 40, seed: int = 0) -> int:
    """``fn(correct_a, correct_b)`` gives the exact two-sided McNemar p-value (ftlab.stats and scipy agree)."""
    from scipy.stats import binomtest

    from ftlab.stats import mcnemar_exact

    rng = random.Random(seed)
    for case in range(cases):
        n = rng.choice([5, 12, 20, 40, 80])
        bias = rng.choice([0.2, 0.5, 0.8])
        a = [rng.random() < 0.6 for _ in range(n)]
        b = [x if rng.random() < 0.6 else rng.random() < bias for x in a]
        if case == 0:  # identical answers: no discordant pair
            b = list(a)
        want = mcnemar_exact(a, b).p_value
        discordant = sum(x != y for x, y in zip(a, b))
        if discordant:
            only_a = sum(x and not y for x, y in zip(a, b))
            assert abs(binomtest(only_a, discordant, 0.5).pvalue - want) < 1e-12
        got = fn(a, b)
        assert abs(got - want) < 1e-9, (
            f"{n} questions, {discordant} discordant: you give p={got:.4g}, the exact two-sided test gives {want:.4g}. "
            "Hint: only questions where exactly one model is right count; under no difference each goes either way "
            "with probability 1/2; add both tails (and cap at 1)."
        )
        assert abs(fn(b, a) - got) < 1e-12, "swapping the two models must not change a two-sided p-value"
    return cases
