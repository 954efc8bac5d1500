"""A Llama decoder taken apart: every block written from scratch, in plain torch.

Labs 01 (architecture anatomy) and 02 (inference efficiency) build each block of
a Llama-style decoder by hand and check it against ``transformers``:

- normalisation: ``layer_norm``, ``rms_norm``
- feed-forward: ``gelu_mlp``, ``swiglu_mlp``
- positions: ``rope_cos_sin``, ``apply_rope`` (rotary position embedding)
- attention: ``causal_mask``, ``naive_attention``, ``tiled_attention``
  (the online-softmax idea behind Flash Attention), ``self_attention`` (GQA)
- the whole model: ``decoder_layer``, ``llama_forward`` (with an optional
  hand-made KV cache) and ``generate_greedy``
- sizes: ``count_parameters``, ``kv_cache_bytes``, ``cache_nbytes``,
  ``attention_score_bytes``; measurements: ``median_seconds``, ``peak_memory_bytes``,
  ``torch_threads``
- scaling laws: ``scaling_config``, ``train_and_evaluate``, ``fit_power_law``

The functions take plain weight tensors (``module.weight``), so a learner can
load any ``transformers`` Llama module's weights into them; ``tests/test_anatomy.py``
asserts that the outputs match ``LlamaRMSNorm``, ``LlamaMLP``, ``LlamaAttention``,
``LlamaDecoderLayer`` and ``LlamaForCausalLM``. Shapes use ``b`` batch, ``s``
sequence, ``h`` heads, ``d`` head_dim, ``D`` hidden size.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # one (keys, values) pair per layer, each (b, kv_h, s, d)


# ---------------------------------------------------------------- sizes


def count_parameters(module: torch.nn.Module, exclude_embeddings: bool = False) -> int:
    """Parameters of ``module``; tied weights count once.

    ``exclude_embeddings`` drops every ``nn.Embedding`` (and so a tied LM head),
    which is how Kaplan et al. (2020) count N in their scaling laws.
    """
    params = {id(p): p for p in module.parameters()}
    if exclude_embeddings:
        for sub in module.modules():
            if isinstance(sub, torch.nn.Embedding):
                params.pop(id(sub.weight), None)
    return sum(p.numel() for p in params.values())


def head_dim_of(config) -> int:
    """Per-head width of a Llama-style config (explicit ``head_dim`` wins)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, seq_len: int,
                   batch_size: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of a KV cache: 2 (K and V) x layers x kv_heads x head_dim x seq x batch x bytes."""
    return 2 * num_layers * num_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def kv_cache_bytes_for(config, seq_len: int, batch_size: int = 1, bytes_per_value: int = 2) -> int:
    """``kv_cache_bytes`` read from a Llama-style config (object or dict)."""
    get = config.get if isinstance(config, dict) else lambda k, default=None: getattr(config, k, default)
    heads = get("num_attention_heads")
    head_dim = get("head_dim") or get("hidden_size") // heads
    kv_heads = get("num_key_value_heads") or heads
    return kv_cache_bytes(get("num_hidden_layers"), kv_heads, head_dim, seq_len, batch_size, bytes_per_value)


def attention_score_bytes(num_heads: int, seq_len: int, batch_size: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of one layer's materialised score matrix (b, h, s, s) in naive attention."""
    return batch_size * num_heads * seq_len * seq_len * bytes_per_value


def cache_nbytes(past_key_values) -> int:
    """Bytes held by a cache: a transformers ``DynamicCache`` or a ``KVCache`` list."""
    if hasattr(past_key_values, "layers"):  # transformers >= 4.56 DynamicCache
        pairs = [(layer.keys, layer.values) for layer in past_key_values.layers]
    else:
        pairs = list(past_key_values)
    return sum(t.numel() * t.element_size() for pair in pairs for t in pair)


# ------------------------------------------------------- normalisation, MLP


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm: centre on the mean, divide by the standard deviation, scale and shift."""
    mean = x.mean(-1, keepdim=True)  # (..., 1)
    var = x.var(-1, keepdim=True, unbiased=False)  # (..., 1)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm: x / sqrt(mean(x^2) + eps) * g. No mean, no bias (Zhang & Sennrich 2019)."""
    x32 = x.float()  # Llama normalises in fp32 whatever the weights' dtype
    rms_inv = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
    return weight * (x32 * rms_inv).to(x.dtype)


