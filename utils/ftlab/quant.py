"""Quantization by hand: absmax integers, block-wise scales, NF4, double quantization.

Lab 07 builds these step by step and checks them against bitsandbytes. Every
function works on plain torch tensors, so a learner can read it next to the
QLoRA paper (Dettmers et al. 2023, arXiv:2305.14314, section 3):

- ``absmax_quantize``: symmetric integers, ``q = round(x / absmax * qmax)``;
- ``blockwise_quantize``: one absmax per block of ``blocksize`` values, with
  integer levels or a code book such as ``nf4_codebook()``;
- ``double_quantize``: the block absmax values quantized again (8 bits, blocks of 256);
- ``bits_per_param``: storage cost of all that, e.g. 4.5 and 4.127 bits;
- ``weight_bytes``: bytes a loaded model really holds, bitsandbytes 4-bit layers included;
- ``set_fused_cpu_kernel`` / ``check_packed_cpu_rule``: bitsandbytes' fused 4-bit CPU
  kernel (AVX-512 BF16 CPUs), off by default in the course, and the layer-size rule it needs;
- ``time_4bit_paths``: where a 4-bit layer's CPU time goes (dequantization, bf16 matmul).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

# bitsandbytes' NF4 offset: the outermost quantile, 1 - (1/(2*15) + 1/(2*16)) / 2 = 0.9677083...
NF4_OFFSET = 1 - 0.5 * (1 / 30 + 1 / 32)


def representable_values(bits: int) -> int:
    """How many distinct values ``bits`` bits can hold: 2**bits."""
    return 2**bits


def int_qmax(bits: int) -> int:
    """Largest code of a symmetric signed integer grid: 127 for 8 bits, 7 for 4 bits."""
    if bits < 2:
        raise ValueError(f"symmetric absmax quantization needs at least 2 bits, got {bits}")
    return 2 ** (bits - 1) - 1


def absmax_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor-wise absmax quantization: int8 codes in [-qmax, qmax] and one fp32 scale.

    The largest |x| maps to qmax (127 for int8), zero stays exactly zero.
    """
    qmax = int_qmax(bits)
    absmax = x.abs().max().float().clamp(min=torch.finfo(torch.float32).tiny)  # () scalar
    codes = torch.round(x.float() / absmax * qmax).to(torch.int8)  # same shape as x
    return codes, absmax


