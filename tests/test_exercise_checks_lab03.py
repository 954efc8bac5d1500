"""Lab 03 exercise checks: the reference solutions pass, plausible wrong answers are rejected."""

import math

import pytest

from ftlab.checks import lab03

# --- reference solutions (the same code as solutions/03_memory_estimation.ipynb) -----------------


def weight_bytes(shape, precision):
    out_features, in_features = shape
    numel = out_features * in_features
    if precision in ("fp32", "fp16", "bf16"):
        return numel * {"fp32": 4, "fp16": 2, "bf16": 2}[precision]
    if precision == "int8":
        return numel + 4 * out_features
    blocks = math.ceil(numel / 64)
    codes = math.ceil(numel / 2) + 16 * 4
    if precision == "nf4":
        return codes + 4 * blocks
    return codes + blocks + 4 * math.ceil(blocks / 256) + 4 + 256 * 4


def training_state_bytes(model, optimizer):
    params = [p for p in model.parameters() if p.requires_grad]
    gradients = sum(p.numel() * p.element_size() for p in params)
    if optimizer == "adamw":
        return {"gradients": gradients, "optimizer": 2 * gradients}
    states, large = 0, False
    for p in params:
        if p.numel() < 4096:
            states += 2 * 4 * p.numel()
        else:
            states += 2 * p.numel() + 2 * 4 * math.ceil(p.numel() / 256)
            large = True
    return {"gradients": gradients, "optimizer": states + (2 * 256 * 4 if large else 0)}


def _shapes(config):
    h, i = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads") or heads
    return {"q_proj": (h, heads * head_dim), "k_proj": (h, kv * head_dim), "v_proj": (h, kv * head_dim),
            "o_proj": (heads * head_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_parameter_count(config, r, targets):
    shapes = _shapes(config)
    return config["num_hidden_layers"] * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def kv_cache_bytes(config, batch_size, seq_len, dtype_bytes=2):
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv = config.get("num_key_value_heads") or heads
    return 2 * config["num_hidden_layers"] * kv * head_dim * batch_size * seq_len * dtype_bytes


# --- wrong variants ---------------------------------------------------------------------------------


def bf16_as_four_bytes(shape, precision):
    return 4 * shape[0] * shape[1] if precision == "bf16" else weight_bytes(shape, precision)


def nf4_without_constants(shape, precision):
    return math.ceil(shape[0] * shape[1] / 2) if precision.startswith("nf4") else weight_bytes(shape, precision)


def adamw_one_state(model, optimizer):
    out = training_state_bytes(model, optimizer)
    return {**out, "optimizer": out["gradients"]} if optimizer == "adamw" else out


def eight_bit_without_small_tensor_rule(model, optimizer):
    params = [p for p in model.parameters() if p.requires_grad]
    out = training_state_bytes(model, optimizer)
    if optimizer == "adamw_8bit":
        out["optimizer"] = sum(2 * p.numel() + 8 * math.ceil(p.numel() / 256) for p in params) + 2048
    return out


def lora_a_only(config, r, targets):
    return config["num_hidden_layers"] * sum(r * _shapes(config)[t][0] for t in targets)


def lora_square_kv(config, r, targets):  # k/v treated as hidden x hidden (no GQA)
    h = config["hidden_size"]
    return config["num_hidden_layers"] * sum(r * (h + h) if t in ("k_proj", "v_proj") else r * sum(_shapes(config)[t])
                                            for t in targets)


def kv_with_attention_heads(config, batch_size, seq_len, dtype_bytes=2):
    return kv_cache_bytes({**config, "num_key_value_heads": config["num_attention_heads"]}, batch_size, seq_len, dtype_bytes)


def kv_keys_only(config, batch_size, seq_len, dtype_bytes=2):
    return kv_cache_bytes(config, batch_size, seq_len, dtype_bytes) // 2


# --- tests ------------------------------------------------------------------------------------------


def test_weight_bytes_reference_passes():
    lab03.check_weight_bytes(weight_bytes, seed=0, n_shapes=2)


@pytest.mark.parametrize("wrong", [bf16_as_four_bytes, nf4_without_constants])
def test_weight_bytes_rejects(wrong):
    with pytest.raises(AssertionError):
        lab03.check_weight_bytes(wrong, seed=0)


def test_training_state_reference_passes():
    lab03.check_training_state_bytes(training_state_bytes, seed=0)  # full fp32, full bf16, 8-bit (+ LoRA by chance)


@pytest.mark.parametrize("wrong", [adamw_one_state, eight_bit_without_small_tensor_rule])
def test_training_state_rejects(wrong):
    with pytest.raises(AssertionError):
        lab03.check_training_state_bytes(wrong, seed=0)


def test_lora_count_reference_passes():
    lab03.check_lora_parameter_count(lora_parameter_count, seed=0)


@pytest.mark.parametrize("wrong", [lora_a_only, lora_square_kv])
def test_lora_count_rejects(wrong):
    with pytest.raises(AssertionError):
        lab03.check_lora_parameter_count(wrong, seed=0)


def test_kv_cache_reference_passes():
    lab03.check_kv_cache_bytes(kv_cache_bytes, seed=0)


@pytest.mark.parametrize("wrong", [kv_with_attention_heads, kv_keys_only])
def test_kv_cache_rejects(wrong):
    with pytest.raises(AssertionError, match="Hint"):
        lab03.check_kv_cache_bytes(wrong, seed=0)


def test_kv_hint_names_gqa():
    with pytest.raises(AssertionError, match="num_key_value_heads"):
        lab03.check_kv_cache_bytes(kv_with_attention_heads, seed=0)