def gelu_mlp(x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """The original Transformer/GPT-2 MLP without biases: GELU(x W_in^T) W_out^T."""
    return F.gelu(x @ w_in.T) @ w_out.T  # (..., D) -> (..., I) -> (..., D)


def swiglu_mlp(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """Llama's MLP: (Swish(x W_gate^T) * x W_up^T) W_down^T (Shazeer 2020)."""
    gate = F.silu(x @ w_gate.T)  # (..., I) Swish with beta = 1, a soft on/off switch
    up = x @ w_up.T  # (..., I) the value that passes through the gate
    return (gate * up) @ w_down.T  # (..., D)


# ------------------------------------------------------------------- RoPE


def rope_inv_freq(head_dim: int, theta: float = 10000.0, dtype: torch.dtype = torch.float32,
                  device=None) -> torch.Tensor:
    """Rotation speed of each of the head_dim/2 planes: theta^(-2i/d)."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=dtype, device=device) / head_dim)  # (d/2,)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angle position x frequency, each (s, d).

    Dimension i is paired with i + d/2 (the "rotate half" layout of Llama in
    transformers); the paper pairs neighbours (2i, 2i+1). Both are the same
    rotation applied to a permuted vector.
    """
    inv_freq = rope_inv_freq(head_dim, theta, dtype, positions.device)
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]  # (s, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (s, d)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every (i, i + d/2) plane of x by its position's angle. x: (..., s, d)."""
    return x * cos + rotate_half(x) * sin


# -------------------------------------------------------------- attention


def causal_mask(q_len: int, k_len: int | None = None, device=None) -> torch.Tensor:
    """Boolean (q_len, k_len) matrix: True where a query may look at a key.

    Queries are the last ``q_len`` positions of ``k_len``; with a KV cache the
    one new query sees every cached key and itself.
    """
    k_len = q_len if k_len is None else k_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with the full (b, h, s_q, s_k) score matrix in memory.

    q: (b, h, s_q, d); k, v: (b, h, s_k, d) -> (b, h, s_q, d).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (b, h, s_q, s_k)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (b, h, s_q, d)


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int = 64,
                    causal: bool = True) -> torch.Tensor:
    """Attention one key block at a time with an online softmax (the Flash Attention idea).

    Only a (b, h, s_q, block_size) tile of scores exists at any moment; a running
    maximum ``m`` and denominator ``l`` rescale what was accumulated so far, so
    the result equals ``naive_attention`` exactly (up to rounding). Dao et al.
    (2022) run this loop inside fast on-chip SRAM and tile the queries as well.
    """
    s_q, s_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    query_pos = torch.arange(s_k - s_q, s_k, device=q.device)[:, None]  # (s_q, 1) absolute positions of the queries
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype, device=q.device)  # running max (b, h, s_q, 1)
    l = torch.zeros_like(m)  # running softmax denominator (b, h, s_q, 1)
    acc = torch.zeros_like(q)  # running numerator @ v (b, h, s_q, d)
    for start in range(0, s_k, block_size):
        block = slice(start, start + block_size)
        scores = q @ k[..., block, :].transpose(-2, -1) / math.sqrt(d)  # (b, h, s_q, block)
        if causal:  # key j is visible to the query at position i when j <= i
            key_pos = torch.arange(start, min(start + block_size, s_k), device=q.device)[None, :]
            scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        p = torch.exp(scores - m_new)  # this block's unnormalised weights
        correction = torch.exp(m - m_new)  # shrink what earlier blocks accumulated
        l = l * correction + p.sum(-1, keepdim=True)
        acc = acc * correction + p @ v[..., block, :]
        m = m_new
    return acc / l


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(b, s, h*d) -> (b, h, s, d)."""
    b, s, _ = x.shape
    return x.view(b, s, num_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(b, h, s, d) -> (b, s, h*d)."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


def self_attention(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor,
                   num_heads: int, num_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
                   past: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Causal grouped-query self-attention with RoPE; returns (output, (keys, values)).

    x: (b, s, D). ``num_kv_heads == num_heads`` is MHA, ``1`` is MQA, anything
    between is GQA: each key/value head serves num_heads // num_kv_heads query
    heads. ``past`` holds the keys/values of earlier positions (a KV cache); the
    returned pair includes them and is what a cache stores for the next step.
    """
    q = apply_rope(split_heads(x @ wq.T, num_heads), cos, sin)  # (b, h, s, d)
    k = apply_rope(split_heads(x @ wk.T, num_kv_heads), cos, sin)  # (b, kv_h, s, d)
    v = split_heads(x @ wv.T, num_kv_heads)  # (b, kv_h, s, d)
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (b, kv_h, s_past + s, d)
    group = num_heads // num_kv_heads
    out = naive_attention(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1))
    return merge_heads(out) @ wo.T, (k, v)  # (b, s, D)


