"""Training-memory estimator for Llama-family models (full, LoRA, QLoRA, DPO).

It predicts the peak of ``torch.cuda.max_memory_allocated()`` for one training
step from a Hugging Face ``config.json``, without loading the model::

    python -m ftlab.memory --config llama-2-7b --method qlora --batch-size 4 --seq-len 512
    python -m ftlab.memory --config llama-3-8b --method lora --lora-targets all-linear \\
        --batch-size 2 --seq-len 2048 --gradient-checkpointing --json
    python -m ftlab.memory --config path/to/config.json --method full --optimizer adamw_8bit \\
        --batch-size 1 --seq-len 1024 --precision bf16 --dpo

``--config`` takes a path to a ``config.json`` or a preset name (see ``PRESETS``).

What is exact and what is modelled
----------------------------------
Exact (tested against real modules on CPU):

- parameter counts (``LlamaForCausalLM`` / ``MistralForCausalLM`` /
  ``Qwen2ForCausalLM`` built on the meta device), LoRA parameter counts
  (``peft.get_peft_model``), NF4 bytes (``bitsandbytes.functional.quantize_4bit``),
  optimizer-state bytes (``torch.optim.AdamW``, ``bitsandbytes.optim.AdamW8bit``).
- the activations that autograd saves for one decoder layer of the
  transformers 5.x Llama code (counted with ``saved_tensors_hooks``).

Modelled (documented in ``docs/memory_calibration.md``):

- the order in which these tensors live during one step (``phases``), the
  logits/loss chain, backward buffers, and an allocator margin.

Precision regimes (``precision=``)
----------------------------------
==========  ============  ===============  ============  ========  ===========
precision   base weights  full-FT params   LoRA adapter  autocast  activations
==========  ============  ===============  ============  ========  ===========
fp32        fp32          fp32             fp32          off       fp32
bf16/fp16   16-bit        16-bit (pure)    fp32 (peft)   on        16-bit
mixed-*     fp32          fp32 (masters)   fp32          on        16-bit
==========  ============  ===============  ============  ========  ===========

"on" autocast is what ``Trainer(bf16=True)`` / ``fp16=True`` does. In pure
16-bit full fine-tuning ``torch.optim.AdamW`` keeps its two states in the
parameter dtype (4 bytes/param); with fp32 parameters they take 8 bytes/param.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

GIB = 1024**3
PRESET_DIR = Path(__file__).resolve().parent / "model_configs"
METHODS = ("full", "lora", "qlora")
PRECISIONS = ("bf16", "fp16", "fp32", "mixed-bf16", "mixed-fp16")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
ATTENTION = ("sdpa", "eager")
LOSSES = ("hf", "fused")
REQUIRED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTN_MODULES + MLP_MODULES

# NF4 storage (bitsandbytes): 4-bit codes, one absmax per block of 64 weights.
NF4_BLOCKSIZE = 64
DQ_BLOCKSIZE = 256  # double quantization: 256 absmax values share one fp32 scale
NF4_BITS = 4 + 32 / NF4_BLOCKSIZE  # 4.5
NF4_DQ_BITS = 4 + 8 / NF4_BLOCKSIZE + 32 / (NF4_BLOCKSIZE * DQ_BLOCKSIZE)  # 4.127
BNB_8BIT_MIN_SIZE = 4096  # bitsandbytes keeps 32-bit states below this numel
BNB_8BIT_BLOCKSIZE = 256  # one fp32 absmax per 256 values of each 8-bit state
BNB_PAGED_MIN_NUMEL = 100_000  # smaller states are not paged (bnb get_state_buffer)
FUSED_TOKEN_TILE = 4096  # trl 1.16 chunked LM head: tokens per projection tile
FUSED_VOCAB_TILE = 32768  # trl 1.16 chunked LM head: vocabulary width per tile
MARGIN_FRACTION = 0.03  # allocator rounding, cuBLAS workspace, small tensors
MARGIN_BYTES = 256 * 1024**2


def preset_names() -> list[str]:
    """Names of the shipped model configs (``llama-2-7b``, ``qwen2.5-1.5b``, ...)."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


PRESETS = preset_names()


def preset_config(name: str) -> dict:
    """The shipped ``config.json`` of a preset as a dict, ready for ``LlamaConfig(**...)``
    (our ``_source`` note removed)."""
    _, raw = _read_config(name)
    return {key: value for key, value in raw.items() if not key.startswith("_")}


