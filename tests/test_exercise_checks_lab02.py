"""Lab 02 exercise checks accept the reference answers and reject plausible wrong ones."""

import pytest
import torch

from ftlab import tiny
from ftlab.checks import lab02


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return tiny.load()


@torch.no_grad()
def greedy(model, input_ids, attention_mask, max_new_tokens, mode="ok"):
    """KV-cache greedy loop; ``mode`` names a deliberate mistake."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (b, s) left padding starts at 0
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
    ids, cache = input_ids, out.past_key_values
    for step in range(max_new_tokens):
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)  # (b, 1)
        ids = torch.cat([ids, next_id], dim=1)
        if step == max_new_tokens - 1:
            break
        if mode == "no_cache":  # same tokens, but the whole sequence every step
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_id)], dim=1)
            out = model(input_ids=ids, attention_mask=attention_mask)
            continue
        if mode != "stale_mask":
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_id)], dim=1)
        if mode != "stale_position":
            positions = positions[:, -1:] + 1
        else:
            positions = positions[:, -1:]
        out = model(input_ids=next_id, attention_mask=attention_mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    return ids


def kv_cache_size(config, seq_len, batch_size=1, bytes_per_value=2, heads_key="num_key_value_heads", factor=2):
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return factor * config["num_hidden_layers"] * config[heads_key] * head_dim * seq_len * batch_size * bytes_per_value


def test_greedy_check_accepts_the_answer(model_and_tokenizer):
    lab02.check_greedy_with_kv_cache(greedy, *model_and_tokenizer, max_new_tokens=8)


@pytest.mark.parametrize("mode, hint", [
    ("no_cache", "ONE new token"),
    ("stale_mask", "attention_mask"),
    ("stale_position", "differ"),
])
def test_greedy_check_rejects_wrong_loops(model_and_tokenizer, mode, hint):
    wrong = lambda m, i, a, n: greedy(m, i, a, n, mode=mode)
    with pytest.raises(AssertionError, match=hint):
        lab02.check_greedy_with_kv_cache(wrong, *model_and_tokenizer, max_new_tokens=8)


def test_greedy_check_rejects_a_loop_without_prefill(model_and_tokenizer):
    @torch.no_grad()
    def prompt_token_by_token(model, input_ids, attention_mask, n):  # the prompt is fed one token at a time
        cache, out = None, None
        for t in range(input_ids.shape[1]):
            out = model(input_ids=input_ids[:, t : t + 1], attention_mask=attention_mask[:, : t + 1],
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        return greedy(model, input_ids, attention_mask, n)
    with pytest.raises(AssertionError, match="prefill"):
        lab02.check_greedy_with_kv_cache(prompt_token_by_token, *model_and_tokenizer, max_new_tokens=4)


def test_kv_size_check_accepts_the_formula():
    lab02.check_kv_cache_size(kv_cache_size)


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, s, b, n: kv_cache_size(c, s, b, n, heads_key="num_attention_heads"), "num_key_value_heads"),
    (lambda c, s, b, n: kv_cache_size(c, s, b, n, factor=1), "factor 2"),
    (lambda c, s, b, n: kv_cache_size({**c, "head_dim": None}, s, b, n), "head_dim"),
    (lambda c, s, b, n: kv_cache_size(c, s, 1, n), "batch"),
])
def test_kv_size_check_rejects_wrong_formulas(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab02.check_kv_cache_size(wrong)


def test_greedy_check_rejects_a_loop_that_calls_generate(model_and_tokenizer):
    def via_generate(model, input_ids, attention_mask, n):
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=n,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
    with pytest.raises(AssertionError, match="no forward call"):
        lab02.check_greedy_with_kv_cache(via_generate, *model_and_tokenizer, max_new_tokens=4)
