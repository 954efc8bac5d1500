"""Checks for lab 03 (memory estimation): the terms of the training-memory estimate.

Each check draws configurations the learner has not seen (random shapes, model
configs, ranks, precisions; ``seed`` picks them) and compares the learner's
function with real tensors built by torch / bitsandbytes / peft / transformers,
and, for 7B-scale configs that cannot be built on a CPU, with ``ftlab.memory``
(itself tested against those libraries in ``tests/test_memory.py``).

- :func:`check_weight_bytes`: bytes of one weight matrix in fp32/fp16/bf16/int8/NF4;
- :func:`check_training_state_bytes`: gradient and AdamW (32-bit or 8-bit) state bytes;
- :func:`check_lora_parameter_count`: trainable LoRA parameters for a rank and targets;
- :func:`check_kv_cache_bytes`: the inference KV cache of a (GQA) Llama config.
"""

from __future__ import annotations

import math
import random
import warnings

from ftlab import memory

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "nf4", "nf4-dq")
_PRECISION_HINTS = {
    "fp32": "fp32 stores 4 bytes per value",
    "fp16": "fp16 stores 2 bytes per value",
    "bf16": "bf16 is a 16-bit format: 2 bytes per value, not 4",
    "int8": "LLM.int8 stores 1 byte per value plus one fp32 scale per output row (out_features x 4 bytes)",
    "nf4": "NF4: two 4-bit codes per byte (round up), one fp32 absmax per block of 64 (round up), "
           "and the 16-entry fp32 code book (64 bytes)",
    "nf4-dq": "double quantization: codes as NF4, one uint8 absmax per block of 64, one fp32 scale per 256 blocks "
              "(round up), one fp32 offset, the 16-entry fp32 NF4 code book and the 256-entry fp32 code book of "
              "the 8-bit absmax values",
}


def _fail(message: str) -> None:
    raise AssertionError(message)


def _get_peft_model(model, lora_config):
    """``peft.get_peft_model`` without the FutureWarning peft 0.21 triggers on transformers 5.23.

    peft reads ``model.is_gradient_checkpointing``, which transformers 5.23 deprecates in favour
    of ``is_activation_checkpointing``; the warning is about peft's code, not the learner's.
    """
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora_config)


# ---------------------------------------------------------------------------
# Weights by precision
# ---------------------------------------------------------------------------


def real_weight_bytes(shape: tuple[int, int], precision: str, seed: int = 0) -> int:
    """Bytes a real ``(out_features, in_features)`` weight takes in ``precision``.

    fp32/fp16/bf16: a torch tensor of that dtype; int8: ``bitsandbytes.functional.
    int8_vectorwise_quant`` (LLM.int8 codes and per-row fp32 scales); nf4 / nf4-dq:
    ``bitsandbytes.functional.quantize_4bit`` (blocksize 64) with its quantization state.
    """
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision in dtypes:
        return torch.empty(shape, dtype=dtypes[precision]).nbytes
    import bitsandbytes.functional as bnbF

    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if precision == "int8":
        codes, row_scales, _ = bnbF.int8_vectorwise_quant(weight.half())
        return codes.nbytes + row_scales.nbytes
    if precision not in ("nf4", "nf4-dq"):
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    double_quant = precision == "nf4-dq"
    packed, state = bnbF.quantize_4bit(weight, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    parts = [packed, state.absmax, state.code]
    if double_quant:
        parts += [state.offset, state.state2.absmax, state.state2.code]
    return sum(t.numel() * t.element_size() for t in parts)


def check_weight_bytes(weight_bytes, seed: int = 0, n_shapes: int = 4) -> None:
    """``weight_bytes(shape, precision)`` must equal the bytes of a real quantized/cast weight.

    Small random shapes are built for real; a Llama-2-7B MLP shape is compared with
    ``ftlab.memory.nf4_bytes`` (and plain arithmetic for the dense formats).
    """
    rng = random.Random(seed)
    shapes = [(rng.randint(1, 160), rng.randint(1, 300)) for _ in range(n_shapes)]
    for shape in shapes:
        for precision in PRECISIONS:
            want = real_weight_bytes(shape, precision, seed)
            got = weight_bytes(shape, precision)
            if got != want:
                _fail(f"weight {shape} in {precision}: got {got:,} bytes, expected {want:,}. "
                      f"Hint: {_PRECISION_HINTS[precision]}.")
    big = (11008, 4096)  # Llama-2-7B gate_proj, too big to quantize quickly on a CPU
    numel = math.prod(big)
    expected = {"fp32": 4 * numel, "fp16": 2 * numel, "bf16": 2 * numel, "int8": numel + 4 * big[0],
                "nf4": memory.nf4_bytes(numel, double_quant=False), "nf4-dq": memory.nf4_bytes(numel, double_quant=True)}
    for precision, want in expected.items():
        got = weight_bytes(big, precision)
        if got != want:
            _fail(f"weight {big} in {precision}: got {got:,} bytes, expected {want:,}. "
                  f"Hint: {_PRECISION_HINTS[precision]}.")


# ---------------------------------------------------------------------------
# Gradients and optimizer states
# ---------------------------------------------------------------------------


def random_llama_config(rng: random.Random, vocab_size: int = 128) -> dict:
    """A small random Llama config (GQA, sometimes an explicit head_dim) as a ``LlamaConfig`` dict."""
    kv_heads = rng.choice([1, 2, 4])
    heads = kv_heads * rng.choice([1, 2, 3])
    head_dim = rng.choice([8, 16, 24])
    config = dict(vocab_size=vocab_size, hidden_size=heads * head_dim, intermediate_size=rng.randint(20, 120),
                  num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads, num_key_value_heads=kv_heads)
    if rng.random() < 0.3:  # head_dim that is not hidden / heads (as in Qwen3 or Gemma)
        config["head_dim"] = head_dim + 8
    return config


def _build_model(config: dict, dtype, lora: tuple[int, list[str]] | None, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config)).to(dtype)
    if lora:
        from peft import LoraConfig

        model = _get_peft_model(model, LoraConfig(r=lora[0], target_modules=lora[1]))
    return model.train()