def absmax_dequantize(codes: torch.Tensor, absmax: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Inverse of ``absmax_quantize`` (up to the rounding error)."""
    return codes.float() / int_qmax(bits) * absmax


def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 values, built from normal quantiles as in the QLoRA paper.

    Following bitsandbytes' ``create_normal_map`` (with the standard library's
    ``NormalDist.inv_cdf`` instead of scipy): 8 positive quantiles between
    ``offset`` and 0.5, 7 negative ones, and an exact zero; then scaled so the
    largest is 1. The asymmetry (8 positive, 7 negative) buys the exact zero.
    """
    normal = NormalDist()

    def quantiles(count: int) -> list[float]:  # count-1 probabilities from offset down to 0.5 (excluded)
        probs = torch.linspace(offset, 0.5, count).tolist()[:-1]
        return [normal.inv_cdf(p) for p in probs]

    values = quantiles(9) + [0.0] + [-v for v in quantiles(8)]
    code = torch.tensor(sorted(values), dtype=torch.float32)  # (16,)
    return code / code.max()


@dataclass
class BlockQuantized:
    """A block-wise quantized tensor: codes, one absmax per block, and how to decode."""

    codes: torch.Tensor  # (n_blocks, blocksize) uint8/int8 codes
    absmax: torch.Tensor  # (n_blocks,) fp32 scales
    shape: tuple[int, ...]  # original shape
    blocksize: int
    bits: int
    codebook: torch.Tensor | None  # (2**bits,) values in [-1, 1], or None for integer levels


def _blocks(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    flat = x.reshape(-1).float()  # (n,)
    pad = (-flat.numel()) % blocksize
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, blocksize)  # (n_blocks, blocksize)


def blockwise_quantize(
    x: torch.Tensor, bits: int = 4, blocksize: int = 64, codebook: torch.Tensor | None = None
) -> BlockQuantized:
    """Quantize ``x`` in blocks of ``blocksize`` values, each with its own absmax.

    Without a code book the levels are symmetric integers (absmax int4/int8);
    with one (e.g. ``nf4_codebook()``) each value is replaced by the index of
    the nearest code-book entry after dividing by its block's absmax.
    """
    blocks = _blocks(x, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)  # (n_blocks,)
    scaled = blocks / absmax[:, None]  # (n_blocks, blocksize) in [-1, 1]
    if codebook is None:
        codes = torch.round(scaled * int_qmax(bits)).to(torch.int8)
    else:
        codes = (scaled[..., None] - codebook).abs().argmin(dim=-1).to(torch.uint8)  # nearest entry
    return BlockQuantized(codes, absmax, tuple(x.shape), blocksize, bits, codebook)


def blockwise_dequantize(q: BlockQuantized, absmax: torch.Tensor | None = None) -> torch.Tensor:
    """Back to floats; ``absmax`` overrides the stored scales (e.g. double-quantized ones)."""
    scales = q.absmax if absmax is None else absmax  # (n_blocks,)
    if q.codebook is None:
        values = q.codes.float() / int_qmax(q.bits)
    else:
        values = q.codebook[q.codes.long()]
    flat = (values * scales[:, None]).reshape(-1)
    return flat[: math.prod(q.shape)].view(q.shape)


def double_quantize(absmax: torch.Tensor, bits: int = 8, blocksize: int = 256) -> torch.Tensor:
    """Quantize the block scales themselves and return them dequantized (fp32).

    QLoRA's double quantization: the fp32 absmax values (all positive) are
    centred on their mean, then absmax-quantized to ``bits`` bits in blocks of
    ``blocksize`` with one fp32 scale per block. bitsandbytes uses an 8-bit
    float code book for the second step; symmetric int8 is the simplest stand-in.
    """
    offset = absmax.mean()
    second = blockwise_quantize(absmax - offset, bits=bits, blocksize=blocksize)
    return blockwise_dequantize(second) + offset


def bits_per_param(
    bits: int = 4,
    blocksize: int = 64,
    scale_bits: int = 32,
    double_quant: bool = False,
    dq_bits: int = 8,
    dq_blocksize: int = 256,
) -> float:
    """Storage bits per weight of block-wise quantization.

    Each block of ``blocksize`` weights stores one scale: ``scale_bits / blocksize``
    extra bits per weight (32/64 = 0.5). With double quantization that scale is
    ``dq_bits`` wide and every ``dq_blocksize`` scales share one fp32 scale:
    ``dq_bits / blocksize + 32 / (blocksize * dq_blocksize)`` (8/64 + 32/16384 = 0.127).
    """
    if not double_quant:
        return bits + scale_bits / blocksize
    return bits + dq_bits / blocksize + 32 / (blocksize * dq_blocksize)


def quant_error(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """Mean squared error and largest absolute error of a reconstruction."""
    diff = (x.float() - x_hat.float()).reshape(-1)
    return {"mse": diff.pow(2).mean().item(), "max_abs": diff.abs().max().item()}


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def linear4bit_nbytes(module) -> dict[str, int]:
    """Bytes of one bitsandbytes ``Linear4bit``: packed codes and its quantization state.

    ``get_memory_footprint()`` counts only the packed uint8 weight; the absmax
    values (uint8 with double quantization), the second-level fp32 scales, the
    offset and the code books live in ``weight.quant_state``.
    """
    weight = module.weight
    state = weight.quant_state
    parts = {"codes": tensor_nbytes(weight), "absmax": tensor_nbytes(state.absmax), "code": tensor_nbytes(state.code)}
    if state.nested:
        parts["absmax2"] = tensor_nbytes(state.state2.absmax)
        parts["code2"] = tensor_nbytes(state.state2.code)
        parts["offset"] = tensor_nbytes(state.offset)
    if module.bias is not None:
        parts["bias"] = tensor_nbytes(module.bias)
    return parts


def weight_bytes(model) -> dict[str, int]:
    """Bytes of a model's weights, split into 4-bit layers and everything else.

    Returns ``{"quantized": ..., "quantized_params": ..., "other": ..., "total": ...}``
    where ``quantized_params`` is the number of original weights held in 4 bits.
    Shared (tied) tensors are counted once.
    """
    import bitsandbytes as bnb

    quantized = quantized_params = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            quantized += sum(linear4bit_nbytes(module).values())
            quantized_params += math.prod(module.weight.quant_state.shape)
            seen.update(id(p) for p in module.parameters(recurse=False))
    other = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            other += tensor_nbytes(tensor)
    return {"quantized": quantized, "quantized_params": quantized_params, "other": other, "total": quantized + other}


# ---------------------------------------------------------------------------
# bitsandbytes' fused 4-bit CPU kernel (CPUs with AVX-512 BF16 / AMX)
# ---------------------------------------------------------------------------

# On a CPU with AVX-512 BF16, bitsandbytes 0.50 repacks a Linear4bit's weight for a
# fused bf16 kernel the first time the layer runs in eval mode without gradients
# (``functional._convert_weight_packed_for_cpu``). The repacking tiles the output
# dimension in blocks of 32 rows and asserts ``N % block_n == 0``.
PACKED_CPU_BLOCK_N = 32


def cpu_has_fused_4bit() -> bool:
    """True when bitsandbytes detects AVX-512 BF16 here and may take its fused CPU path."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def packed_cpu_violations(model, block_n: int = PACKED_CPU_BLOCK_N) -> list[tuple[str, int]]:
    """``(layer name, out_features)`` of every layer the fused CPU path cannot repack.

    Checks the ``Linear4bit`` layers of a quantized model and, for a model in full
    precision, every ``nn.Linear`` except ``lm_head`` (what ``load_in_4bit`` would
    quantize). The rule: the output size is a multiple of ``block_n`` (32).
    """
    import bitsandbytes as bnb

    quantized = [(n, m) for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not quantized:  # a full-precision model: the layers from_pretrained(load_in_4bit=True) would replace
        quantized = [(n, m) for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    return [(name, module.out_features) for name, module in quantized if module.out_features % block_n]


def check_packed_cpu_rule(model, block_n: int = PACKED_CPU_BLOCK_N) -> None:
    """Raise a ``ValueError`` naming the first layer whose size breaks the fused CPU path's rule."""
    bad = packed_cpu_violations(model, block_n)
    if bad:
        name, size = bad[0]
        more = f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else ""
        raise ValueError(
            f"layer {name!r} has out_features={size}, not a multiple of {block_n}{more}: bitsandbytes' fused "
            f"4-bit CPU kernel (used on CPUs with AVX-512 BF16) repacks weights in blocks of {block_n} output rows. "
            f"Round intermediate_size / head sizes up to a multiple of {block_n}, or load with fused_cpu_kernel=False."
        )


def set_fused_cpu_kernel(model, enabled: bool) -> int:
    """Turn bitsandbytes' fused 4-bit CPU kernel on or off for every ``Linear4bit``; return the layer count.

    Off (the course default): every CPU computes the same way, dequantize then
    matmul in ``bnb_4bit_compute_dtype``, so numbers agree across machines and
    gradients always flow. On: where the CPU supports it (``cpu_has_fused_4bit``),
    eval-mode no-grad forwards run the fused bf16 kernel; the layer sizes are
    checked first so a bad size fails here, with its name, not deep in bitsandbytes.

    Switching off a layer that an eval pass already repacked restores the standard
    layout, but only approximately: the repacking stored the block absmax in bf16 and
    bitsandbytes re-quantizes it (``_convert_weight_packed_for_cpu_inverse``), so the
    layer's outputs can differ slightly from before. Load a fresh model to compare paths.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    use = enabled and cpu_has_fused_4bit()
    if use:
        check_packed_cpu_rule(model)
    for layer in layers:
        layer.support_avx512bf16_for_cpu = use
        if not use and getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            # already repacked by an earlier eval pass: restore the standard layout
            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                layer.weight.data, layer.weight.quant_state)
    return len(layers)


def time_4bit_paths(layer, x: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one ``Linear4bit`` forward, split into its parts, without the fused kernel.

    ``layer`` is a bitsandbytes ``Linear4bit`` on the CPU, ``x`` a ``(tokens, in_features)``
    fp32 input. Measures: the fp32 ``nn.Linear`` with the same (dequantized) weights;
    dequantization alone; a bf16 matmul alone (weights already bf16); and the layer
    itself with ``compute_dtype`` fp32 and bf16, which is dequantize + matmul in that
    dtype. On CPUs without bf16 matmul instructions torch emulates bf16, and the bf16
    matmul is the slow part; elsewhere dequantization dominates.
    """
    import bitsandbytes.functional as bnbF

    from ftlab.anatomy import median_seconds

    state = layer.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        raise ValueError("layer was repacked for the fused CPU kernel: call set_fused_cpu_kernel(model, False) first")
    was_fused, was_dtype = getattr(layer, "support_avx512bf16_for_cpu", False), layer.compute_dtype
    layer.support_avx512bf16_for_cpu = False  # time the standard path only
    weight = bnbF.dequantize_4bit(layer.weight.data, state).float()  # (out, in)
    dense = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    dense.weight.data = weight
    weight_bf16, x_bf16 = weight.bfloat16(), x.bfloat16()
    times = {}
    with torch.no_grad():
        times["fp32 nn.Linear"] = median_seconds(lambda: dense(x), repeats)
        times["dequantize only"] = median_seconds(lambda: bnbF.dequantize_4bit(layer.weight.data, state), repeats)
        times["bf16 matmul only"] = median_seconds(lambda: x_bf16 @ weight_bf16.t(), repeats)
        for name, dtype in (("Linear4bit, compute fp32", torch.float32), ("Linear4bit, compute bf16", torch.bfloat16)):
            layer.compute_dtype = dtype
            times[name] = median_seconds(lambda: layer(x), repeats)
    layer.compute_dtype, layer.support_avx512bf16_for_cpu = was_dtype, was_fused
    return times
