"""Hardware profiles: detection with the CUDA queries mocked."""

import pytest
import torch

from ftlab import profile as P


def fake_gpu(monkeypatch, name, capability, bf16_supported=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    # A T4 reports bf16 "supported" through emulation: detection must not ask this.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)


def test_cpu_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    prof = P.detect_profile(env={})
    assert prof.name == "cpu" and prof.device == "cpu"
    assert prof.is_tiny and prof.dtype == "float32"
    assert prof.training_kwargs()["use_cpu"] is True
    assert not prof.training_kwargs()["bf16"] and not prof.training_kwargs()["fp16"]


def test_t4_gets_fp16_even_if_bf16_is_reported(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4", (7, 5), bf16_supported=True)
    prof = P.detect_profile(env={})
    assert prof.name == "t4"
    assert prof.dtype == "float16"
    assert prof.training_kwargs()["fp16"] is True and prof.training_kwargs()["bf16"] is False
    assert "7.5" in prof.reason
    assert prof.model_id == P.T4_MODEL_ID


def test_a100_gets_bf16(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0))
    prof = P.detect_profile(env={})
    assert prof.name == "a100" and prof.dtype == "bfloat16"
    assert prof.training_kwargs()["bf16"] is True
    assert prof.model_id == P.A100_MODEL_ID


def test_h100_is_a100_profile(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0))
    assert P.detect_profile(env={}).name == "a100"


