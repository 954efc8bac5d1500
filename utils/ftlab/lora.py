"""LoRA from scratch: the layer, the parameter-count formula, merging, injection.

Conventions follow the LoRA paper (Hu et al. 2021, arXiv:2106.09685) and PEFT.
A frozen linear layer computes ``y = x W^T`` with ``W`` of shape (d_out, d_in).
LoRA adds a low-rank path::

    y = x W^T + (alpha / r) * x A^T B^T        A: (r, d_in), B: (d_out, r)

``A`` starts random and ``B`` starts at zero, so ``B @ A = 0`` and the layer
returns exactly the base output at step 0. After training the update can be
folded into the weight, ``W' = W + (alpha / r) * B @ A`` (merging), and the
layer is an ordinary ``nn.Linear`` again: no extra cost at inference.

Lab 06 writes this layer itself and checks it against peft's LoRA layer
(``ftlab.checks.lab06``); ``LoRALinear`` here passes the same check. ``galore_project`` shows GaLore's gradient projection
(Zhao et al. 2024, arXiv:2403.03507) on one gradient matrix.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

ALL_LINEAR = "all-linear"


def lora_scaling(alpha: float, r: int, rslora: bool = False) -> float:
    """``alpha / r`` (LoRA) or ``alpha / sqrt(r)`` (rsLoRA, Kalajdzievski 2023, arXiv:2312.03732)."""
    if r <= 0:
        raise ValueError(f"LoRA rank r must be positive, got {r}")
    return alpha / math.sqrt(r) if rslora else alpha / r


def lora_param_count(d_in: int, d_out: int, r: int) -> int:
    """Trainable parameters of one adapted layer: A has r*d_in, B has d_out*r."""
    return r * (d_in + d_out)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha/r) * B @ A``, as peft's ``lora.Linear``.

    ``forward(x) = base(x) + dropout(x) @ A^T @ B^T * scaling``: dropout acts on
    the input of the LoRA branch only. ``init="kaiming"`` (peft's default) draws
    A like ``nn.Linear`` does (Kaiming-uniform, bound 1/sqrt(d_in));
    ``init="gaussian"`` draws A from N(0, 1/r^2) (peft's
    ``init_lora_weights="gaussian"``). B is always zero. ``use_rslora`` scales by
    alpha/sqrt(r). ``merge()`` adds the update to W in place (the forward is
    then the base layer alone) and ``unmerge()`` subtracts it again. The adapter
    is kept in fp32 even when the base layer is fp16/bf16, as peft does.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 init: str = "kaiming", use_rslora: bool = False):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = lora_scaling(alpha, r, use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=device))  # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=device))  # (d_out, r)
        self.merged = False
        if init == "gaussian":
            nn.init.normal_(self.lora_A, std=1 / r)
        elif init == "kaiming":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            raise ValueError(f"init={init!r}: use 'gaussian' or 'kaiming'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d_in)
        out = self.base(x)  # (..., d_out)
        if self.merged:  # the update is already inside W
            return out
        h = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T  # (..., r)
        return out + (self.scaling * (h @ self.lora_B.T)).to(out.dtype)  # (..., d_out)

    def merge(self) -> None:
        """W <- W + scaling * B @ A, in place (computed in fp32); the LoRA branch is then skipped."""
        if not self.merged:
            self._shift_weight(+1.0)
            self.merged = True

    def unmerge(self) -> None:
        """W <- W - scaling * B @ A: undo ``merge`` (exact up to rounding in W's dtype)."""
        if self.merged:
            self._shift_weight(-1.0)
            self.merged = False

    def _shift_weight(self, sign: float) -> None:
        weight = self.base.weight
        with torch.no_grad():
            weight.copy_((weight.float() + sign * delta_weight(self).float()).to(weight.dtype))

    def delta_weight(self) -> torch.Tensor:
        """The update this adapter adds to W: ``(alpha/r) * B @ A``, shape (d_out, d_in)."""
        return delta_weight(self)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + delta`` (see ``merged_linear``)."""
        return merged_linear(self)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}"


def delta_weight(layer: nn.Module) -> torch.Tensor:
    """``layer.scaling * B @ A`` (d_out, d_in) of any LoRA layer with ``lora_A``, ``lora_B``, ``scaling``."""
    return layer.scaling * (layer.lora_B @ layer.lora_A)


def merged_linear(layer: nn.Module) -> nn.Linear:
    """A plain ``nn.Linear`` holding ``W + (alpha/r) B A`` for a LoRA layer with a ``base`` linear.

    The sum is computed in fp32 and stored in W's dtype (upcast, add, cast back).
    Works for ``LoRALinear`` and for any layer with the same attribute names,
    such as the one a learner writes in lab 06.
    """
    base = layer.base
    out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                    device=base.weight.device, dtype=base.weight.dtype)
    with torch.no_grad():
        delta = 0.0 if getattr(layer, "merged", False) else delta_weight(layer).float()  # merged: W has it
        out.weight.copy_((base.weight.float() + delta).to(base.weight.dtype))
        if base.bias is not None:
            out.bias.copy_(base.bias)
    return out.requires_grad_(False)


def _is_target(name: str, module: nn.Module, targets: str | Sequence[str]) -> bool:
    if not isinstance(module, nn.Linear) or isinstance(module, LoRALinear):
        return False
    leaf = name.rsplit(".", 1)[-1]
    if targets == ALL_LINEAR:  # as in PEFT: every linear layer except the output head
        return leaf != "lm_head" and ".lora_" not in name
    return leaf in targets


def target_linears(model: nn.Module, targets: str | Sequence[str]) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules an adapter would wrap, by full name.

    ``targets`` is a list of leaf names (``["q_proj", "v_proj"]``) or ``"all-linear"``.
    """
    found = {name: m for name, m in model.named_modules() if _is_target(name, m, targets)}
    if not found:
        raise ValueError(f"no nn.Linear in the model matches targets={targets!r}")
    return found


def expected_lora_params(model: nn.Module, r: int, targets: str | Sequence[str]) -> int:
    """The formula: sum of r * (d_in + d_out) over the target layers."""
    return sum(lora_param_count(m.in_features, m.out_features, r) for m in target_linears(model, targets).values())


def inject_lora(model: nn.Module, targets: str | Sequence[str], r: int, alpha: float,
                layer_cls: type = LoRALinear, **layer_kwargs) -> list[str]:
    """Freeze ``model`` and wrap every target linear layer in ``layer_cls``; return their names.

    ``layer_cls(base, r, alpha, **layer_kwargs)`` may be the learner's own class.
    """
    model.requires_grad_(False)
    names = list(target_linears(model, targets))
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, layer_cls(getattr(parent, leaf), r, alpha, **layer_kwargs))
    return names


