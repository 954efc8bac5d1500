"""Checks for lab 01 (architecture anatomy): GQA attention, RoPE, RMSNorm and SwiGLU.

Every check compares the learner's function with ``torch`` and ``transformers``'
Llama code (``scaled_dot_product_attention``, ``LlamaAttention``,
``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb``, ``LlamaRMSNorm``,
``LlamaMLP``) on shapes and seeds the learner did not choose. When the answer
differs, a few diagnostic inputs name the likely mistake (mask, scaling, head
grouping, pairing of RoPE dimensions, mean subtraction, eps ...).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as hf_llama

# (batch, query heads, kv heads, seq, head_dim): MHA, GQA with 2/3/4 queries per group, MQA
ATTENTION_SHAPES = ((1, 4, 2, 6, 8), (2, 8, 2, 11, 16), (1, 6, 3, 5, 4), (2, 4, 1, 7, 8), (1, 4, 4, 9, 8))
# (head_dim, rope theta, first position, sequence length)
ROPE_CASES = ((8, 10000.0, 0, 5), (16, 10000.0, 7, 9), (32, 500000.0, 100, 4), (64, 10000.0, 3, 6))
NORM_CASES = ((2, 5, 16), (1, 7, 64), (3, 4, 48))  # (batch, seq, hidden)
MLP_CASES = ((16, 40), (32, 88), (48, 128))  # (hidden, intermediate)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol)


def _shape_hint(name: str, got, expected: torch.Tensor) -> None:
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{name} must return a torch.Tensor, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise AssertionError(f"{name}: output shape {tuple(got.shape)}, expected {tuple(expected.shape)}")


# ------------------------------------------------------------- attention


def _reference_attention(q, k, v, scale=None, causal_offset=0, group_with_repeat=False):
    """softmax(q k^T * scale + mask) v; the variants only serve to name a mistake."""
    group = q.shape[1] // k.shape[1]
    expand = (lambda t: t.repeat(1, group, 1, 1)) if group_with_repeat else (lambda t: t.repeat_interleave(group, 1))
    k, v = expand(k), expand(v)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    s = q.shape[-2]
    visible = torch.ones(s, s, dtype=torch.bool).tril(causal_offset)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), -1) @ v


def _attention_hint(fn, q, k, v, got) -> str:
    """Name the most likely mistake by comparing with deliberately wrong references."""
    if torch.isnan(got).any():
        return "NaN in the output: a row of the mask hides every key (the diagonal must stay visible: j <= i)"
    variants = {
        "the future is visible (mask must hide keys j > i, keep j <= i)": dict(causal_offset=1),
        "missing 1/sqrt(head_dim) scaling of the scores": dict(scale=1.0),
        "KV heads grouped with .repeat: query head i must use KV head i // group (repeat_interleave)":
            dict(group_with_repeat=True),
    }
    for hint, kwargs in variants.items():
        if _close(got, _reference_attention(q, k, v, **kwargs)):
            return hint
    future = k.clone(), v.clone()
    future[0][..., -1, :] += 10.0
    future[1][..., -1, :] += 10.0
    changed = fn(q, *future)
    if not torch.allclose(changed[..., :-1, :], got[..., :-1, :], atol=1e-5):
        return "changing the last key/value changed earlier outputs: the causal mask lets the past see the future"
    return "values differ from scaled_dot_product_attention (check scaling, mask and softmax dimension)"


def check_causal_gqa_attention(fn: Callable, shapes: Sequence[tuple] = ATTENTION_SHAPES, seed: int = 0) -> None:
    """``fn(q, k, v)`` equals ``F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)``.

    q: (b, h, s, d); k, v: (b, kv_h, s, d). Shapes cover MHA, GQA and MQA.
    """
    gen = torch.Generator().manual_seed(seed)
    for b, h, kv_h, s, d in shapes:
        q = torch.randn(b, h, s, d, generator=gen)
        k, v = (torch.randn(b, kv_h, s, d, generator=gen) for _ in range(2))
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        got = fn(q, k, v)
        _shape_hint("attention", got, expected)
        if not _close(got, expected):
            raise AssertionError(f"heads {h}, kv heads {kv_h}, seq {s}, head_dim {d}: {_attention_hint(fn, q, k, v, got)}")


def llama_attention_with(fn: Callable, attn: torch.nn.Module, x: torch.Tensor,
                         cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``LlamaAttention``'s forward with its core (scores, mask, softmax, sum) replaced by ``fn``."""
    b, s, _ = x.shape
    d = attn.head_dim
    q = attn.q_proj(x).view(b, s, -1, d).transpose(1, 2)  # (b, h, s, d)
    k = attn.k_proj(x).view(b, s, -1, d).transpose(1, 2)  # (b, kv_h, s, d)
    v = attn.v_proj(x).view(b, s, -1, d).transpose(1, 2)
    q, k = hf_llama.apply_rotary_pos_emb(q, k, cos, sin)
    out = fn(q, k, v)  # (b, h, s, d)
    return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))