def measured_training_state(model, optimizer: str, seed: int = 0) -> dict[str, int]:
    """Gradient and optimizer-state bytes after one real training step of ``model``.

    ``optimizer`` is ``"adamw"`` (``torch.optim.AdamW``) or ``"adamw_8bit"``
    (``bitsandbytes.optim.AdamW8bit``).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3) if optimizer == "adamw" else __import__("bitsandbytes").optim.AdamW8bit(params, lr=1e-3)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(seed))
    model(input_ids=ids, labels=ids).loss.backward()
    gradients = sum(p.grad.nbytes for p in params if p.grad is not None)
    opt.step()
    return {"gradients": gradients, "optimizer": memory.measure_optimizer_state_bytes(opt)}


def check_training_state_bytes(training_state_bytes, seed: int = 0, n_models: int = 3) -> None:
    """``training_state_bytes(model, optimizer)`` -> ``{"gradients", "optimizer"}`` before any step
    must equal what one real step allocates, for full and LoRA models, fp32 and bf16, AdamW and AdamW8bit."""
    import torch

    rng = random.Random(seed)
    cases = [(torch.float32, None, "adamw"), (torch.bfloat16, None, "adamw"), (torch.float32, None, "adamw_8bit")]
    for i in range(n_models):
        config = random_llama_config(rng, vocab_size=rng.choice([128, 256]))
        config["hidden_size"] = config["num_attention_heads"] * max(16, -(-64 // config["num_attention_heads"]))  # 8-bit: >= 4096 values
        config.pop("head_dim", None)
        dtype, lora, optimizer = cases[i % len(cases)]
        if i >= len(cases) or rng.random() < 0.4:
            lora = (rng.choice([2, 4, 8]), rng.sample(list(memory.LINEAR_MODULES), rng.randint(1, 3)))
        model = _build_model(config, dtype, lora, seed + i)
        got = training_state_bytes(model, optimizer)
        want = measured_training_state(model, optimizer, seed + i)
        where = f"{'LoRA' if lora else 'full'} {str(dtype).removeprefix('torch.')} model, {optimizer}"
        if got.get("gradients") != want["gradients"]:
            _fail(f"{where}: gradients {got.get('gradients')} bytes, expected {want['gradients']:,}. "
                  "Hint: one gradient per trainable parameter (requires_grad), in the parameter's dtype.")
        if got.get("optimizer") != want["optimizer"]:
            hint = ("AdamW keeps TWO states per trainable parameter (exp_avg and exp_avg_sq) in the parameter dtype"
                    if optimizer == "adamw" else
                    "AdamW8bit: per tensor, two uint8 states plus one fp32 absmax per 256 values per state; tensors "
                    "with fewer than 4096 values keep two fp32 states; plus two shared 256-entry fp32 code books")
            _fail(f"{where}: optimizer states {got.get('optimizer')} bytes, expected {want['optimizer']:,}. Hint: {hint}.")


# ---------------------------------------------------------------------------
# LoRA parameters and KV cache
# ---------------------------------------------------------------------------


def peft_lora_parameter_count(config: dict, r: int, targets: list[str]) -> int:
    """Trainable parameters of ``peft.get_peft_model`` on a Llama built on the meta device."""
    import torch
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    model = _get_peft_model(model, LoraConfig(r=r, target_modules=list(targets)))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_lora_parameter_count(lora_parameter_count, seed: int = 0, n_configs: int = 4) -> None:
    """``lora_parameter_count(config, r, targets)`` must equal peft's trainable count on random
    configs, and ``ftlab.memory.count_lora_parameters`` on real 7B/8B presets."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n_configs):
        config = random_llama_config(rng)
        cases.append((config, rng.choice([1, 2, 4, 8, 16]), rng.sample(list(memory.LINEAR_MODULES), rng.randint(1, 7)),
                      peft_lora_parameter_count))
    for name in ("llama-2-7b", "llama-3-8b", "qwen2.5-7b"):
        config = memory.preset_config(name)
        targets = rng.sample(list(memory.LINEAR_MODULES), rng.randint(1, 7))
        cases.append((config, rng.choice([4, 8, 16, 64]), targets,
                      lambda c, r, t: memory.count_lora_parameters(memory.load_model_spec(c), r, t)))
    for config, r, targets, reference in cases:
        want = reference(config, r, targets)
        got = lora_parameter_count(config, r, list(targets))
        if got != want:
            hint = "each adapted linear layer gets A (r x in_features) AND B (out_features x r)"
            if config.get("num_key_value_heads", config["num_attention_heads"]) != config["num_attention_heads"]:
                hint += "; k_proj and v_proj output num_key_value_heads x head_dim features"
            if "head_dim" in config:
                hint += "; use config['head_dim'] when it is given"
            _fail(f"r={r}, targets {targets}, config {({k: v for k, v in config.items() if 'size' in k or 'num_' in k or k == 'head_dim'})}: "
                  f"got {got:,}, expected {want:,}. Hint: {hint}.")