def _replace_lora(model: nn.Module, make) -> int:
    names = [name for name, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base")]
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, make(getattr(parent, leaf)))
    return len(names)


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA layer into its weight (W + (alpha/r) B A), in place; return how many."""
    return _replace_lora(model, merged_linear)


def unload_lora(model: nn.Module) -> int:
    """Drop every LoRA layer and put the untouched base layer back, in place; return how many."""
    return _replace_lora(model, lambda layer: layer.base)


def lora_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer name: (A, B)}`` copies of every LoRA layer's matrices."""
    return {
        name: (m.lora_A.detach().clone(), m.lora_B.detach().clone())
        for name, m in model.named_modules()
        if hasattr(m, "lora_A") and hasattr(m, "base")
    }


def copy_into_peft(peft_model: nn.Module, weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   adapter: str = "default") -> int:
    """Load ``lora_weights`` output into a PEFT model's ``lora_A``/``lora_B``; return layers copied.

    PEFT stores A as ``nn.Linear(d_in, r)`` (weight (r, d_in)) and B as
    ``nn.Linear(r, d_out)`` (weight (d_out, r)): the same shapes as ours.
    """
    modules = dict(peft_model.named_modules())
    with torch.no_grad():
        for name, (a, b) in weights.items():
            layer = modules.get(f"base_model.model.{name}")
            if layer is None or not hasattr(layer, "lora_A"):
                raise KeyError(f"{name}: no PEFT LoRA layer at base_model.model.{name}")
            layer.lora_A[adapter].weight.copy_(a)
            layer.lora_B[adapter].weight.copy_(b)
    return len(weights)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def completion_batches(tokenizer, pairs: Sequence[dict], batch_size: int, device="cpu") -> list[dict]:
    """Right-padded training batches from ``{"prompt", "completion"}`` pairs, on ``device``.

    Labels are the token ids of the completion only (prompt and padding are
    -100), so the loss is the answer's cross-entropy, as in trl's
    ``completion_only_loss`` (``ftlab.sft.completion_batch``, one batch each).
    """
    from ftlab.sft import completion_batch

    return [{k: v.to(device) for k, v in completion_batch(tokenizer, pairs[start : start + batch_size]).items()}
            for start in range(0, len(pairs), batch_size)]