def check_attention_in_llama(fn: Callable, kv_heads: Sequence[int] = (4, 2, 1), seq_len: int = 7, seed: int = 0) -> None:
    """``fn`` inside a random ``LlamaAttention`` (eager) gives the module's own output."""
    for kv_h in kv_heads:
        torch.manual_seed(seed + kv_h)
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=kv_h,
                             num_hidden_layers=1, vocab_size=32, max_position_embeddings=64)
        config._attn_implementation = "eager"
        attn = hf_llama.LlamaAttention(config, layer_idx=0).eval()
        x = torch.randn(2, seq_len, config.hidden_size)
        cos, sin = hf_llama.LlamaRotaryEmbedding(config)(x, torch.arange(seq_len)[None])
        mask = torch.full((seq_len, seq_len), float("-inf")).triu(1)[None, None]  # additive causal mask
        with torch.no_grad():
            expected, _ = attn(x, position_embeddings=(cos, sin), attention_mask=mask)
            got = llama_attention_with(fn, attn, x, cos, sin)
        _shape_hint("attention inside LlamaAttention", got, expected)
        if not _close(got, expected, 1e-4):
            raise AssertionError(f"LlamaAttention with {kv_h} KV heads for 4 query heads gives a different output "
                                 f"(max diff {(got - expected).abs().max():.2e}); check the head grouping")


# ------------------------------------------------------------------ RoPE


def _rope_hint(got, x, cos, sin) -> str:
    d = x.shape[-1]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    if _close(got, x * cos + torch.cat([x2, -x1], -1) * sin):
        return "rotate_half in the wrong order: it must be (-x2, x1), which rotates by +angle"
    pairs = x.view(*x.shape[:-1], d // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos[..., : d // 2], sin[..., : d // 2]
    interleaved = torch.stack([even * c - odd * s, even * s + odd * c], -1).flatten(-2)
    if _close(got, interleaved):
        return "neighbour pairs (2i, 2i+1) rotated: Llama in transformers pairs dimension i with i + d/2 (halves)"
    if not torch.allclose(got.norm(dim=-1), x.norm(dim=-1), atol=1e-4):
        return "vector lengths changed: a rotation keeps |x| (cos and sin of the same angle, x*cos + rotate_half(x)*sin)"
    return "values differ from apply_rotary_pos_emb (check the frequencies theta^(-2i/d) and the position of each row)"


def check_rope(fn: Callable, cases: Sequence[tuple] = ROPE_CASES, seed: int = 0) -> None:
    """``fn(x, positions, theta)`` equals ``apply_rotary_pos_emb`` with ``LlamaRotaryEmbedding`` cos/sin.

    x: (b, h, s, d); positions: (s,) integer positions (not always starting at 0).
    """
    gen = torch.Generator().manual_seed(seed)
    for head_dim, theta, start, s in cases:
        config = LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, num_key_value_heads=4,
                             rope_parameters={"rope_type": "default", "rope_theta": theta})
        x = torch.randn(2, 3, s, head_dim, generator=gen)
        positions = torch.arange(start, start + s)
        cos, sin = hf_llama.LlamaRotaryEmbedding(config)(x, positions[None])  # (1, s, d)
        expected, _ = hf_llama.apply_rotary_pos_emb(x, x, cos, sin)
        got = fn(x, positions, theta)
        _shape_hint("rope", got, expected)
        if not _close(got, expected, 1e-4):
            raise AssertionError(f"head_dim {head_dim}, theta {theta:g}, positions {start}..{start + s - 1}: "
                                 f"{_rope_hint(got, x, cos, sin)}")