def test_env_override_to_cpu_on_gpu_machine(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA A100", (8, 0))
    prof = P.detect_profile(env={"FTLAB_PROFILE": "cpu"})
    assert prof.name == "cpu" and "FTLAB_PROFILE" in prof.reason


def test_env_override_t4_on_a100(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA A100", (8, 0))
    prof = P.detect_profile(env={"FTLAB_PROFILE": "t4"})
    assert prof.name == "t4" and prof.dtype == "float16"


def test_gpu_profile_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        P.detect_profile(env={"FTLAB_PROFILE": "a100"})


def test_unknown_profile_name(monkeypatch):
    with pytest.raises(ValueError, match="not a profile"):
        P.detect_profile(env={"FTLAB_PROFILE": "tpu"})
    with pytest.raises(ValueError, match="unknown profile"):
        P.get_profile("v100")


def test_effective_batch_and_overrides():
    prof = P.get_profile("t4")
    assert prof.effective_batch_size == prof.per_device_train_batch_size * prof.gradient_accumulation_steps
    assert prof.training_kwargs(max_steps=7)["max_steps"] == 7
    assert prof.with_overrides(max_steps=3).max_steps == 3


def test_gpu_loading_code_builds_real_from_pretrained_calls(monkeypatch):
    """The GPU path calls from_pretrained(hub id) with the QLoRA config (no download: mocked)."""
    import transformers

    calls = {}

    def fake_model(source, **kwargs):
        calls["model"] = (source, kwargs)
        return "model"

    def fake_tok(source, **kwargs):
        calls["tokenizer"] = source
        return "tokenizer"

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    model, tok = P.load_model_and_tokenizer(P.get_profile("t4"), load_in_4bit=True)
    source, kwargs = calls["model"]
    assert source == P.T4_MODEL_ID and calls["tokenizer"] == P.T4_MODEL_ID
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16
    assert kwargs["dtype"] == torch.float16 and kwargs["device_map"] == "auto"
    P.load_model_and_tokenizer(P.get_profile("t4"), load_in_4bit=True, compute_dtype=torch.float32)
    assert calls["model"][1]["quantization_config"].bnb_4bit_compute_dtype == torch.float32


# --- GPU profiles: memory sizing and attention kernel (mocked CUDA properties) ---

T4_BYTES = 15_642_329_088  # what torch reports for a Tesla T4


def fake_gpu_memory(monkeypatch, name, capability, total_memory):
    from types import SimpleNamespace

    fake_gpu(monkeypatch, name, capability)
    props = SimpleNamespace(name=name, major=capability[0], minor=capability[1], total_memory=total_memory)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)


def test_cpu_profile_values_are_frozen():
    """The CPU notebooks' stored outputs depend on every one of these values."""
    prof = P.get_profile("cpu")
    assert (prof.model_id, prof.dtype, prof.max_seq_length, prof.per_device_train_batch_size,
            prof.gradient_accumulation_steps, prof.max_steps, prof.learning_rate, prof.optim,
            prof.gradient_checkpointing, prof.gpu_name, prof.compute_capability) == (
        P.TINY_MODEL_ID, "float32", 128, 32, 1, 400, 2e-3, "adamw_torch", False, "", None)
    assert "gradient_checkpointing_kwargs" not in prof.training_kwargs()


def test_t4_keeps_its_batch_and_fits_with_a_margin(monkeypatch):
    fake_gpu_memory(monkeypatch, "Tesla T4", (7, 5), T4_BYTES)
    prof = P.detect_profile(env={})
    assert (prof.name, prof.dtype, prof.per_device_train_batch_size, prof.gradient_accumulation_steps) == ("t4", "float16", 4, 4)
    assert prof.gradient_checkpointing and prof.training_kwargs()["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    peak = P.estimate_profile_peak(prof).peak_bytes
    assert peak <= P.memory_budget(T4_BYTES) < T4_BYTES and "fits" in prof.reason
    assert P.attention_implementation(prof) == "sdpa"


def test_smaller_card_gets_a_smaller_batch_and_the_same_effective_batch(monkeypatch):
    fake_gpu_memory(monkeypatch, "Tesla T4 (8 GiB slice)", (7, 5), 8 * 1024**3)
    prof = P.detect_profile(env={})
    assert prof.per_device_train_batch_size < 4 and prof.effective_batch_size == 16
    assert P.estimate_profile_peak(prof).peak_bytes <= P.memory_budget(8 * 1024**3)
    assert P.estimate_profile_peak(prof, prof.per_device_train_batch_size * 2).peak_bytes > P.memory_budget(8 * 1024**3)


def test_a100_40gb_and_80gb(monkeypatch):
    for total in (42_505_273_344, 85_899_345_920):
        fake_gpu_memory(monkeypatch, "NVIDIA A100", (8, 0), total)
        prof = P.detect_profile(env={})
        assert (prof.name, prof.dtype, prof.per_device_train_batch_size, prof.gradient_accumulation_steps) == ("a100", "bfloat16", 8, 2)
        assert prof.training_kwargs()["bf16"] and P.estimate_profile_peak(prof).peak_bytes <= P.memory_budget(total)


def test_24gb_ampere_card_shrinks_the_7b_batch(monkeypatch):
    fake_gpu_memory(monkeypatch, "NVIDIA A10G", (8, 6), 24 * 1024**3)
    prof = P.detect_profile(env={})
    assert prof.name == "a100" and prof.per_device_train_batch_size <= 2 and prof.effective_batch_size == 16


def test_card_too_small_says_what_to_do(monkeypatch):
    fake_gpu_memory(monkeypatch, "tiny card", (8, 0), 4 * 1024**3)
    prof = P.detect_profile(env={})
    assert prof.per_device_train_batch_size == 1 and "does NOT fit" in prof.reason and "load_in_4bit" in prof.reason


def test_flash_attention_only_when_importable_and_ampere(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    assert P.attention_implementation(P.get_profile("a100")) == "flash_attention_2"
    assert P.attention_implementation(P.get_profile("t4")) == "sdpa"  # FlashAttention 2 needs compute capability 8.0
    assert P.attention_implementation(P.get_profile("cpu")) == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    assert P.attention_implementation(P.get_profile("a100")) == "sdpa"


def test_attention_kwarg_only_on_gpu(monkeypatch):
    import transformers

    calls = []
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda s, **kw: calls.append(kw) or "m")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda s, **kw: "t")
    monkeypatch.setattr(P, "resolve_model_path", lambda profile: "somewhere")
    P.load_model_and_tokenizer(P.get_profile("a100"))
    assert calls[-1]["attn_implementation"] in ("sdpa", "flash_attention_2")
    P.load_model_and_tokenizer(P.get_profile("cpu"))
    assert calls[-1] == {"dtype": torch.float32}  # the CPU call is unchanged