# ---------------------------------------------------------------------------
# Model description
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """The fields of a Llama-family ``config.json`` the estimator needs."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has q/k/v biases, Llama's attention_bias adds o too
    o_bias: bool = False
    mlp_bias: bool = False
    model_type: str = "llama"

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim


def _read_config(config) -> tuple[str, dict]:
    """Return (name, dict) for a preset name, a config.json path, a dict or a transformers config."""
    if hasattr(config, "to_dict"):  # transformers PretrainedConfig, e.g. model.config
        config = config.to_dict()
    if isinstance(config, dict):
        return config.get("_name_or_path") or "custom", config
    text = str(config)
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise ValueError(f"config file not found: {path}")
        return path.stem if path.name != "config.json" else path.parent.name, json.loads(path.read_text())
    if text in PRESETS:
        return text, json.loads((PRESET_DIR / f"{text}.json").read_text())
    raise ValueError(f"unknown preset {text!r}: use a path to a config.json or one of {', '.join(PRESETS)}")


def _positive_int(raw: dict, key: str, name: str) -> int:
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: config field {key!r} must be a positive integer, got {value!r}")
    return value


def load_model_spec(config) -> ModelSpec:
    """Read a preset name, a ``config.json`` path, a dict or ``model.config`` into a :class:`ModelSpec`.

    Missing required fields raise ``ValueError`` naming the field. Defaults follow
    ``LlamaConfig``: ``num_key_value_heads`` = heads, ``head_dim`` = hidden / heads.
    """
    name, raw = _read_config(config)
    missing = [key for key in REQUIRED_FIELDS if key not in raw]
    if missing:
        raise ValueError(f"{name}: config is missing required field(s) {', '.join(missing)}")
    sizes = {key: _positive_int(raw, key, name) for key in REQUIRED_FIELDS}
    heads = sizes["num_attention_heads"]
    raw = {"num_key_value_heads": heads, **raw}
    kv_heads = _positive_int(raw, "num_key_value_heads", name)
    if heads % kv_heads:
        raise ValueError(f"{name}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})")
    head_dim = raw.get("head_dim") or sizes["hidden_size"] // heads
    model_type = raw.get("model_type", "llama")
    attention_bias = bool(raw.get("attention_bias", False))
    qwen2 = model_type == "qwen2"  # Qwen2Attention: q/k/v always biased, o never
    return ModelSpec(
        name=name,
        **sizes,
        num_key_value_heads=kv_heads,
        head_dim=int(head_dim),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=qwen2 or attention_bias,
        o_bias=attention_bias and not qwen2,
        mlp_bias=bool(raw.get("mlp_bias", False)),
        model_type=model_type,
    )


def linear_shapes(spec: ModelSpec) -> dict[str, tuple[int, int, bool]]:
    """(in_features, out_features, has_bias) of each linear module in one decoder layer."""
    h, i = spec.hidden_size, spec.intermediate_size
    return {
        "q_proj": (h, spec.q_dim, spec.qkv_bias),
        "k_proj": (h, spec.kv_dim, spec.qkv_bias),
        "v_proj": (h, spec.kv_dim, spec.qkv_bias),
        "o_proj": (spec.q_dim, h, spec.o_bias),
        "gate_proj": (h, i, spec.mlp_bias),
        "up_proj": (h, i, spec.mlp_bias),
        "down_proj": (i, h, spec.mlp_bias),
    }


def parameter_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``*ForCausalLM`` with its shape, named like ``named_parameters()``.

    A tied ``lm_head`` shares the embedding tensor, so it is not listed (as in PyTorch).
    """
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (spec.vocab_size, spec.hidden_size)}
    for layer in range(spec.num_hidden_layers):
        prefix = f"model.layers.{layer}"
        for module, (fan_in, fan_out, bias) in linear_shapes(spec).items():
            group = "self_attn" if module in ATTN_MODULES else "mlp"
            shapes[f"{prefix}.{group}.{module}.weight"] = (fan_out, fan_in)
            if bias:
                shapes[f"{prefix}.{group}.{module}.bias"] = (fan_out,)
        shapes[f"{prefix}.input_layernorm.weight"] = (spec.hidden_size,)
        shapes[f"{prefix}.post_attention_layernorm.weight"] = (spec.hidden_size,)
    shapes["model.norm.weight"] = (spec.hidden_size,)
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, spec.hidden_size)
    return shapes


def count_parameters(spec: ModelSpec) -> int:
    """Exact number of parameters, equal to ``sum(p.numel() for p in model.parameters())``."""
    return sum(math.prod(shape) for shape in parameter_shapes(spec).values())


