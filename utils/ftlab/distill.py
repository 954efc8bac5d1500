"""Knowledge distillation on the tiny model (lab 11): a smaller student learns from the SFT teacher.

The teacher is the shared SFT model (``ftlab.checkpoints.load_sft``). The
student keeps some of the teacher's decoder layers (``layer_student``), so it
starts close to the teacher but has to repair what the dropped layers did.
It is then trained on the same answer tokens in one of two ways:

* **hard labels**: cross-entropy on the reference answer's tokens (ordinary SFT);
* **soft labels**: ``soft_label_loss``, the KL divergence from the teacher's
  temperature-softened next-token distribution to the student's, times T^2
  (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network",
  arXiv:1503.02531, section 2: the gradients of the softened KL scale as 1/T^2).

Usage::

    teacher, tokenizer = ftlab.checkpoints.load_sft()
    student = distill.layer_student(teacher, keep=(0, 3))
    log = distill.train_student(student, teacher, tokenizer, pairs, steps=40, temperature=2.0)

``trl`` computes the same divergence without the T^2 factor:
``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=0, temperature=T)``
(``beta=0`` is the forward KL(teacher || student)); ``T**2`` times it equals ``soft_label_loss``.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Sequence


def layer_student(teacher, keep: Sequence[int]):
    """A copy of ``teacher`` (a Llama) with only the decoder layers ``keep``, initialised from them.

    Embeddings, final norm and (tied) output layer are copied; the teacher is
    not modified. ``keep=(0, 3)`` of a 4-layer teacher gives a 2-layer student
    with about half the decoder parameters.
    """
    import torch
    from transformers import AutoModelForCausalLM

    layers = teacher.config.num_hidden_layers
    if not keep or any(not 0 <= i < layers for i in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"keep must list distinct layer indices in 0..{layers - 1}, got {tuple(keep)}")
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [teacher.config.layer_types[i] for i in keep]
    torch.manual_seed(0)  # every weight is overwritten below; the seed only keeps construction deterministic
    student = AutoModelForCausalLM.from_config(config, dtype=teacher.dtype)
    state = {}
    for name, tensor in teacher.state_dict().items():
        if name.startswith("model.layers."):
            index, rest = name[len("model.layers."):].split(".", 1)
            if int(index) not in keep:
                continue
            name = f"model.layers.{list(keep).index(int(index))}.{rest}"
        state[name] = tensor.detach().clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"student weights do not match the teacher's: missing {missing}, unexpected {unexpected}")
    student.tie_weights()
    student.generation_config = copy.deepcopy(teacher.generation_config)  # from_config's default: no KV cache (8x slower)
    return student.to(teacher.device)


def count_parameters(model) -> int:
    """Distinct parameters (tied embedding/output weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def soft_label_loss(student_logits, teacher_logits, labels, temperature: float = 1.0):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the positions where ``labels != -100``.

    ``student_logits`` and ``teacher_logits`` are (batch, tokens, vocab), already
    aligned with ``labels`` (batch, tokens): position t predicts ``labels[:, t]``.
    """
    import torch.nn.functional as F

    mask = labels != -100  # (batch, tokens)
    log_q = F.log_softmax(student_logits[mask] / temperature, dim=-1)  # (positions, vocab)
    log_p = F.log_softmax(teacher_logits[mask] / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (positions,)
    return temperature**2 * kl.mean()


def hard_label_loss(student_logits, labels):
    """Cross-entropy on the reference tokens (mean over positions where ``labels != -100``)."""
    import torch.nn.functional as F

    return F.cross_entropy(student_logits.transpose(1, 2), labels, ignore_index=-100)


def shifted(logits, labels):
    """Align next-token logits with their targets: logits[:, :-1] predict labels[:, 1:]."""
    return logits[:, :-1], labels[:, 1:]


def train_student(student, teacher, tokenizer, pairs: Sequence[dict], steps: int, temperature: float | None,
                  learning_rate: float = 1e-3, batch_size: int = 16, seed: int = 0, warmup: int = 3) -> dict:
    """Train ``student`` on ``pairs`` (``{"prompt", "completion"}``) for ``steps`` AdamW steps.

    ``temperature=None``: hard labels (cross-entropy on the completion tokens).
    A number: soft labels from ``teacher`` at that temperature (``soft_label_loss``).
    Both see the same batches in the same order (``seed``); the learning rate
    warms up linearly over ``warmup`` steps, then follows a cosine to 0.
    Returns ``{"step", "loss", "hard_loss"}``: the loss trained on and, for
    comparison, the cross-entropy on the reference tokens, per step.
    """
    import torch

    from ftlab.sft import completion_batch

    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        chunk = list(range(len(pairs)))
        rng.shuffle(chunk)
        order += chunk
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    teacher.eval()
    student.train()
    log = {"step": [], "loss": [], "hard_loss": []}
    for step in range(steps):
        batch = completion_batch(tokenizer, [pairs[i] for i in order[step * batch_size:(step + 1) * batch_size]])
        batch = {k: v.to(student.device) for k, v in batch.items()}
        logits, labels = shifted(student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                 batch["labels"])
        hard = hard_label_loss(logits, labels)
        if temperature is None:
            loss = hard
        else:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = soft_label_loss(logits, teacher_logits[:, :-1], labels, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log["step"].append(step + 1)
        log["loss"].append(loss.item())
        log["hard_loss"].append(hard.item())
    student.eval()
    return log


def teacher_targets(teacher_logits, labels, temperature: float = 1.0) -> dict[str, float]:
    """What soft labels at ``temperature`` tell the student, averaged over scored positions.

    ``p_reference``: the teacher's probability of the reference token (1.0 would
    make soft labels identical to hard labels); ``entropy``: nats per position.
    """
    import torch

    mask = labels != -100
    probs = torch.softmax(teacher_logits[mask].float() / temperature, dim=-1)  # (positions, vocab)
    p_reference = probs.gather(-1, labels[mask].unsqueeze(-1)).mean()
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean()
    return {"p_reference": float(p_reference), "entropy": float(entropy)}
