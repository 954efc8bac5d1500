"""Lab 06 exercise checks: the reference solutions pass, plausible wrong answers fail."""

import math

import pytest
import torch
from torch import nn

from ftlab.checks import lab06


class LoRALinear(nn.Module):
    """The solution; ``bug`` names one plausible mistake."""

    bug = None

    def __init__(self, base, r, alpha, dropout=0.0, use_rslora=False):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        if self.bug == "no scaling":
            self.scaling = 1.0
        elif self.bug == "r/alpha":
            self.scaling = r / alpha
        elif self.bug == "rslora ignored":
            self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if self.bug == "B random, A zero":
            nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
            nn.init.zeros_(self.lora_A)
        elif self.bug == "gaussian A":
            nn.init.normal_(self.lora_A, std=1 / r)
        self.merged = False

    def forward(self, x):
        out = self.base(x)
        if self.merged:
            return out
        if self.bug == "dropout on output":
            return out + self.dropout((x @ self.lora_A.T) @ self.lora_B.T * self.scaling)
        return out + (self.dropout(x) @ self.lora_A.T) @ self.lora_B.T * self.scaling

    def delta(self):
        scale = 1.0 if self.bug == "merge without scaling" else self.scaling
        return scale * self.lora_B @ self.lora_A

    def merge(self):
        with torch.no_grad():
            self.base.weight += self.delta()
        self.merged = True

    def unmerge(self):
        with torch.no_grad():
            self.base.weight -= self.delta()
        self.merged = False


def with_bug(bug):
    return type(f"LoRALinear_{bug}", (LoRALinear,), {"bug": bug})


def test_lora_linear_solution_passes():
    lab06.check_lora_linear(LoRALinear)


@pytest.mark.parametrize("bug, message", [
    ("no scaling", "scaling"),
    ("r/alpha", "scaling"),
    ("rslora ignored", "sqrt"),
    ("B random, A zero", "B must start at zero"),
    ("gaussian A", "Kaiming"),
    ("dropout on output", "input x of the LoRA branch"),
    ("merge without scaling", "merge"),
])
def test_lora_linear_wrong_variants_fail(bug, message):
    with pytest.raises(AssertionError, match=message):
        lab06.check_lora_linear(with_bug(bug))


def count_all_linear(model, r, skip_head=True, a_only=False):
    return sum((r * m.in_features if a_only else r * (m.in_features + m.out_features))
               for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and not (skip_head and name.endswith("lm_head")))


def test_lora_count_solution_passes():
    lab06.check_lora_count(count_all_linear)


@pytest.mark.parametrize("wrong", [dict(skip_head=False), dict(a_only=True)], ids=["lm_head counted", "A only"])
def test_lora_count_wrong_variants_fail(wrong):
    with pytest.raises(AssertionError, match="peft trains"):
        lab06.check_lora_count(lambda model, r: count_all_linear(model, r, **wrong))