def resolve_lora_targets(targets: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn ``"q_proj,v_proj"``, ``"all-linear"`` or a list into module names.

    ``all-linear`` follows peft: every linear layer of the decoder, not ``lm_head``.
    """
    if isinstance(targets, str):
        if targets.strip() == "all-linear":
            return LINEAR_MODULES
        targets = [part.strip() for part in targets.split(",") if part.strip()]
    unknown = [name for name in targets if name not in LINEAR_MODULES]
    if unknown or not targets:
        raise ValueError(
            f"unknown LoRA target(s) {unknown or targets}: use 'all-linear' or names from {', '.join(LINEAR_MODULES)}"
        )
    return tuple(dict.fromkeys(targets))


def lora_parameter_shapes(spec: ModelSpec, r: int, targets) -> list[tuple[int, ...]]:
    """Shapes of the LoRA A (r x in) and B (out x r) matrices over the whole model."""
    if r <= 0:
        raise ValueError(f"--lora-r must be positive, got {r}")
    shapes = []
    for module in resolve_lora_targets(targets):
        fan_in, fan_out, _ = linear_shapes(spec)[module]
        shapes += [(r, fan_in), (fan_out, r)] * spec.num_hidden_layers
    return shapes


def count_lora_parameters(spec: ModelSpec, r: int = 8, targets="q_proj,v_proj") -> int:
    """Trainable LoRA parameters: r x (in + out) per adapted linear layer.

    Llama-2-7B, r=8 on q_proj and v_proj: 32 layers x 2 x 8 x (4096 + 4096) = 4,194,304.
    """
    return sum(math.prod(shape) for shape in lora_parameter_shapes(spec, r, targets))


# ---------------------------------------------------------------------------
# Weights: 16/32-bit and NF4
# ---------------------------------------------------------------------------


def nf4_bytes(numel: int, blocksize: int = NF4_BLOCKSIZE, double_quant: bool = True) -> int:
    """Bytes bitsandbytes stores for one NF4-quantized weight of ``numel`` values.

    Layout of ``bitsandbytes.functional.quantize_4bit`` (QLoRA, Dettmers et al.
    2023, arXiv:2305.14314, section 3):

    - codes: two 4-bit values per byte, ``ceil(numel / 2)`` bytes;
    - one absmax scale per block of 64 weights: fp32 (32 bits / 64 = 0.5 bit per
      weight), so NF4 costs 4 + 0.5 = **4.5 bits** per weight;
    - with double quantization the absmax values are themselves quantized to
      8 bits (8 / 64 = 0.125 bit) and every 256 of them share one fp32 scale
      (32 / (64 x 256) = 0.00195 bit): 4 + 0.125 + 0.002 = **4.127 bits** per
      weight, the paper's "0.127 bits per parameter" for the constants;
    - a 16-value fp32 NF4 code book (64 bytes) per weight, plus with double
      quantization one fp32 offset (4 bytes) and the 256-entry fp32 code book of
      the 8-bit absmax values (1 KiB; each layer holds its own copy once
      ``from_pretrained`` has moved the quantization state to the device).
    """
    blocks = math.ceil(numel / blocksize)
    codes = math.ceil(numel / 2) + 16 * 4
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * math.ceil(blocks / DQ_BLOCKSIZE) + 4 + 256 * 4


def nf4_bits_per_weight(double_quant: bool = True) -> float:
    """4.5 bits without double quantization, 4.127 with it (large-matrix limit)."""
    return NF4_DQ_BITS if double_quant else NF4_BITS


@dataclass
class Regime:
    """Storage and compute dtypes (in bytes) implied by method and precision."""

    base: int  # non-quantized base weights
    trainable: int  # trainable parameters (full FT params or LoRA adapters)
    compute: int  # matmul / autocast dtype
    autocast: bool
    residual: int  # dtype of the hidden states between layers
    norm_weight: int
    linear_out: int  # dtype of q/k/v/gate/up outputs


def precision_regime(method: str, precision: str, kbit_upcast: bool = True, autocast: bool | None = None) -> Regime:
    """Dtypes that transformers/peft/bitsandbytes use for a method and precision.

    - peft creates LoRA adapters in fp32 (``autocast_adapter_dtype=True``);
    - ``peft.prepare_model_for_kbit_training`` (``kbit_upcast``) casts every
      non-NF4 parameter of a QLoRA model (embeddings, norms, lm_head) to fp32, so
      the residual stream becomes fp32 and ``bnb.nn.Linear4bit`` casts its output
      back to that dtype;
    - ``Trainer(bf16=True)`` runs the forward under autocast (``autocast=None``
      means: on for every precision but fp32; pass False for a model loaded in
      16 bit and trained without ``bf16=True``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    half = precision in ("bf16", "fp16")
    compute = 4 if precision == "fp32" else 2
    base = 2 if half else 4
    autocast = precision != "fp32" if autocast is None else autocast
    trainable = base if method == "full" else 4
    if method == "qlora" and kbit_upcast:
        base = 4
    residual = base
    linear_out = compute if method != "qlora" else max(base, residual)
    if method != "qlora" and not autocast:
        linear_out = base
    return Regime(base, trainable, compute, autocast, residual, base, linear_out)


@dataclass
class WeightBytes:
    """Weight memory split into NF4 linears and everything kept in 16/32 bit."""

    quantized: int
    unquantized: int
    lora: int
    total: int
    quantized_params: int
    unquantized_params: int


def weight_bytes(spec: ModelSpec, method: str, regime: Regime, lora_params: int = 0, double_quant: bool = True) -> WeightBytes:
    """Bytes of all parameters on the device.

    QLoRA (transformers ``replace_with_bnb_linear``) quantizes every ``nn.Linear``
    except the output embeddings (``get_keys_to_not_convert``: ``lm_head`` and
    tied weights). Embeddings and RMSNorm weights are not ``nn.Linear`` and stay
    in ``regime.base``; so do the q/k/v biases of Qwen2 (``Linear4bit.bias``).
    """
    quantized = quantized_params = 0
    unquantized_params = 0
    for name, shape in parameter_shapes(spec).items():
        numel = math.prod(shape)
        is_linear_weight = ".layers." in name and name.endswith("proj.weight")
        if method == "qlora" and is_linear_weight:
            quantized += nf4_bytes(numel, double_quant=double_quant)
            quantized_params += numel
        else:
            unquantized_params += numel
    unquantized = unquantized_params * regime.base
    lora = lora_params * regime.trainable
    return WeightBytes(quantized, unquantized, lora, quantized + unquantized + lora, quantized_params, unquantized_params)


# ---------------------------------------------------------------------------
# Optimizer states
# ---------------------------------------------------------------------------


@dataclass
class OptimizerBytes:
    """Optimizer memory: on the device, in paged (CUDA managed) memory, and step temporaries."""

    device: int
    paged: int
    step_temp: int

    @property
    def total(self) -> int:
        return self.device + self.paged


def optimizer_state_bytes(
    numels: list[int], optimizer: str = "adamw", param_bytes: int = 4, adamw_impl: str = "fused"
) -> OptimizerBytes:
    """State bytes for trainable tensors of the given sizes.

    - ``adamw`` (``torch.optim.AdamW``): ``exp_avg`` and ``exp_avg_sq`` in the
      parameter dtype: 8 bytes/param for fp32 parameters, 4 for bf16. The step
      counters are host-side scalars (not counted). The ``foreach``
      implementation (the default of ``torch.optim.AdamW`` on CUDA) allocates
      ``sqrt(exp_avg_sq)`` for all tensors at once during ``step()``; the fused
      one (the default of transformers' Trainer with torch >= 2.8) does not.
    - ``adamw_8bit`` (bitsandbytes): two uint8 states (2 bytes/param) plus one
      fp32 absmax per 256 values per state; tensors under 4096 values keep
      fp32 states (8 bytes/param); two 256-entry fp32 code books are shared.
    - ``paged_adamw_8bit``: the same sizes, but states of tensors with at least
      100,000 values live in CUDA managed memory, which
      ``torch.cuda.max_memory_allocated`` does not count.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if adamw_impl not in ("fused", "foreach"):
        raise ValueError(f"unknown AdamW implementation {adamw_impl!r}: use fused or foreach")
    if optimizer == "adamw":
        states = 2 * param_bytes * sum(numels)
        temp = param_bytes * sum(numels) if adamw_impl == "foreach" else 0
        return OptimizerBytes(states, 0, temp)
    device = paged = 0
    for numel in numels:
        if numel < BNB_8BIT_MIN_SIZE:
            size = 8 * numel
        else:
            size = 2 * numel + 2 * 4 * math.ceil(numel / BNB_8BIT_BLOCKSIZE)
        if optimizer == "paged_adamw_8bit" and numel >= BNB_PAGED_MIN_NUMEL:
            paged += 2 * numel
            device += size - 2 * numel
        else:
            device += size
    if any(numel >= BNB_8BIT_MIN_SIZE for numel in numels):
        device += 2 * 256 * 4  # qmap1 / qmap2
    return OptimizerBytes(device, paged, 0)


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


def _lora_input_bytes(d_in: int, regime: Regime, input_bytes: int, dropout: bool) -> tuple[int, bool]:
    """Bytes per token one LoRA branch saves for its input, and whether that tensor is shared.

    peft casts the input to the fp32 adapter dtype; under autocast ``lora_A``
    then saves a 16-bit copy per module. Without autocast it saves the fp32
    tensor itself when no cast was needed, which other modules reading the same
    input share.
    """
    mask = d_in if dropout else 0  # dropout keeps a bool mask
    if regime.autocast:
        return regime.compute * d_in + mask, False
    shared = input_bytes == 4 and not dropout
    return 4 * d_in + mask, shared


def _lora_layer_bytes(spec, regime, norm_out, attn, targets, r, dropout) -> int:
    """Saved bytes per token of all LoRA branches in one layer (inputs and A outputs)."""
    total, shared_groups = 0, set()
    groups = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in", "up_proj": "mlp_in"}
    input_bytes = {"o_proj": attn, "down_proj": regime.linear_out}
    for module in resolve_lora_targets(targets):
        d_in = linear_shapes(spec)[module][0]
        size, shared = _lora_input_bytes(d_in, regime, input_bytes.get(module, norm_out), dropout)
        group = groups.get(module, module)
        already_saved = shared and (group in shared_groups or module == "o_proj")  # o_proj reads SDPA's saved output
        if not already_saved:
            total += size
        if shared:
            shared_groups.add(group)
        total += (regime.compute if regime.autocast else 4) * r
    return total


def layer_activation_terms(
    spec: ModelSpec,
    method: str,
    regime: Regime,
    seq_len: int,
    lora_targets=(),
    lora_r: int = 0,
    lora_dropout: bool = False,
    attention: str = "sdpa",
) -> dict[str, int]:
    """Bytes per token that autograd saves in one decoder layer, by source.

    Adapted from Korthikanti et al. 2022, "Reducing Activation Recomputation in
    Large Transformer Models" (arXiv:2205.05198, section 4.1: 34·s·b·h + 5·a·s²·b
    bytes per GPT layer), recounted for the transformers 5.x Llama layer:
    RMSNorm (fp32 input, rsqrt), SwiGLU (gate, silu, up, product: intermediate
    size instead of 4h), grouped-query attention (k and v at ``kv_dim``), no
    dropout. With SDPA (flash / memory-efficient kernels) attention saves q, k,
    v, its output and an fp32 log-sum-exp per head: no s x s term. Eager
    attention saves the fp32 softmax and its 16-bit copy, (4 + 2)·heads·s bytes
    per token: the quadratic term of the paper. Frozen linear layers (LoRA,
    QLoRA) save no input; their LoRA branches save a cast copy of it.
    """
    h, i, heads = spec.hidden_size, spec.intermediate_size, spec.num_attention_heads
    full = method == "full"
    r, c = regime.residual, regime.compute
    norm_out = max(regime.norm_weight, r)
    attn = c if regime.autocast else regime.linear_out
    mlp = regime.linear_out
    cast = regime.autocast and norm_out != c  # autocast casts the input once per consumer
    terms = {
        "rmsnorm (x2)": 2 * (4 * h + 4 + (r * h if full else 0)),
        "q/k/v input": (3 * c * h if cast else norm_out * h) if full else 0,
        "gate/up input": (2 * c * h if cast else norm_out * h) if full else 0,
        "down input": (c if regime.autocast else mlp) * i if full else 0,
        "swiglu (gate, silu, up)": 3 * mlp * i,
    }
    if attention == "sdpa":
        terms["attention q,k,v,out,lse"] = attn * (2 * spec.q_dim + 2 * spec.kv_dim) + 4 * heads
    elif attention == "eager":
        probs = 4 + (attn if attn != 4 else 0)
        terms["attention q,k,v (repeated),out"] = attn * 4 * spec.q_dim
        terms["attention scores (s x s)"] = probs * heads * seq_len
    else:
        raise ValueError(f"unknown attention {attention!r}: use one of {', '.join(ATTENTION)}")
    if not full and lora_r:
        terms["lora branches"] = _lora_layer_bytes(spec, regime, norm_out, attn, lora_targets, lora_r, lora_dropout)
    return terms


def kv_cache_bytes(spec: ModelSpec, batch_size: int, seq_len: int, dtype_bytes: int = 2) -> int:
    """Inference KV cache: keys and values of every layer, 2 x L x kv_dim x tokens x bytes."""
    return 2 * spec.num_hidden_layers * spec.kv_dim * batch_size * seq_len * dtype_bytes


def autocast_weight_copy_params(spec: ModelSpec, method: str, regime: Regime, lora_r: int = 0, lora_targets=()) -> tuple[int, int]:
    """(per decoder layer, lm_head) parameters whose 16-bit autocast copy is saved for backward.

    Under autocast a linear layer with fp32 weights casts them to 16 bit and,
    when its input needs a gradient, saves that copy: all linears (and
    ``lm_head``) in mixed precision, the fp32 LoRA adapters, and the fp32
    ``lm_head`` of an upcast QLoRA model.
    """
    if not regime.autocast or regime.compute == 4:
        return 0, 0
    per_layer = 0
    if regime.trainable == 4 and method != "full" and lora_r:
        per_layer += sum(lora_r * sum(linear_shapes(spec)[m][:2]) for m in resolve_lora_targets(lora_targets))
    if regime.base == 4 and method != "qlora":
        per_layer += sum(math.prod(linear_shapes(spec)[m][:2]) for m in LINEAR_MODULES)
    lm_head = spec.vocab_size * spec.hidden_size if regime.base == 4 else 0
    return per_layer, lm_head


def _frozen_input_savings(spec, method, regime, tokens, lora_targets, lora_r) -> int:
    """Bytes layer 0 does not save when the embedding output needs no gradient.

    With frozen embeddings (LoRA, QLoRA) and no ``enable_input_require_grads``
    (which gradient checkpointing turns on), the first RMSNorm saves nothing,
    and neither do the autocast copies of the weights that read its output.
    """
    h = spec.hidden_size
    savings = (4 * h + 4) * tokens
    if regime.autocast and regime.compute != 4:
        readers = ("q_proj", "k_proj", "v_proj")
        if regime.trainable == 4 and lora_r:
            adapted = sum(m in readers for m in resolve_lora_targets(lora_targets))
            savings += regime.compute * lora_r * h * adapted  # lora_A weights (r x h)
        if regime.base == 4 and method != "qlora":
            savings += regime.compute * sum(math.prod(linear_shapes(spec)[m][:2]) for m in readers)
    return savings


@dataclass
class ActivationBytes:
    """Saved activations of one forward pass (bytes), with and without checkpointing."""

    per_layer_per_token: dict[str, int]
    layer: int  # one decoder layer, all tokens
    layers: int  # all decoder layers (no checkpointing)
    checkpoints: int  # layer inputs kept by gradient checkpointing
    head: int  # final norm, lm_head input, embedding indices, rotary tables
    weight_copies: int  # autocast 16-bit weight copies (all layers)
    weight_copies_layer: int  # the same for one layer (recomputed under checkpointing)
    total: int  # what stays saved at the end of the forward pass

    @property
    def without_checkpointing(self) -> int:
        return self.layers + self.head + self.weight_copies


def activation_bytes(
    spec: ModelSpec,
    method: str,
    regime: Regime,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool = False,
    lora_targets=(),
    lora_r: int = 0,
    lora_dropout: bool = False,
    attention: str = "sdpa",
) -> ActivationBytes:
    """Activation memory kept from the forward to the backward pass (logits excluded)."""
    tokens = batch_size * seq_len
    full = method == "full"
    terms = layer_activation_terms(spec, method, regime, seq_len, lora_targets, lora_r, lora_dropout, attention)
    layer = sum(terms.values()) * tokens
    h, r = spec.hidden_size, regime.residual
    norm_out = max(regime.norm_weight, r)
    lm_in = (regime.compute if regime.autocast and norm_out != regime.compute else norm_out) if full else 0
    head_per_token = (4 * h + 4 + (r * h if full else 0)) + lm_in * h + (8 if full else 0)
    rotary = 2 * seq_len * spec.head_dim * r
    head = head_per_token * tokens + rotary
    copies_layer, copies_head = (n * regime.compute for n in autocast_weight_copy_params(spec, method, regime, lora_r, lora_targets))
    copies = copies_layer * spec.num_hidden_layers + copies_head
    layers = layer * spec.num_hidden_layers
    if not full and not gradient_checkpointing:
        layers -= _frozen_input_savings(spec, method, regime, tokens, lora_targets, lora_r)
    checkpoints = r * h * tokens * spec.num_hidden_layers
    if gradient_checkpointing:
        total = checkpoints + head + copies_head
    else:
        total = layers + head + copies
    return ActivationBytes(terms, layer, layers, checkpoints, head, copies, copies_layer, total)


# ---------------------------------------------------------------------------
# Logits, phases and the estimate
# ---------------------------------------------------------------------------


def logits_bytes(spec: ModelSpec, tokens: int, regime: Regime, loss: str = "hf", lm_head_trainable: bool = False) -> int:
    """Peak bytes of the logits and loss chain (at the start of the backward pass).

    ``hf`` (transformers ``ForCausalLMLoss``): the fp32 log-softmax saved by
    ``cross_entropy`` (4 bytes per token per vocabulary entry), the incoming
    gradient (4) and the gradient of the logits (4): 12 x tokens x vocab. In the
    forward pass the 16-bit logits, their fp32 copy and the log-softmax coexist
    (2 + 4 + 4 = 10). ``fused`` (trl >= 1.16 ``SFTTrainer``/``DPOTrainer``
    chunked LM head): one projection tile of at most 4096 tokens x 32768 vocab
    entries, plus fp32 gradients of the hidden states (and of ``lm_head`` when
    it trains).
    """
    if loss == "hf":
        return 12 * spec.vocab_size * tokens
    if loss != "fused":
        raise ValueError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    tile = min(tokens, FUSED_TOKEN_TILE) * min(spec.vocab_size, FUSED_VOCAB_TILE) * regime.compute
    grads = 4 * tokens * spec.hidden_size + (4 * spec.vocab_size * spec.hidden_size if lm_head_trainable else 0)
    return tile + grads + 8 * tokens


def saved_loss_bytes(vocab_size: int, tokens: int) -> int:
    """What ``cross_entropy`` saves for backward: the fp32 log-softmax, the int64 labels and
    one fp32 scalar (the logits chain at its peak is :func:`logits_bytes`)."""
    return 4 * vocab_size * tokens + 8 * tokens + 4


def backward_buffer_bytes(spec: ModelSpec, tokens: int, regime: Regime) -> int:
    """Transient gradients inside one layer's backward: about two intermediate-size
    tensors and two hidden-size tensors per token (calibrated on CPU with
    ``torch.distributed._tools.mem_tracker.MemTracker``)."""
    return tokens * (2 * regime.linear_out * spec.intermediate_size + 2 * max(regime.residual, regime.compute) * spec.hidden_size)


@dataclass
class MemoryEstimate:
    """Predicted memory of one training step; every ``*_bytes`` field is in bytes."""

    model: str
    method: str
    precision: str
    optimizer: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    dpo: bool
    total_params: int
    trainable_params: int
    weights_bytes: int
    quantized_weights_bytes: int
    lora_weights_bytes: int
    reference_weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    optimizer_paged_bytes: int
    optimizer_step_temp_bytes: int
    activations_bytes: int
    activations_per_layer_bytes: int
    logits_bytes: int
    backward_buffer_bytes: int
    margin_bytes: int
    peak_bytes: int
    peak_phase: str
    phases: dict[str, int] = field(default_factory=dict)
    activation_terms_per_token: dict[str, int] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def to_dict(self) -> dict:
        """Plain dict for ``json.dumps`` (adds ``peak_gib``)."""
        return {**asdict(self), "peak_gib": round(self.peak_gib, 3)}


def _check_sizes(batch_size: int, seq_len: int, lora_r: int) -> None:
    for name, value in (("--batch-size", batch_size), ("--seq-len", seq_len), ("--lora-r", lora_r)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


SAVABLE_MODULES = ("embed_tokens", "lm_head")


def _check_modules_to_save(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in SAVABLE_MODULES]
    if unknown:
        raise ValueError(f"modules_to_save {unknown}: the estimator knows {', '.join(SAVABLE_MODULES)}")
    return tuple(dict.fromkeys(names))


def estimate_training_memory(
    config: str | Path | dict | ModelSpec,
    method: str = "lora",
    batch_size: int = 1,
    seq_len: int = 512,
    lora_r: int = 8,
    lora_targets="q_proj,v_proj",
    gradient_checkpointing: bool = False,
    optimizer: str = "adamw",
    precision: str = "bf16",
    double_quant: bool = True,
    dpo: bool = False,
    attention: str = "sdpa",
    loss: str | None = None,
    adamw_impl: str = "fused",
    kbit_upcast: bool = True,
    lora_dropout: float = 0.0,
    autocast: bool | None = None,
    modules_to_save: Sequence[str] = (),
) -> MemoryEstimate:
    """Predict ``torch.cuda.max_memory_allocated()`` for one training step.

    ``modules_to_save`` (LoRA/QLoRA only): ``"embed_tokens"`` and/or ``"lm_head"``
    trained in full next to the adapters, as ``peft.LoraConfig(modules_to_save=...,
    ensure_weight_tying=True)`` does: a trainable copy of the (vocab x hidden) weight
    per module, or one shared copy when the model ties the two.

    The step is split into phases (forward end, loss backward, layer backward,
    optimizer step); each phase sums the tensors alive then, and the peak is the
    largest phase plus a margin (3 % + 256 MiB) for allocator rounding, cuBLAS
    workspaces and small tensors. ``loss`` defaults to ``"hf"`` (materialised
    logits), except for DPO where trl 1.16 always uses its chunked LM head.
    """
    spec = config if isinstance(config, ModelSpec) else load_model_spec(config)
    _check_sizes(batch_size, seq_len, lora_r)
    regime = precision_regime(method, precision, kbit_upcast, autocast)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    loss = loss or ("fused" if dpo else "hf")
    full = method == "full"
    targets = () if full else resolve_lora_targets(lora_targets)
    r = 0 if full else lora_r
    trainable_shapes = list(parameter_shapes(spec).values()) if full else lora_parameter_shapes(spec, r, targets)
    saved = () if full else _check_modules_to_save(modules_to_save)
    copies = 1 if (spec.tie_word_embeddings and len(saved) == 2) else len(saved)  # tied: one shared copy
    trainable_shapes += [(spec.vocab_size, spec.hidden_size)] * copies
    numels = [math.prod(shape) for shape in trainable_shapes]
    trainable = sum(numels)
    weights = weight_bytes(spec, method, regime, 0 if full else trainable, double_quant)
    reference = count_parameters(spec) * regime.base if (dpo and full) else 0
    grads = trainable * regime.trainable
    opt = optimizer_state_bytes(numels, optimizer, regime.trainable, adamw_impl)
    tokens = batch_size * seq_len * (2 if dpo else 1)  # DPO: chosen + rejected in one batch
    act = activation_bytes(spec, method, regime, batch_size * (2 if dpo else 1), seq_len, gradient_checkpointing, targets, r, lora_dropout > 0, attention)
    lm_trainable = full or "lm_head" in saved
    logits = logits_bytes(spec, tokens, regime, loss, lm_trainable)
    buffers = backward_buffer_bytes(spec, tokens, regime)
    head_grad = spec.vocab_size * spec.hidden_size * regime.trainable if lm_trainable else 0
    layer_grad = sum(math.prod(linear_shapes(spec)[m][:2]) for m in LINEAR_MODULES) * regime.trainable if full else 0
    recompute = act.layer + act.weight_copies_layer if gradient_checkpointing else 0
    static = weights.total + reference + opt.device
    phases = {
        "forward + loss": static + act.total + (logits * 10 // 12 if loss == "hf" else logits),
        "backward: loss and lm_head": static + act.total + logits,
        "backward: decoder layers": static + act.total + recompute + buffers + head_grad + layer_grad,
        "optimizer step": static + grads + opt.step_temp,
    }
    if dpo:  # trl runs the reference forward after the policy forward, under no_grad
        no_grad_layer = tokens * regime.compute * (3 * spec.intermediate_size + 4 * spec.hidden_size)
        ref_forward = no_grad_layer + min(tokens, FUSED_TOKEN_TILE) * min(spec.vocab_size, FUSED_VOCAB_TILE) * regime.compute
        phases["reference forward (no grad)"] = static + act.total + ref_forward
    phase, top = max(phases.items(), key=lambda item: item[1])
    margin = int(MARGIN_FRACTION * top) + MARGIN_BYTES
    return MemoryEstimate(
        model=spec.name, method=method, precision=precision, optimizer=optimizer,
        batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=gradient_checkpointing, dpo=dpo,
        total_params=count_parameters(spec), trainable_params=trainable,
        weights_bytes=weights.total, quantized_weights_bytes=weights.quantized, lora_weights_bytes=weights.lora,
        reference_weights_bytes=reference, gradients_bytes=grads, optimizer_bytes=opt.device,
        optimizer_paged_bytes=opt.paged, optimizer_step_temp_bytes=opt.step_temp,
        activations_bytes=act.total, activations_per_layer_bytes=act.layer, logits_bytes=logits,
        backward_buffer_bytes=buffers, margin_bytes=margin, peak_bytes=top + margin, peak_phase=phase,
        phases=phases, activation_terms_per_token=act.per_layer_per_token,
        assumptions=_assumptions(spec, method, precision, optimizer, regime, loss, attention, adamw_impl,
                                 gradient_checkpointing, double_quant, kbit_upcast, dpo, lora_dropout),
    )


def _assumptions(spec, method, precision, optimizer, regime, loss, attention, adamw_impl, ckpt, dq, upcast, dpo, lora_dropout) -> list[str]:
    """Human-readable list of what the estimate assumes (printed and in --json)."""
    notes = [
        f"transformers 5.x {spec.model_type} code, attn_implementation={attention!r}"
        + (" (flash/memory-efficient kernel: no seq x seq scores)" if attention == "sdpa" else " (saves seq x seq scores)"),
        f"precision {precision}: {'non-NF4 ' if method == 'qlora' else ''}base weights {8 * regime.base}-bit, "
        f"trainable params {8 * regime.trainable}-bit, "
        f"compute {8 * regime.compute}-bit, autocast {'on (Trainer bf16/fp16=True)' if regime.autocast else 'off'}",
        "peak = largest phase of one step + margin (3% + 256 MiB) for allocator rounding and cuBLAS workspaces",
        "torch.cuda.max_memory_allocated only: the CUDA context (~0.3-0.6 GiB) and reserved-but-free cache are extra",
    ]
    if method != "full":
        notes.append(f"LoRA adapters in fp32 (peft autocast_adapter_dtype=True), no bias, lora_dropout={lora_dropout}")
    if method == "qlora":
        bits = nf4_bits_per_weight(dq)
        notes.append(f"NF4 blocksize 64, double quantization {'on' if dq else 'off'} ({bits:.3f} bits/weight); "
                     "embeddings, lm_head and norms unquantized (transformers get_keys_to_not_convert)")
        if upcast:
            notes.append("peft.prepare_model_for_kbit_training upcasts non-NF4 params to fp32 (fp32 residual stream)")
    if method == "full" and precision == "fp16":
        notes.append("fp16 weights: transformers' Trainer refuses fp16=True with fp16 parameters; use mixed-fp16")
    if optimizer == "adamw":
        notes.append(f"torch AdamW ({adamw_impl}): 2 states in the parameter dtype"
                     + ("; foreach step allocates one extra state-sized buffer" if adamw_impl == "foreach" else ""))
    else:
        notes.append("bitsandbytes 8-bit AdamW: 2 x uint8 states + fp32 absmax per 256; tensors < 4096 values keep fp32 states")
        if optimizer.startswith("paged"):
            notes.append("paged states (tensors >= 1e5 values) live in CUDA managed memory, not counted by max_memory_allocated")
    notes.append("loss: " + ("transformers ForCausalLMLoss materialises logits (12 bytes/token/vocab at backward start)"
                             if loss == "hf" else "trl chunked LM head (logits never fully materialised)"))
    notes.append("gradient checkpointing: layer inputs kept, one layer recomputed in backward" if ckpt
                 else "no gradient checkpointing: all layer activations kept until backward")
    if dpo:
        notes.append("DPO: chosen+rejected double the batch; "
                     + ("a frozen reference copy of the model" if method == "full" else "reference = the base model with the adapter disabled (no extra weights)"))
    return notes


# ---------------------------------------------------------------------------
# Measuring on CPU: parameters, optimizer states, saved activations, live peak
# ---------------------------------------------------------------------------


def measure_parameter_bytes(model) -> int:
    """Bytes of all parameters, including their bitsandbytes NF4 quantization state."""
    import torch

    seen: dict[int, int] = {}
    tensors = list(model.parameters())
    for tensor in list(tensors):
        state = getattr(tensor, "quant_state", None)
        while state is not None:  # absmax, code, offset, nested state2
            tensors += [t for t in (state.absmax, state.code, getattr(state, "offset", None)) if torch.is_tensor(t)]
            state = getattr(state, "state2", None)
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def measure_optimizer_state_bytes(optimizer) -> int:
    """Sum of the bytes of every distinct tensor in ``optimizer.state`` (shared code books once)."""
    import torch

    seen: dict[int, int] = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.numel() > 1:  # skip scalar step counters
                seen[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(seen.values())


def measure_saved_activation_bytes(model, autocast_dtype=None, **inputs) -> int:
    """Bytes autograd saves for backward during ``model(**inputs)`` (parameters excluded).

    Counts each storage once, with ``torch.autograd.graph.saved_tensors_hooks``.
    Tensors kept alive by other means (rotary tables held by checkpointing
    closures) are not seen.
    """
    import torch

    seen: dict[int, int] = {}
    held = []  # keep every saved storage alive until the end, so no address is reused and miscounted

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        held.append(storage)
        return tensor

    device = next(model.parameters()).device.type
    autocast = torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
        model(**inputs)
    # parameters are looked up after the forward: a layer may swap a parameter's storage during it
    # (bitsandbytes), and a freed address can come back as an activation's
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(nbytes for ptr, nbytes in seen.items() if ptr not in params)


class LiveTensorTracker:
    """Track the bytes of live tensor storages and their peak, like ``max_memory_allocated``.

    A ``TorchDispatchMode`` sees every tensor an operator creates; a weak
    reference on its storage subtracts the bytes when it is freed. Use
    ``track(*objects)`` for what exists before (model, optimizer, inputs)::

        tracker = LiveTensorTracker()
        tracker.track(model, optimizer, batch)
        with tracker:
            train_step()
        tracker.peak_bytes

    It counts exact tensor bytes on any device (no allocator rounding, no
    workspaces), so on CPU it measures what a GPU's allocator would be asked for.
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._track_tree(out)
                return out

        self._mode = _Mode()
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, object] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def _free(self, key: int) -> None:
        self.current_bytes -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)

    def _track_tensor(self, tensor) -> None:
        import weakref

        if tensor.device.type == "meta":  # fake tensors report their fake device and are counted
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._sizes:
            return
        self._sizes[key] = storage.nbytes()
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))
        self.current_bytes += storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _track_tree(self, obj) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        for leaf in tree_leaves(obj):
            if isinstance(leaf, torch.Tensor):
                self._track_tensor(leaf)

    def track(self, *objects) -> None:
        """Count tensors that already exist: modules (params, buffers, quant states), optimizers, tensors, dicts."""
        import torch

        for obj in objects:
            if isinstance(obj, torch.nn.Module):
                for tensor in list(obj.parameters()) + list(obj.buffers()):
                    self._track_tensor(tensor)
                    state = getattr(tensor, "quant_state", None)
                    while state is not None:
                        self._track_tree([state.absmax, state.code, getattr(state, "offset", None)])
                        state = getattr(state, "state2", None)
            elif isinstance(obj, torch.optim.Optimizer):
                self._track_tree([list(s.values()) for s in obj.state.values()])
            else:
                self._track_tree(obj)

    def reset_peak(self) -> None:
        self.peak_bytes = self.current_bytes

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def format_bytes(n: int) -> str:
    """``13.5 GiB`` / ``512.0 MiB`` style, for tables."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 2 else f"{n / 1024**2:.1f} MiB"


def format_table(est: MemoryEstimate) -> str:
    """The human-readable report printed by the command line."""
    rows = [
        ("weights", est.weights_bytes),
        ("  of which NF4", est.quantized_weights_bytes),
        ("  of which LoRA adapters", est.lora_weights_bytes),
        ("reference model (DPO)", est.reference_weights_bytes),
        ("gradients", est.gradients_bytes),
        ("optimizer states (device)", est.optimizer_bytes),
        ("optimizer states (paged)", est.optimizer_paged_bytes),
        ("optimizer step buffer", est.optimizer_step_temp_bytes),
        ("activations (saved)", est.activations_bytes),
        ("logits / loss (peak)", est.logits_bytes),
        ("backward buffers", est.backward_buffer_bytes),
        ("margin", est.margin_bytes),
    ]
    head = (f"{est.model}: {est.method}, {est.precision}, {est.optimizer}, batch {est.batch_size} x seq {est.seq_len}"
            f"{', gradient checkpointing' if est.gradient_checkpointing else ''}{', DPO' if est.dpo else ''}")
    lines = [head, f"parameters {est.total_params:,}   trainable {est.trainable_params:,}", ""]
    lines += [f"  {name:<28}{format_bytes(value):>12}" for name, value in rows if value or name == "activations (saved)"]
    lines += ["", "phases (tensors alive, before margin):"]
    lines += [f"  {name:<28}{format_bytes(value):>12}" for name, value in est.phases.items()]
    lines += ["", f"  {'PEAK (max_memory_allocated)':<28}{format_bytes(est.peak_bytes):>12}   <- {est.peak_phase}", "", "assumptions:"]
    lines += [f"  - {note}" for note in est.assumptions]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ftlab.memory",
        description="Estimate the peak GPU memory (torch.cuda.max_memory_allocated) of one fine-tuning step.",
    )
    parser.add_argument("--config", required=True, help=f"path to a config.json, or a preset: {', '.join(PRESETS)}")
    parser.add_argument("--method", required=True, help="full, lora or qlora")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-targets", default="q_proj,v_proj", help="comma-separated module names or all-linear")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--optimizer", default="adamw", help=", ".join(OPTIMIZERS))
    parser.add_argument("--precision", default="bf16", help=", ".join(PRECISIONS))
    parser.add_argument("--no-double-quant", action="store_true", help="QLoRA without double quantization (4.5 bits)")
    parser.add_argument("--dpo", action="store_true", help="DPO: chosen+rejected batch and a reference model")
    parser.add_argument("--attention", default="sdpa", help="sdpa (default) or eager (keeps seq x seq scores)")
    parser.add_argument("--loss", default=None, help="hf (materialised logits, default) or fused (trl chunked LM head)")
    parser.add_argument("--adamw-impl", default="fused", help="fused (Trainer default) or foreach (torch.optim.AdamW on CUDA)")
    parser.add_argument("--no-kbit-upcast", action="store_true", help="QLoRA without prepare_model_for_kbit_training")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m ftlab.memory``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        est = estimate_training_memory(
            args.config, method=args.method, batch_size=args.batch_size, seq_len=args.seq_len,
            lora_r=args.lora_r, lora_targets=args.lora_targets, gradient_checkpointing=args.gradient_checkpointing,
            optimizer=args.optimizer, precision=args.precision, double_quant=not args.no_double_quant, dpo=args.dpo,
            attention=args.attention, loss=args.loss, adamw_impl=args.adamw_impl, kbit_upcast=not args.no_kbit_upcast,
        )
    except (ValueError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_table(est))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _build_training_model(raw: dict, method: str, dtype, lora_r: int, lora_targets, gradient_checkpointing: bool, device: str = "cpu"):
    """Random-weight ``LlamaForCausalLM`` (or Mistral/Qwen2) from a config dict, with peft LoRA
    adapters when ``method == "lora"``; ready for training."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = {key: value for key, value in raw.items() if key not in ("torch_dtype", "dtype")}
    config = AutoConfig.for_model(raw.pop("model_type", "llama"), **raw, attn_implementation="sdpa")
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    finally:
        torch.set_default_dtype(default)  # LoRA adapters are created in fp32, as peft does
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        targets = list(resolve_lora_targets(lora_targets))
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules=targets))
    return model.train()