def train_causal_lm(model: nn.Module, batches: Sequence[dict], optimizer: torch.optim.Optimizer,
                    steps: int, max_grad_norm: float = 1.0) -> list[dict]:
    """A plain training loop for short adapter comparisons.

    ``batches`` (dicts with ``input_ids``, ``attention_mask``, ``labels``) are used in
    order and cycled, so every run with the same list sees the same data.
    Returns ``[{"step", "loss", "seconds"}, ...]``: the loss before each update and
    the wall time of that step (forward, backward, optimizer).
    """
    import time

    params = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    log = []
    for step in range(steps):
        started = time.perf_counter()
        batch = batches[step % len(batches)]
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.append({"step": step + 1, "loss": loss.item(), "seconds": time.perf_counter() - started})
    model.eval()
    return log


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float) -> list[dict]:
    """LoRA+ (Hayou et al. 2024, arXiv:2402.12354): B learns ``ratio`` times faster than A.

    Returns optimizer parameter groups: every trainable ``lora_A`` at ``lr``,
    every other trainable tensor (``lora_B``, DoRA magnitudes) at ``lr * ratio``,
    the grouping peft's ``create_loraplus_optimizer`` uses.
    """
    group_a, group_b = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (group_a if "lora_A" in name else group_b).append(p)
    return [{"params": group_a, "lr": lr}, {"params": group_b, "lr": lr * ratio}]


def assert_logits_close(actual: torch.Tensor, expected: torch.Tensor, tight: bool = True) -> float:
    """Check two models' logits agree; return the largest absolute difference.

    ``tight=True`` (fp32 models): ``assert_close`` with atol = rtol = 1e-4.
    ``tight=False`` (fp16/bf16 models, where rounding moves logits by ~1e-2):
    the most likely next token must agree at >= 99% of positions.
    """
    actual, expected = actual.float(), expected.float()
    if tight:
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    else:
        agreement = (actual.argmax(-1) == expected.argmax(-1)).float().mean().item()
        assert agreement >= 0.99, f"top-1 agreement {agreement:.3f} < 0.99"
    return (actual - expected).abs().max().item()


def galore_project(grad: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GaLore's projection of one gradient matrix (m, n) onto its top-``rank`` directions.

    Returns ``P`` (m, rank), the leading left singular vectors, and the small
    gradient ``R = P^T G`` (rank, n) on which the optimizer keeps its state.
    The update applied to the weight is ``P @ (optimizer step on R)``.
    """
    u, _, _ = torch.linalg.svd(grad.float(), full_matrices=False)
    p = u[:, :rank]  # (m, rank)
    return p, p.T @ grad.float()  # (rank, n)


def captured_energy(grad: torch.Tensor, ranks: Iterable[int]) -> dict[int, float]:
    """Share of ``||G||^2`` kept by the best rank-k approximation, for each k."""
    s2 = torch.linalg.svdvals(grad.float()).pow(2)
    total = s2.sum()
    return {k: (s2[:k].sum() / total).item() for k in ranks}
