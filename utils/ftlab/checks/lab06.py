"""Checks for lab 06 (LoRA from scratch), against peft's own LoRA layer.

- ``check_lora_linear``: the learner's ``LoRALinear(base, r, alpha, dropout,
  use_rslora)`` against ``peft.tuners.lora.Linear`` (made by ``get_peft_model``
  on a one-layer module) with the same A and B copied in: shapes, scaling
  (alpha/r, or alpha/sqrt(r) for rsLoRA), initialisation (B zero, A
  Kaiming-uniform as peft's default), outputs in eval and train mode (dropout on
  the LoRA input, same random stream), merge and unmerge.
- ``check_lora_count``: the learner's trainable-parameter count for
  ``target_modules="all-linear"`` against what peft creates.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

# (d_in, d_out, r, alpha, bias, dropout, use_rslora, seed): shapes the learner does not choose
LAYER_CASES = (
    (64, 48, 8, 16, False, 0.0, False, 0),
    (40, 72, 4, 32, True, 0.3, False, 1),
    (96, 32, 16, 8, False, 0.2, True, 2),
)


def _get_peft_model(model: nn.Module, config):
    """``peft.get_peft_model`` without the FutureWarning transformers 5.23 raises inside it.

    peft reads the deprecated ``is_gradient_checkpointing`` property of transformers models;
    nothing here uses gradient checkpointing.
    """
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*` is deprecated.*", category=FutureWarning)
        return get_peft_model(model, config)


class _OneLayer(nn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.proj = layer

    def forward(self, x):
        return self.proj(x)


def peft_lora_layer(base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
    """peft's ``lora.Linear`` wrapping a copy of ``base`` (built by ``get_peft_model``)."""
    from peft import LoraConfig

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, use_rslora=use_rslora, target_modules=["proj"])
    model = _get_peft_model(_OneLayer(copy.deepcopy(base)), config)
    return model.base_model.model.proj


def _close(a: torch.Tensor, b: torch.Tensor, what: str, hint: str) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    err = (a - b).abs().max().item()
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), f"{what}: max difference {err:.2e} from peft. {hint}"


def _check_one(cls: Callable, d_in: int, d_out: int, r: int, alpha: float, bias: bool, dropout: float,
               use_rslora: bool, seed: int) -> None:
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out, bias=bias)
    w0 = base.weight.detach().clone()
    x = torch.randn(3, 5, d_in)  # (batch, tokens, d_in)
    ref = peft_lora_layer(base, r, alpha, dropout, use_rslora)
    mine = cls(copy.deepcopy(base), r, alpha, dropout=dropout, use_rslora=use_rslora)
    label = f"d_in={d_in}, d_out={d_out}, r={r}, alpha={alpha}, dropout={dropout}, rslora={use_rslora}"

    # shapes, scaling, what trains
    assert tuple(mine.lora_A.shape) == (r, d_in), f"{label}: lora_A shape {tuple(mine.lora_A.shape)}, expected (r, d_in)"
    assert tuple(mine.lora_B.shape) == (d_out, r), f"{label}: lora_B shape {tuple(mine.lora_B.shape)}, expected (d_out, r)"
    want = ref.scaling["default"]
    assert math.isclose(float(mine.scaling), want, rel_tol=1e-9), (
        f"{label}: scaling {float(mine.scaling):.4g}, peft uses {want:.4g} "
        f"({'alpha / sqrt(r)' if use_rslora else 'alpha / r'})")
    assert not any(p.requires_grad for p in mine.base.parameters()), f"{label}: freeze the base layer (requires_grad_(False))"
    assert mine.lora_A.requires_grad and mine.lora_B.requires_grad, f"{label}: A and B must be trainable"

    # initialisation: B zero, A Kaiming-uniform (bound 1/sqrt(d_in), peft's default); output = base output
    assert torch.count_nonzero(mine.lora_B) == 0, f"{label}: B must start at zero (so the layer starts as the base layer)"
    bound = 1 / math.sqrt(d_in)
    a = mine.lora_A.detach()
    assert a.abs().max() <= bound + 1e-6 and a.std() > 0.3 * bound, (
        f"{label}: A should be Kaiming-uniform like peft (nn.init.kaiming_uniform_(A, a=math.sqrt(5)), "
        f"values within +-{bound:.3f}); got max |A| {a.abs().max():.3f}, std {a.std():.3f}")
    mine.eval()
    with torch.no_grad():
        assert torch.equal(mine(x), base(x)), f"{label}: at initialisation the output must equal the base layer's exactly"

    # same random A and B in both layers: outputs in eval mode, then in train mode (dropout)
    with torch.no_grad():
        for p in (mine.lora_A, mine.lora_B):
            p.copy_(torch.randn_like(p) * 0.2)
        ref.lora_A["default"].weight.copy_(mine.lora_A)
        ref.lora_B["default"].weight.copy_(mine.lora_B)
    ref.eval()
    with torch.no_grad():
        y_eval = ref(x)
        _close(mine(x), y_eval, f"{label}, eval mode",
               "forward = base(x) + dropout(x) @ A^T @ B^T * scaling; dropout is off in eval mode")
    if dropout > 0:
        mine.train(), ref.train()
        with torch.no_grad():
            torch.manual_seed(seed + 100)
            y_ref = ref(x)
            torch.manual_seed(seed + 100)
            y_mine = mine(x)
        _close(y_mine, y_ref, f"{label}, train mode",
               "apply dropout (nn.Dropout) once, to the input x of the LoRA branch only, not to its output")
        mine.eval(), ref.eval()

    # merge: W + scaling * B @ A, then the forward must not add the update a second time
    mine.merge()
    ref.merge()
    _close(mine.base.weight.detach(), ref.get_base_layer().weight.detach(), f"{label}, merged weight",
           "merge adds scaling * B @ A to W")
    with torch.no_grad():
        _close(mine(x), y_eval, f"{label}, output after merge",
               "after merge the forward is the base layer alone (keep a `merged` flag)")
    mine.unmerge()
    _close(mine.base.weight.detach(), w0, f"{label}, weight after unmerge", "unmerge subtracts scaling * B @ A again")
    with torch.no_grad():
        _close(mine(x), y_eval, f"{label}, output after unmerge", "after unmerge the LoRA branch is active again")


def check_lora_linear(cls: Callable, cases: Sequence[tuple] = LAYER_CASES) -> None:
    """``cls(base, r, alpha, dropout=..., use_rslora=...)`` must behave like peft's LoRA layer on ``cases``."""
    for case in cases:
        _check_one(cls, *case)


# (hidden, intermediate, layers, heads, kv_heads, vocab, r): tiny Llama shapes
COUNT_CASES = ((64, 176, 2, 4, 2, 100, 8), (96, 128, 3, 6, 3, 120, 4))


def check_lora_count(count: Callable, cases: Sequence[tuple] = COUNT_CASES) -> None:
    """``count(model, r)`` must equal peft's trainable parameters with ``target_modules="all-linear"``."""
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    for hidden, inter, layers, heads, kv, vocab, r in cases:
        config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab)
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
            peft_model = _get_peft_model(copy.deepcopy(model), LoraConfig(r=r, target_modules="all-linear"))
        want = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        got = count(model, r)
        assert got == want, (
            f"hidden {hidden}, {layers} layers, r={r}: you count {got:,}, peft trains {want:,} "
            "(r * (d_in + d_out) for every nn.Linear except lm_head)")