def real_kv_cache_bytes(config: dict, batch_size: int, seq_len: int, dtype_bytes: int, seed: int = 0) -> int:
    """Bytes of the keys and values in the ``DynamicCache`` of one forward pass of a random
    ``LlamaForCausalLM`` (fp32 for 4 bytes, bf16 for 2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = {4: torch.float32, 2: torch.bfloat16}[dtype_bytes]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config)).to(dtype).eval()
    ids = torch.randint(0, config["vocab_size"], (batch_size, seq_len))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def check_kv_cache_bytes(kv_cache_bytes, seed: int = 0, n_configs: int = 4) -> None:
    """``kv_cache_bytes(config, batch_size, seq_len, dtype_bytes)`` must equal the cache a real
    forward pass builds (random GQA configs), and ``ftlab.memory.kv_cache_bytes`` on presets."""
    rng = random.Random(seed)
    for i in range(n_configs):
        config = random_llama_config(rng)
        batch_size, seq_len, dtype_bytes = rng.randint(1, 3), rng.randint(1, 12), rng.choice([2, 4])
        want = real_kv_cache_bytes(config, batch_size, seq_len, dtype_bytes, seed + i)
        _compare_kv(kv_cache_bytes, config, batch_size, seq_len, dtype_bytes, want)
    for name in ("llama-2-7b", "llama-3-8b", "qwen2.5-7b"):
        config = memory.preset_config(name)
        batch_size, seq_len = rng.choice([1, 4, 8]), rng.choice([512, 4096, 8192])
        want = memory.kv_cache_bytes(memory.load_model_spec(config), batch_size, seq_len, 2)
        _compare_kv(kv_cache_bytes, config, batch_size, seq_len, 2, want)


def _compare_kv(kv_cache_bytes, config, batch_size, seq_len, dtype_bytes, want) -> None:
    got = kv_cache_bytes(config, batch_size, seq_len, dtype_bytes)
    if got == want:
        return
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    hint = "keys AND values, every layer: 2 x layers x kv_heads x head_dim x batch x tokens x bytes"
    if kv_heads != heads and got == want * heads // kv_heads:
        hint = f"the cache holds num_key_value_heads ({kv_heads}) heads, not num_attention_heads ({heads}) (GQA)"
    elif "head_dim" in config:
        hint += "; use config['head_dim'] when it is given"
    _fail(f"batch {batch_size} x {seq_len} tokens, {dtype_bytes}-byte values, heads {heads}/kv {kv_heads}, "
          f"{config['num_hidden_layers']} layers: got {got:,} bytes, expected {want:,}. Hint: {hint}.")
