"""Tests for ftlab.memory: exact counts against real modules, CLI, and monotonicity.

Every model here is tiny or built on the meta device / fake tensors, so the
whole file runs in a few seconds on a CPU.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab import memory as M

UTILS = Path(M.__file__).resolve().parents[1]
TINY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
BATCH, SEQ = 2, 16


def _meta_model(raw: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw))


def _preset(name: str) -> dict:
    return json.loads((M.PRESET_DIR / f"{name}.json").read_text())


def _tiny_llama(dtype=torch.float32, attn="sdpa", **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY, **overrides}, attn_implementation=attn)
    return LlamaForCausalLM(config).to(dtype)


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(0)
    return torch.randint(0, TINY["vocab_size"], (BATCH, SEQ))


# --- exact parameter counts -------------------------------------------------


@pytest.mark.parametrize("name", M.PRESETS)
def test_parameter_count_equals_meta_model(name):
    model = _meta_model(_preset(name))
    assert M.count_parameters(M.load_model_spec(name)) == sum(p.numel() for p in model.parameters())


def test_parameter_count_small_configs_with_biases_and_ties():
    for extra in ({}, {"tie_word_embeddings": True}, {"attention_bias": True, "mlp_bias": True}, {"head_dim": 32}):
        raw = {**TINY, "model_type": "llama", **extra}
        assert M.count_parameters(M.load_model_spec(raw)) == sum(p.numel() for p in _meta_model(raw).parameters())
    qwen = {**TINY, "model_type": "qwen2", "tie_word_embeddings": True}  # q/k/v biases
    assert M.count_parameters(M.load_model_spec(qwen)) == sum(p.numel() for p in _meta_model(qwen).parameters())


def test_known_sizes():
    assert M.count_parameters(M.load_model_spec("llama-2-7b")) == 6_738_415_616
    assert M.count_parameters(M.load_model_spec("qwen2.5-1.5b")) == 1_543_714_304


# --- LoRA -------------------------------------------------------------------


def test_lora_llama2_7b_r8_qv_is_4194304():
    assert M.count_lora_parameters(M.load_model_spec("llama-2-7b"), r=8, targets="q_proj,v_proj") == 4_194_304


@pytest.mark.parametrize("targets", ["q_proj,v_proj", "all-linear"])
@pytest.mark.parametrize("name", ["qwen2.5-1.5b"])
def test_lora_count_equals_peft(name, targets):
    from peft import LoraConfig, get_peft_model

    model = _meta_model(_preset(name))
    target_modules = "all-linear" if targets == "all-linear" else targets.split(",")
    peft_model = get_peft_model(model, LoraConfig(r=16, target_modules=target_modules))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert M.count_lora_parameters(M.load_model_spec(name), r=16, targets=targets) == trainable


# --- NF4 --------------------------------------------------------------------


def test_nf4_bits_per_weight():
    assert M.NF4_BITS == 4.5
    assert M.NF4_DQ_BITS == pytest.approx(4.127, abs=5e-4)
    # large matrix: bytes per weight tends to the bits above
    n = 4096 * 4096
    assert M.nf4_bytes(n, double_quant=False) * 8 / n == pytest.approx(4.5, rel=1e-4)
    assert M.nf4_bytes(n, double_quant=True) * 8 / n == pytest.approx(4.127, rel=1e-3)


@pytest.mark.parametrize("shape", [(300, 256), (64, 64), (176, 64), (4096, 11)])
@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_bytes_equal_bitsandbytes(shape, double_quant):
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(torch.randn(shape), blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    tensors = [packed, state.absmax, state.code]
    if double_quant:
        tensors += [state.offset, state.state2.absmax, state.state2.code]
    stored = sum(t.numel() * t.element_size() for t in tensors)
    assert M.nf4_bytes(math.prod(shape), double_quant=double_quant) == stored


@pytest.fixture(scope="module")
def qlora_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = tmp_path_factory.mktemp("tiny")
    _tiny_llama(torch.bfloat16).save_pretrained(path)
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
    )
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map="cpu", dtype=torch.bfloat16)


def test_qlora_quantizes_what_transformers_quantizes(qlora_model):
    import bitsandbytes as bnb

    quantized = {name.rsplit(".", 1)[-1] for name, m in qlora_model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized == set(M.LINEAR_MODULES)  # every decoder linear, not lm_head
    assert not isinstance(qlora_model.lm_head, bnb.nn.Linear4bit)
    spec = M.load_model_spec(dict(TINY))
    regime = M.precision_regime("qlora", "bf16", kbit_upcast=False)
    assert M.measure_parameter_bytes(qlora_model) == M.weight_bytes(spec, "qlora", regime).total


# --- optimizer states -------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adamw_state_bytes_after_one_step(dtype, ids):
    model = _tiny_llama(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    numels = [p.numel() for p in model.parameters()]
    predicted = M.optimizer_state_bytes(numels, "adamw", param_bytes=dtype.itemsize)
    assert predicted.device == M.measure_optimizer_state_bytes(optimizer)


def test_adamw_8bit_state_bytes_after_one_step(ids):
    import bitsandbytes as bnb

    model = _tiny_llama(torch.float32, hidden_size=128, intermediate_size=352)  # tensors above and below 4096
    optimizer = bnb.optim.AdamW8bit(model.parameters(), lr=1e-3)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    numels = [p.numel() for p in model.parameters()]
    assert M.optimizer_state_bytes(numels, "adamw_8bit").device == M.measure_optimizer_state_bytes(optimizer)


def test_optimizer_bytes_per_param():
    n = [10_000_000]
    assert M.optimizer_state_bytes(n, "adamw", 4).device == 8 * n[0]
    assert M.optimizer_state_bytes(n, "adamw", 2).device == 4 * n[0]
    assert M.optimizer_state_bytes(n, "adamw", 4, "foreach").step_temp == 4 * n[0]
    eight = M.optimizer_state_bytes(n, "adamw_8bit")
    assert eight.device / n[0] == pytest.approx(2.03, abs=0.01)
    paged = M.optimizer_state_bytes(n, "paged_adamw_8bit")
    assert paged.paged == 2 * n[0] and paged.total == eight.total


# --- activations ------------------------------------------------------------


def _saved_prediction(spec, method, regime, **kwargs):
    act = M.activation_bytes(spec, method, regime, BATCH, SEQ, **kwargs)
    tokens = BATCH * SEQ
    return act.without_checkpointing + 4 * tokens * spec.vocab_size + 8 * tokens + 4  # + loss: log-softmax, labels


@pytest.mark.parametrize("precision,attn", [("bf16", "sdpa"), ("fp32", "eager"), ("mixed-bf16", "sdpa")])
def test_saved_activations_full(precision, attn, ids):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = _tiny_llama(dtype, attn=attn)
    autocast = None if precision == "fp32" else torch.bfloat16
    measured = M.measure_saved_activation_bytes(model, autocast, input_ids=ids, labels=ids)
    spec, regime = M.load_model_spec(dict(TINY)), M.precision_regime("full", precision)
    assert _saved_prediction(spec, "full", regime, attention=attn) == measured


@pytest.mark.parametrize("precision,targets", [("bf16", "q_proj,v_proj"), ("fp32", "all-linear")])
def test_saved_activations_lora(precision, targets, ids):
    from peft import LoraConfig, get_peft_model

    model = _tiny_llama(torch.bfloat16 if precision == "bf16" else torch.float32)
    target_modules = list(M.resolve_lora_targets(targets))
    model = get_peft_model(model, LoraConfig(r=8, target_modules=target_modules, lora_dropout=0.0))
    autocast = torch.bfloat16 if precision == "bf16" else None
    measured = M.measure_saved_activation_bytes(model, autocast, input_ids=ids, labels=ids)
    spec, regime = M.load_model_spec(dict(TINY)), M.precision_regime("lora", precision)
    assert _saved_prediction(spec, "lora", regime, lora_targets=targets, lora_r=8) == measured


def test_saved_activations_qlora(qlora_model, ids):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(qlora_model, LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.0))
    measured = M.measure_saved_activation_bytes(model, torch.bfloat16, input_ids=ids, labels=ids)
    spec, regime = M.load_model_spec(dict(TINY)), M.precision_regime("qlora", "bf16", kbit_upcast=False)
    assert _saved_prediction(spec, "qlora", regime, lora_targets="all-linear", lora_r=8) == measured
    model.unload()


# --- whole step: live-tensor peak ---------------------------------------------


@pytest.mark.parametrize("method,ckpt", [("full", False), ("lora", True)])
def test_phase_model_matches_tracked_peak(method, ckpt, ids):
    from peft import LoraConfig, get_peft_model

    model = _tiny_llama(torch.float32)
    if ckpt:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, foreach=True)
    tracker = M.LiveTensorTracker()
    tracker.track(model, ids)
    with tracker:
        for _ in range(2):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    est = M.estimate_training_memory(
        dict(TINY), method, BATCH, SEQ, precision="fp32", gradient_checkpointing=ckpt, adamw_impl="foreach"
    )
    assert max(est.phases.values()) == pytest.approx(tracker.peak_bytes, rel=0.02)
    assert est.peak_bytes > tracker.peak_bytes  # the margin never under-predicts


def test_fake_tensor_replay_matches_phases():
    raw = {**TINY, "hidden_size": 256, "intermediate_size": 704, "vocab_size": 1000}
    replayed = M.replay_training_step(raw, "lora", batch_size=2, seq_len=128)
    est = M.estimate_training_memory(raw, "lora", 2, 128)
    assert max(est.phases.values()) == pytest.approx(replayed, rel=0.01)


# --- monotonicity -----------------------------------------------------------


def test_checkpointing_lowers_activations():
    for method in M.METHODS:
        off = M.estimate_training_memory("llama-2-7b", method, 4, 1024)
        on = M.estimate_training_memory("llama-2-7b", method, 4, 1024, gradient_checkpointing=True)
        assert on.activations_bytes < off.activations_bytes / 5
        assert on.peak_bytes < off.peak_bytes


def test_qlora_lora_full_ordering():
    est = {m: M.estimate_training_memory("llama-2-7b", m, 1, 512) for m in M.METHODS}
    assert est["qlora"].weights_bytes < est["full"].weights_bytes < est["lora"].weights_bytes  # LoRA adds adapters
    assert est["qlora"].weights_bytes < 0.35 * est["full"].weights_bytes
    assert est["qlora"].peak_bytes < est["lora"].peak_bytes < est["full"].peak_bytes
    assert est["full"].gradients_bytes == 2 * est["full"].total_params  # bf16 grads


def test_more_tokens_more_memory_and_dpo_doubles_batch():
    small = M.estimate_training_memory("mistral-7b", "lora", 1, 512)
    assert M.estimate_training_memory("mistral-7b", "lora", 2, 512).peak_bytes > small.peak_bytes
    assert M.estimate_training_memory("mistral-7b", "lora", 1, 1024).peak_bytes > small.peak_bytes
    dpo = M.estimate_training_memory("mistral-7b", "lora", 1, 512, dpo=True)
    assert dpo.activations_bytes == M.estimate_training_memory("mistral-7b", "lora", 2, 512).activations_bytes
    assert dpo.reference_weights_bytes == 0
    full_dpo = M.estimate_training_memory("mistral-7b", "full", 1, 512, dpo=True)
    assert full_dpo.reference_weights_bytes == 2 * full_dpo.total_params


def test_eager_attention_grows_quadratically():
    spec, regime = M.load_model_spec("llama-2-7b"), M.precision_regime("full", "bf16")
    eager = [M.layer_activation_terms(spec, "full", regime, s, attention="eager")["attention scores (s x s)"] for s in (1024, 2048)]
    assert eager[1] == 2 * eager[0]  # per token, so quadratic per sequence
    assert "attention scores (s x s)" not in M.layer_activation_terms(spec, "full", regime, 2048)


# --- command line -----------------------------------------------------------


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(UTILS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ftlab.memory", *args], capture_output=True, text=True, env=env)


def test_cli_json_keys():
    out = _cli("--config", "llama-2-7b", "--method", "qlora", "--batch-size", "4", "--seq-len", "512", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    keys = {"weights_bytes", "trainable_params", "gradients_bytes", "optimizer_bytes", "activations_bytes",
            "logits_bytes", "peak_bytes", "assumptions"}
    assert keys <= data.keys()
    assert data["trainable_params"] == 4_194_304 and isinstance(data["assumptions"], list)


def test_cli_table_and_config_path(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    out = _cli("--config", str(path), "--method", "full", "--batch-size", "1", "--seq-len", "8", "--optimizer", "adamw_8bit")
    assert out.returncode == 0, out.stderr
    assert "PEAK" in out.stdout and "optimizer states" in out.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config", "llama-2-7b", "--method", "lora", "--batch-size", "-1", "--seq-len", "8"], "--batch-size"),
        (["--config", "llama-2-7b", "--method", "lora", "--batch-size", "1", "--seq-len", "0"], "--seq-len"),
        (["--config", "llama-2-7b", "--method", "prefix", "--batch-size", "1", "--seq-len", "8"], "unknown method"),
        (["--config", "no-such-model", "--method", "lora", "--batch-size", "1", "--seq-len", "8"], "unknown preset"),
        (["--config", "llama-2-7b", "--method", "lora", "--batch-size", "1", "--seq-len", "8", "--lora-targets", "wq"], "LoRA target"),
    ],
)
def test_cli_errors_name_the_problem(args, message):
    out = _cli(*args)
    assert out.returncode != 0
    assert message in out.stderr


def test_cli_missing_config_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in TINY.items() if k != "intermediate_size"}))
    out = _cli("--config", str(path), "--method", "lora", "--batch-size", "1", "--seq-len", "8")
    assert out.returncode != 0 and "intermediate_size" in out.stderr
