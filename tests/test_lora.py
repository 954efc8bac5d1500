"""ftlab.lora: the LoRA layer, the count formula, merging, PEFT equivalence, LoRA+ and GaLore helpers."""

import math

import pytest
import torch
from torch import nn

from ftlab import lora

# peft reads the deprecated `is_gradient_checkpointing` property of transformers 5.23 models.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

TARGETS = ["q_proj", "v_proj"]


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (4, 12))  # (batch, tokens)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
def test_layer_equals_base_at_step_zero(init):
    torch.manual_seed(0)
    base = nn.Linear(16, 24)
    layer = lora.LoRALinear(base, r=4, alpha=8, init=init)
    x = torch.randn(3, 5, 16)  # (batch, tokens, d_in)
    assert torch.equal(layer(x), base(x))
    assert layer.lora_A.shape == (4, 16) and layer.lora_B.shape == (24, 4)
    assert layer.lora_A.abs().sum() > 0 and layer.lora_B.abs().sum() == 0
    assert not base.weight.requires_grad and layer.lora_A.requires_grad
    with pytest.raises(ValueError):
        lora.LoRALinear(nn.Linear(4, 4), r=2, alpha=2, init="zeros")


def test_scaling_and_count_formula():
    assert lora.lora_scaling(16, 8) == 2.0
    assert lora.lora_scaling(16, 64, rslora=True) == 2.0
    assert lora.lora_param_count(4096, 4096, 8) == 65_536
    # Llama-2-7B, r=8 on q_proj and v_proj of 32 layers: the 4,194,304 in the PEFT docs
    assert 32 * 2 * lora.lora_param_count(4096, 4096, 8) == 4_194_304
    with pytest.raises(ValueError):
        lora.lora_scaling(16, 0)


@pytest.mark.parametrize("targets", [TARGETS, "all-linear"])
def test_injected_count_matches_formula_and_peft(targets):
    from peft import LoraConfig, get_peft_model

    expected = lora.expected_lora_params(tiny_llama(), 8, targets)
    ours = tiny_llama()
    names = lora.inject_lora(ours, targets, r=8, alpha=16)
    assert lora.count_parameters(ours) == expected
    assert all(not n.endswith("lm_head") for n in names)
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    assert lora.count_parameters(peft_model) == expected


def test_merge_and_unload(batch):
    model = tiny_llama()
    reference = logits(model, batch)
    lora.inject_lora(model, TARGETS, r=4, alpha=8)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.05)  # pretend we trained
    unmerged = logits(model, batch)
    assert not torch.allclose(unmerged, reference)
    weights = lora.lora_weights(model)
    assert lora.merge_lora(model) == 4
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    torch.testing.assert_close(logits(model, batch), unmerged, atol=1e-5, rtol=1e-5)
    again = tiny_llama()
    lora.inject_lora(again, TARGETS, r=4, alpha=8)
    assert lora.unload_lora(again) == 4
    assert torch.equal(logits(again, batch), reference)
    assert set(weights) == {f"model.layers.{i}.self_attn.{t}" for i in range(2) for t in TARGETS}


def test_copy_into_peft_gives_the_same_outputs(batch):
    from peft import LoraConfig, get_peft_model

    ours = tiny_llama()
    lora.inject_lora(ours, TARGETS, r=4, alpha=8)
    for name, p in ours.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.05)
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    assert lora.copy_into_peft(peft_model, lora.lora_weights(ours)) == 4
    torch.testing.assert_close(logits(peft_model, batch), logits(ours, batch), atol=1e-6, rtol=1e-6)
    with pytest.raises(KeyError):
        lora.copy_into_peft(peft_model, {"model.nowhere": (torch.zeros(1), torch.zeros(1))})


def test_training_lowers_the_loss_and_touches_only_adapters(batch):
    model = tiny_llama()
    frozen = {n: p.clone() for n, p in model.named_parameters()}
    lora.inject_lora(model, TARGETS, r=4, alpha=8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    log = lora.train_causal_lm(model, [batch], optimizer, steps=15)
    assert log[-1]["loss"] < log[0]["loss"] and [r["step"] for r in log] == list(range(1, 16))
    lora.unload_lora(model)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters())


def test_loraplus_groups_match_peft():
    from peft import LoraConfig, get_peft_model
    from peft.optimizers import create_loraplus_optimizer

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    groups = lora.loraplus_param_groups(model, lr=1e-3, ratio=16)
    assert [g["lr"] for g in groups] == [1e-3, 16e-3]
    reference = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16)
    by_lr = {}
    for group in reference.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert by_lr[1e-3] == {id(p) for p in groups[0]["params"]}
    assert by_lr[16e-3] == {id(p) for p in groups[1]["params"]}


def test_galore_projection():
    torch.manual_seed(0)
    low_rank = torch.randn(40, 3) @ torch.randn(3, 30)  # (m, n) of rank 3
    p, small = lora.galore_project(low_rank, rank=3)
    assert p.shape == (40, 3) and small.shape == (3, 30)
    torch.testing.assert_close(p @ small, low_rank, atol=1e-4, rtol=1e-4)
    energy = lora.captured_energy(torch.randn(40, 30), [1, 5, 30])
    assert energy[1] < energy[5] < energy[30] and math.isclose(energy[30], 1.0, rel_tol=1e-5)


def test_completion_batches_mask_prompt_and_padding():
    from ftlab import tiny

    tok = tiny.train_tokenizer(["질문입니다 답변입니다 공유기 전원"] * 20, vocab_size=300)
    pairs = [{"prompt": "질문입니다 ", "completion": "답변입니다" + tok.eos_token},
             {"prompt": "공유기 ", "completion": "전원" + tok.eos_token}]
    (batch,) = lora.completion_batches(tok, pairs, batch_size=2)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, pair in enumerate(pairs):
        kept = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert tok.decode(kept).strip() == pair["completion"]  # a space may ride with the answer token
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_assert_logits_close():
    a = torch.randn(2, 3, 10)
    assert lora.assert_logits_close(a + 1e-6, a) < 1e-5
    assert lora.assert_logits_close(a + 0.01, a, tight=False) == pytest.approx(0.01, abs=1e-5)
    with pytest.raises(AssertionError):
        lora.assert_logits_close(a + 0.1, a)


def test_reference_layer_matches_peft_layer():
    """The course's LoRALinear passes the lab 06 exercise check (peft's lora.Linear, train and eval, merge)."""
    from ftlab.checks import lab06

    lab06.check_lora_linear(lora.LoRALinear)


def test_merge_unmerge_round_trip_and_merged_linear():
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    w0 = base.weight.detach().clone()
    layer = lora.LoRALinear(base, r=2, alpha=4)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 12)
    with torch.no_grad():
        before = layer(x)
        plain = lora.merged_linear(layer)(x)
        layer.merge()
        layer.merge()  # a second merge is a no-op
        torch.testing.assert_close(layer(x), before)
        torch.testing.assert_close(lora.merged_linear(layer)(x), plain)  # no double update
        layer.unmerge()
    torch.testing.assert_close(layer.base.weight, w0)
