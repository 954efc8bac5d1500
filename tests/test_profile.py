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