# ---------------------------------------------------------- the whole model


def decoder_layer(x: torch.Tensor, layer, config, cos: torch.Tensor, sin: torch.Tensor,
                  past: tuple[torch.Tensor, torch.Tensor] | None = None):
    """One pre-norm Llama block with the weights of a ``LlamaDecoderLayer``: x -> (x', (k, v))."""
    attn, mlp, eps = layer.self_attn, layer.mlp, config.rms_norm_eps
    h = rms_norm(x, layer.input_layernorm.weight, eps)
    a, kv = self_attention(h, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
                           config.num_attention_heads, config.num_key_value_heads, cos, sin, past)
    x = x + a  # residual around attention
    h = rms_norm(x, layer.post_attention_layernorm.weight, eps)
    return x + swiglu_mlp(h, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight), kv


def llama_forward(model, input_ids: torch.Tensor, cache: KVCache | None = None):
    """Logits of a ``LlamaForCausalLM`` computed with the blocks above.

    input_ids: (b, s). With ``cache`` (the list this function returned last
    time) only the new tokens are processed and their positions continue after
    the cached ones. Returns (logits (b, s, vocab), cache including the new tokens).
    """
    config = model.config
    start = 0 if cache is None else cache[0][0].shape[2]
    positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
    cos, sin = rope_cos_sin(positions, head_dim_of(config), config.rope_parameters["rope_theta"])
    x = model.model.embed_tokens.weight[input_ids]  # (b, s, D)
    new_cache: KVCache = []
    for i, layer in enumerate(model.model.layers):
        x, kv = decoder_layer(x, layer, config, cos, sin, None if cache is None else cache[i])
        new_cache.append(kv)
    x = rms_norm(x, model.model.norm.weight, config.rms_norm_eps)
    return x @ model.lm_head.weight.T, new_cache  # (b, s, vocab)


