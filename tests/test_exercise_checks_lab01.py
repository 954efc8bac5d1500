"""Lab 01 exercise checks accept the reference answers and reject plausible wrong ones."""

import math

import pytest
import torch
import torch.nn.functional as F

from ftlab.checks import lab01


# ---------------------------------------------------------------- answers


def attention(q, k, v, repeat=torch.repeat_interleave, scale=True, diagonal=0):
    group = q.shape[1] // k.shape[1]
    k, v = repeat(k, group, dim=1), repeat(v, group, dim=1)  # (b, h, s, d)
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    s = q.shape[-2]
    visible = torch.ones(s, s, dtype=torch.bool).tril(diagonal)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ v


def tensor_repeat(t, group, dim):  # t.repeat tiles the heads: KV head i % kv_h instead of i // group
    return t.repeat(1, group, 1, 1)


def rope(x, positions, theta, layout="halves", order=1):
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions.float()[:, None] * inv_freq[None]  # (s, d/2)
    if layout == "pairs":  # neighbours (2i, 2i+1) as in the paper's notation
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * angles.cos() - odd * angles.sin(),
                            even * angles.sin() + odd * angles.cos()], -1).flatten(-2)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], -1) if order == 1 else torch.cat([x2, -x1], -1)
    return x * cos + rotated * sin


def rms_norm(x, weight, eps):
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def swiglu(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


# ------------------------------------------------------------------ tests


def test_attention_checks_accept_the_answer_and_sdpa():
    lab01.check_causal_gqa_attention(attention)
    lab01.check_attention_in_llama(attention)
    lab01.check_causal_gqa_attention(lambda q, k, v: F.scaled_dot_product_attention(
        q, k.repeat_interleave(q.shape[1] // k.shape[1], 1), v.repeat_interleave(q.shape[1] // k.shape[1], 1),
        is_causal=True))


@pytest.mark.parametrize("wrong, hint", [
    (lambda q, k, v: attention(q, k, v, diagonal=-1), "NaN"),  # the diagonal masked too
    (lambda q, k, v: attention(q, k, v, diagonal=1), "future"),  # one future key visible
    (lambda q, k, v: attention(q, k, v, scale=False), "sqrt"),
    (lambda q, k, v: attention(q, k, v, repeat=tensor_repeat), "repeat_interleave"),
])
def test_attention_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab01.check_causal_gqa_attention(wrong)


def test_llama_attention_check_rejects_wrong_grouping():
    with pytest.raises(AssertionError, match="grouping"):
        lab01.check_attention_in_llama(lambda q, k, v: attention(q, k, v, repeat=tensor_repeat))


def test_rope_check_accepts_the_answer():
    lab01.check_rope(rope)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, p, t: rope(x, p, t, order=-1), "wrong order"),
    (lambda x, p, t: rope(x, p, t, layout="pairs"), "i \\+ d/2"),
    (lambda x, p, t: rope(x, torch.arange(len(p)), t), "position"),  # positions restarted at 0
])
def test_rope_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab01.check_rope(wrong)


def test_rms_norm_and_mlp_checks_accept_the_answers():
    lab01.check_rms_norm(rms_norm)
    lab01.check_swiglu_mlp(swiglu)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, w, eps: rms_norm(x - x.mean(-1, keepdim=True), w, eps), "LayerNorm"),
    (lambda x, w, eps: rms_norm(x, w, 0.0), "eps"),
    (lambda x, w, eps: rms_norm(x, torch.ones_like(w), eps), "weight"),
])
def test_rms_norm_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab01.check_rms_norm(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, g, u, d: swiglu(x, u, g, d), "swapped"),
    (lambda x, g, u, d: (F.gelu(x @ g.T) * (x @ u.T)) @ d.T, "GELU"),
    (lambda x, g, u, d: ((x @ g.T) * (x @ u.T)) @ d.T, "LlamaMLP"),
])
def test_swiglu_check_rejects_wrong_answers(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab01.check_swiglu_mlp(wrong)