# ------------------------------------------------------------ norm and MLP


def check_rms_norm(fn: Callable, cases: Sequence[tuple] = NORM_CASES, eps: float = 1e-5, seed: int = 0) -> None:
    """``fn(x, weight, eps)`` equals ``LlamaRMSNorm`` with random weights, on shifted and tiny inputs."""
    gen = torch.Generator().manual_seed(seed)
    for b, s, hidden in cases:
        norm = hf_llama.LlamaRMSNorm(hidden, eps=eps)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(hidden, generator=gen))
        x = torch.randn(b, s, hidden, generator=gen)
        inputs = {"random": x, "shifted by +2 (mean far from 0)": x + 2.0, "tiny values (eps matters)": x * 1e-3}
        for label, inp in inputs.items():
            with torch.no_grad():
                expected, got = norm(inp), fn(inp, norm.weight, eps)
            _shape_hint("rms_norm", got, expected)
            if _close(got, expected, 1e-4):
                continue
            centred = inp - inp.mean(-1, keepdim=True)
            if _close(got, norm.weight * centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps), 1e-4):
                raise AssertionError("the mean is subtracted: that is LayerNorm; RMSNorm only divides by sqrt(mean(x^2) + eps)")
            if _close(got, norm.weight * inp / inp.pow(2).mean(-1, keepdim=True).sqrt(), 1e-4):
                raise AssertionError(f"{label}: eps is missing inside the square root (sqrt(mean(x^2) + eps))")
            raise AssertionError(f"hidden {hidden}, {label} input: differs from LlamaRMSNorm "
                                 f"(max diff {(got - expected).abs().max():.2e}); is the weight applied?")


def check_swiglu_mlp(fn: Callable, cases: Sequence[tuple] = MLP_CASES, seed: int = 0) -> None:
    """``fn(x, w_gate, w_up, w_down)`` equals ``LlamaMLP`` with the same (random) weights."""
    for hidden, intermediate in cases:
        torch.manual_seed(seed + hidden)
        mlp = hf_llama.LlamaMLP(LlamaConfig(hidden_size=hidden, intermediate_size=intermediate,
                                            num_attention_heads=4)).eval()
        x = torch.randn(2, 5, hidden)
        w = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
        with torch.no_grad():
            expected, got = mlp(x), fn(x, *w)
            _shape_hint("swiglu_mlp", got, expected)
            if _close(got, expected, 1e-4):
                continue
            if _close(got, (F.silu(x @ w[1].T) * (x @ w[0].T)) @ w[2].T, 1e-4):
                raise AssertionError("gate and up are swapped: the activation goes on x @ w_gate^T, not on x @ w_up^T")
            if _close(got, (F.gelu(x @ w[0].T) * (x @ w[1].T)) @ w[2].T, 1e-4):
                raise AssertionError("GELU used as the gate: Llama's gate is Swish/SiLU (F.silu)")
        raise AssertionError(f"hidden {hidden}, intermediate {intermediate}: differs from LlamaMLP "
                             f"(max diff {(got - expected).abs().max():.2e})")