@torch.no_grad()
def generate_greedy(model, prompt_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
                    eos_token_id: int | None = None,
                    forward: Callable = llama_forward) -> torch.Tensor:
    """Greedy decoding, one token per step, with or without a KV cache.

    Without a cache every step runs the whole sequence again (1 + 2 + ... + n
    token positions); with it every step after the first runs one token and
    reuses the stored keys/values. Returns (1, prompt + generated) ids.
    """
    ids, cache, new = prompt_ids, None, prompt_ids
    for _ in range(max_new_tokens):
        if use_cache:
            logits, cache = forward(model, new, cache)
        else:
            logits, _ = forward(model, ids, None)
        new = logits[:, -1].argmax(-1, keepdim=True)  # (b, 1)
        ids = torch.cat([ids, new], dim=1)
        if eos_token_id is not None and bool((new == eos_token_id).all()):
            break
    return ids


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null (the profiler's C++ start/stop log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes of tensors allocated while ``fn`` runs (memory that existed before is not counted).

    On CUDA this is ``torch.cuda.max_memory_allocated`` above the starting
    level. On the CPU, ``torch.profiler`` records every allocation and free;
    replaying them in order gives the peak, including the scratch buffers that
    fused kernels such as ``scaled_dot_product_attention`` allocate inside.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for _, nbytes in records:  # positive: allocation, negative: free
        live += nbytes
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Run the block with ``num_threads`` CPU threads in torch (None: leave it unchanged).

    The labs' tiny matrices gain little from more threads, and on a CPU shared
    with other programs, spinning OpenMP threads can slow small ops down many
    times over. One thread also gives the same floating-point sums everywhere.
    """
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_seconds(fn: Callable[[], object], repeats: int = 3, device: str = "cpu") -> float:
    """Median wall time of ``repeats`` calls (robust to a noisy shared machine).

    On CUDA the clock stops only after the GPU has finished (kernels run asynchronously).
    """
    cuda = torch.device(device).type == "cuda"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ------------------------------------------------------------- scaling laws


def scaling_config(hidden_size: int, base, head_size: int = 16):
    """A ``ftlab.tiny.TinyConfig`` of width ``hidden_size``; depth, data and budget from ``base``.

    The MLP keeps Llama's ~8/3 x hidden width (rounded to a multiple of 8) and
    attention uses plain MHA with ``head_size``-wide heads.
    """
    heads = max(1, hidden_size // head_size)
    intermediate = 8 * max(1, round(hidden_size * 8 / 3 / 8))
    return replace(base, hidden_size=hidden_size, intermediate_size=intermediate,
                   num_attention_heads=heads, num_key_value_heads=heads)


@torch.no_grad()
def heldout_loss(model, stream: Sequence[int], seq_len: int, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats/token) over consecutive windows of ``stream``."""
    data = torch.tensor(stream, dtype=torch.long)
    n = len(data) // seq_len
    if n == 0:
        raise ValueError(f"held-out stream of {len(data)} tokens is shorter than one window of {seq_len}")
    windows = data[: n * seq_len].view(n, seq_len)  # (n, seq_len)
    model.eval()
    total = 0.0
    for start in range(0, n, batch_size):
        batch = windows[start : start + batch_size]
        total += model(input_ids=batch, labels=batch).loss.item() * len(batch)
    return total / n


def train_and_evaluate(config, tokenizer, train_stream: Sequence[int], heldout_stream: Sequence[int]) -> dict:
    """Pretrain one tiny Llama of ``config`` from scratch and measure its held-out loss.

    Returns parameters (all and non-embedding), tokens seen, held-out loss,
    the training loss log and the seconds it took.
    """
    from transformers import LlamaForCausalLM

    from ftlab import tiny

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(tiny.build_llama_config(config, tokenizer))
    log = tiny.pretrain(model, list(train_stream), config, log_every=max(1, config.steps // 10))
    return {
        "hidden_size": config.hidden_size,
        "parameters": count_parameters(model),
        "non_embedding_parameters": count_parameters(model, exclude_embeddings=True),
        "tokens_seen": config.steps * config.batch_size * config.seq_len,
        "heldout_loss": heldout_loss(model, heldout_stream, config.seq_len),
        "log": log,
        "seconds": time.perf_counter() - started,
    }


@dataclass(frozen=True)
class PowerLaw:
    """L(N) = a * N^(-alpha) + offset, fitted in log space."""

    a: float
    alpha: float
    offset: float = 0.0
    r_squared: float = float("nan")  # of the straight-line fit in log-log space

    def __call__(self, n: float) -> float:
        return self.a * n ** (-self.alpha) + self.offset


def fit_power_law(sizes: Sequence[float], losses: Sequence[float], offset: float = 0.0) -> PowerLaw:
    """Least-squares line through (log N, log(L - offset)): slope = -alpha.

    ``offset`` is an optional irreducible loss c (it must be below every loss).
    """
    if len(sizes) != len(losses) or len(sizes) < 2:
        raise ValueError(f"need at least two (size, loss) pairs, got {len(sizes)} sizes and {len(losses)} losses")
    if min(losses) <= offset:
        raise ValueError(f"offset {offset} must be below every loss (smallest is {min(losses)})")
    x = torch.tensor([math.log(n) for n in sizes], dtype=torch.float64)
    y = torch.tensor([math.log(v - offset) for v in losses], dtype=torch.float64)
    x_mean, y_mean = x.mean(), y.mean()
    slope = ((x - x_mean) * (y - y_mean)).sum() / ((x - x_mean) ** 2).sum()
    intercept = y_mean - slope * x_mean
    residual = ((y - (intercept + slope * x)) ** 2).sum()
    total = ((y - y_mean) ** 2).sum()
    r2 = float(1 - residual / total) if total > 0 else float("nan")
    return PowerLaw(a=math.exp(float(intercept)), alpha=-float(slope), offset=offset, r_squared=r2)