def _train_steps(model, batch, precision: str, steps: int, device: str) -> None:
    """``steps`` optimizer steps of plain causal-LM training (fused AdamW, autocast like Trainer)."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    half = torch.float16 if precision.endswith("fp16") else torch.bfloat16
    for _ in range(steps):
        with torch.autocast(device, dtype=half, enabled=precision != "fp32"):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss


def _step_args(config, method, precision, num_hidden_layers):
    import torch

    if method not in ("full", "lora"):
        raise ValueError(f"method {method!r}: measuring supports 'full' and 'lora' (NF4 needs real quantized weights)")
    _, raw = _read_config(config)
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    if num_hidden_layers:
        raw["num_hidden_layers"] = num_hidden_layers
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    return raw, dtype


def measure_training_step(
    config,
    method: str = "lora",
    batch_size: int = 1,
    seq_len: int = 512,
    lora_r: int = 8,
    lora_targets="q_proj,v_proj",
    gradient_checkpointing: bool = False,
    precision: str = "bf16",
    device: str = "cpu",
    num_hidden_layers: int | None = None,
    steps: int = 2,
) -> int:
    """Measured peak bytes of ``steps`` training steps of a random-weight model built from ``config``.

    On ``cuda`` this is ``torch.cuda.max_memory_allocated()`` (reset after the
    model is on the GPU, so the weights count); on ``cpu`` it is the peak of
    :class:`LiveTensorTracker`. Compare it with
    ``estimate_training_memory(..., adamw_impl="fused")``. Full and LoRA only.
    """
    import torch

    raw, dtype = _step_args(config, method, precision, num_hidden_layers)
    model = _build_training_model(raw, method, dtype, lora_r, lora_targets, gradient_checkpointing, device)
    batch = torch.randint(0, raw["vocab_size"], (batch_size, seq_len), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _train_steps(model, batch, precision, steps, "cuda")
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    tracker = LiveTensorTracker()
    tracker.track(model, batch)
    with tracker:
        _train_steps(model, batch, precision, steps, "cpu")
    return tracker.peak_bytes


def replay_training_step(
    config,
    method: str = "lora",
    batch_size: int = 1,
    seq_len: int = 512,
    lora_r: int = 8,
    lora_targets="q_proj,v_proj",
    gradient_checkpointing: bool = False,
    precision: str = "bf16",
    num_hidden_layers: int | None = None,
    steps: int = 2,
) -> int:
    """:func:`measure_training_step` on fake tensors: real sizes, no numbers, no memory.

    The model, peft LoRA, ``torch.optim.AdamW`` and the transformers loss run
    under ``FakeTensorMode``: every operator computes shapes but no values, so a
    7B step "runs" on a laptop CPU in seconds while :class:`LiveTensorTracker`
    adds up what a GPU allocator would hold. Kernels are the CPU ones (SDPA
    saves the same tensors as CUDA flash attention).
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    raw, dtype = _step_args(config, method, precision, num_hidden_layers)
    with _fake_mode_patches(), FakeTensorMode():
        model = _build_training_model(raw, method, dtype, lora_r, lora_targets, gradient_checkpointing)
        batch = torch.randint(0, raw["vocab_size"], (batch_size, seq_len))
        tracker = LiveTensorTracker()
        tracker.track(model, batch)
        with tracker:
            _train_steps(model, batch, precision, steps, "cpu")
    return tracker.peak_bytes


class _fake_mode_patches:
    """Let peft build adapters on fake tensors: skip no-op parameter swaps and dtype moves."""

    def __enter__(self):
        import torch
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._swap, self._move = torch.utils.swap_tensors, BaseTunerLayer._move_adapter_to_device_of_base_layer
        swap = self._swap

        def same_or_swap(a, b):
            if (a.dtype, a.device, a.shape) != (b.dtype, b.device, b.shape):
                swap(a, b)

        torch.utils.swap_tensors = same_or_swap
        BaseTunerLayer._move_adapter_to_device_of_base_layer = lambda self, *args, **kwargs: None
        return self

    def __exit__(self, *exc):
        import torch
        from peft.tuners.tuners_utils import BaseTunerLayer

        torch.utils.swap_tensors = self._swap
        BaseTunerLayer._move_adapter_to_device_of_base_layer = self._move
        return False
