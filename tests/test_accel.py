"""The unsloth switch, with CUDA and unsloth mocked (unsloth is not installed here)."""

import sys
import types

import pytest
import torch

from ftlab import accel
from ftlab import profile as P


@pytest.fixture
def gpu(monkeypatch):
    def set_gpu(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    return set_gpu


@pytest.fixture
def fake_unsloth(monkeypatch):
    calls = []

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls.append(("from_pretrained", kwargs))
            return "unsloth-model", "unsloth-tokenizer"

        @staticmethod
        def get_peft_model(model, **kwargs):
            calls.append(("get_peft_model", kwargs))
            return "unsloth-peft-model"

    module = types.ModuleType("unsloth")
    module.FastLanguageModel = FastLanguageModel
    module.PatchDPOTrainer = lambda: calls.append(("PatchDPOTrainer", {}))
    monkeypatch.setitem(sys.modules, "unsloth", module)
    return calls


def test_off_by_default_and_on_cpu(gpu):
    gpu(None)
    assert not accel.choose_backend(P.get_profile("t4"), env={}).unsloth
    backend = accel.choose_backend(P.get_profile("cpu"), env={"FTLAB_UNSLOTH": "1"})
    assert not backend.unsloth and "no CUDA GPU" in backend.reason and backend.name == "transformers+peft"


def test_bad_value_names_the_fix():
    with pytest.raises(ValueError, match="use 1"):
        accel.choose_backend(P.get_profile("cpu"), env={"FTLAB_UNSLOTH": "maybe"})


def test_gpu_without_unsloth_falls_back(gpu, monkeypatch):
    gpu((8, 0))
    monkeypatch.setattr(accel, "unsloth_installed", lambda: False)
    backend = accel.choose_backend(P.get_profile("a100"), env={"FTLAB_UNSLOTH": "1"})
    assert not backend.unsloth and "not installed" in backend.reason


def test_old_gpu_falls_back(gpu, fake_unsloth):
    gpu((6, 1))
    backend = accel.choose_backend(P.get_profile("t4"), env={"FTLAB_UNSLOTH": "auto"})
    assert not backend.unsloth and "6.1" in backend.reason


def test_unsloth_path_loads_and_adds_lora(gpu, fake_unsloth, monkeypatch):
    from peft import LoraConfig

    gpu((7, 5))
    prof = P.get_profile("t4")
    backend = accel.choose_backend(prof, env={"FTLAB_UNSLOTH": "1"})
    assert backend.unsloth and backend.name == "unsloth"
    monkeypatch.setattr(accel, "PATCHED_BY_UNSLOTH", ())  # transformers is loaded in this test process
    model, tok = accel.load_model(prof, backend, load_in_4bit=True)
    name, kwargs = fake_unsloth[-1]
    assert (model, name) == ("unsloth-model", "from_pretrained")
    assert kwargs["model_name"] == P.T4_MODEL_ID and kwargs["load_in_4bit"] and kwargs["dtype"] == torch.float16
    assert kwargs["max_seq_length"] == prof.max_seq_length
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
    assert accel.add_lora(model, config, prof, backend, seed=3) == "unsloth-peft-model"
    name, kwargs = fake_unsloth[-1]
    assert kwargs["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert kwargs["use_gradient_checkpointing"] == "unsloth" and kwargs["random_state"] == 3 and kwargs["r"] == 16
    accel.prepare_dpo(backend)
    assert fake_unsloth[-1][0] == "PatchDPOTrainer"


def test_import_order_warning(gpu, fake_unsloth):
    gpu((8, 0))
    backend = accel.choose_backend(P.get_profile("a100"), env={"FTLAB_UNSLOTH": "1"})
    import transformers  # noqa: F401  (already imported: the warning must say so)

    with pytest.warns(UserWarning, match="imported before unsloth"):
        accel.import_unsloth_first(backend)


def test_plain_path_uses_transformers_and_peft(monkeypatch, fake_unsloth):
    import peft

    calls = {}

    def fake_load(prof, **kwargs):
        calls["load"] = kwargs
        return "model", "tokenizer"

    def fake_prepare(model, **kwargs):
        calls["kbit"] = kwargs
        return "prepared"

    monkeypatch.setattr(P, "load_model_and_tokenizer", fake_load)
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", fake_prepare)
    monkeypatch.setattr(peft, "get_peft_model", lambda model, config: ("peft", model))
    plain = accel.Backend(False, "test")
    model, tok = accel.load_model(P.get_profile("t4"), plain, load_in_4bit=True)
    assert model == "prepared" and calls["load"] == {"load_in_4bit": True}
    assert calls["kbit"] == {"use_gradient_checkpointing": True}
    assert accel.add_lora("base", peft.LoraConfig(r=4), P.get_profile("t4"), plain) == ("peft", "base")
    assert fake_unsloth == []  # unsloth never touched
    assert accel.lora_target_list({"v_proj", "q_proj"}) == ["q_proj", "v_proj"]


def test_device_map_per_process():
    gpu, cpu = P.get_profile("a100"), P.get_profile("cpu")
    assert accel.distributed_device_map(gpu, env={}) == "profile"
    assert accel.distributed_device_map(cpu, env={"WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == "profile"
    assert accel.distributed_device_map(gpu, env={"WORLD_SIZE": "4", "LOCAL_RANK": "3"}) == {"": 3}
    assert accel.distributed_device_map(gpu, env={"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true"}) is None
