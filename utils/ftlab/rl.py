"""RLHF on the tiny model (lab 10): reward model, PPO's objective, GRPO, and DPO's variants.

The three stages of RLHF on the course's tone pairs, all starting from the
shared SFT model (``ftlab.checkpoints.load_sft``):

* ``reward_model(path)`` / ``train_reward_model``: a scalar head on the SFT
  network (``AutoModelForSequenceClassification``, ``num_labels=1``) trained
  with trl's ``RewardTrainer`` (loss ``-log sigmoid(r_chosen - r_rejected)``).
  ``reward_scores`` scores (prompt, answer) pairs exactly as trl's GRPO
  trainer does (chat-rendered prompt + answer).
* ``ppo_clipped_loss``: PPO's clipped surrogate objective with a KL penalty,
  the reference for lab 10's exercise (the pinned trl 1.16 ships no PPO trainer).
* ``train_grpo``: trl's ``GRPOTrainer`` with a LoRA adapter, rewarded by the
  reward model; ``grpo_log`` reads reward, KL and length per step.
* ``train_kto``, ``train_orpo``: the unpaired (KTO) and reference-free (ORPO)
  variants with the same adapter and budget as a DPO run (``ftlab.alignment``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence


# ---------------------------------------------------------------------------
# PPO's clipped surrogate objective (reference for the exercise)
# ---------------------------------------------------------------------------


def ppo_clipped_loss(logp_new, logp_old, advantages, logp_ref=None, mask=None, epsilon: float = 0.2,
                     beta: float = 0.0):
    """PPO's clipped surrogate loss with a KL penalty, per token, averaged per sequence then over the batch.

    Tensors are (batch, tokens) log-probs of the sampled tokens; ``advantages``
    is (batch,) or (batch, tokens). With ratio ``r = exp(logp_new - logp_old)``::

        loss_t = -min(r * A, clip(r, 1 - eps, 1 + eps) * A) + beta * kl_t
        kl_t   = exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1    # >= 0, "k3" estimator

    ``mask`` (1 = completion token) selects the tokens; each sequence's loss
    is its masked token mean, the batch loss the mean over sequences (trl's
    GRPO ``loss_type="grpo"`` reduces the same way).
    """
    import torch

    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (batch, 1): one advantage for every token of a sequence
    if mask is None:
        mask = torch.ones_like(logp_new)
    mask = mask.to(logp_new.dtype)
    ratio = torch.exp(logp_new - logp_old)  # (batch, tokens)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    if beta != 0.0:
        if logp_ref is None:
            raise ValueError("beta > 0 needs logp_ref, the reference model's log-probs of the same tokens")
        per_token = per_token + beta * (torch.exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1)
    per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (batch,)
    return per_sequence.mean()


def clip_region(ratio, advantages, epsilon: float = 0.2):
    """Where the clipped term wins, so the token's policy gradient is zero: r > 1+eps with A > 0, r < 1-eps with A < 0."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(ratio)
    return ((ratio > 1 + epsilon) & (advantages > 0)) | ((ratio < 1 - epsilon) & (advantages < 0))


# ---------------------------------------------------------------------------
# The reward model
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_seqcls():
    """trl's guard against the 'newly initialized score head' notice when loading a causal LM as a classifier."""
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    with suppress_seqcls_warning():
        yield


def reward_model(path: Path | str, tokenizer=None, seed: int = 0):
    """The SFT network with a new scalar head (``num_labels=1``): a reward model before training."""
    from transformers import AutoModelForSequenceClassification

    from ftlab.lab import set_seed

    set_seed(seed)  # the head is initialised at random
    with _quiet_seqcls():
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # where the last real token is
    return model


def reward_args(profile, output_dir: Path | str, steps: int, learning_rate: float, batch_size: int = 16,
                seed: int = 0, max_length: int = 160, **overrides):
    """A ``RewardConfig`` on ``profile``: cosine schedule, 10 % warmup, logging every few steps."""
    from trl import RewardConfig

    kwargs = profile.training_kwargs(
        max_steps=steps, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 10),
        logging_steps=max(1, steps // 10), seed=seed, data_seed=seed, report_to="none", save_strategy="no",
    )
    kwargs.update(max_length=max_length, **overrides)
    return RewardConfig(output_dir=str(output_dir), **kwargs)


def train_reward_model(model, tokenizer, pairs: Sequence[Mapping], args, peft_config=None):
    """trl's ``RewardTrainer`` on the conversational pairs; returns the trainer (model in eval mode)."""
    from transformers import PrinterCallback
    from trl import RewardTrainer

    from ftlab.alignment import preference_dataset

    trainer = RewardTrainer(model=model, args=args, train_dataset=preference_dataset(pairs), processing_class=tokenizer,
                            peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.model.eval()
    return trainer


def reward_scores(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64) -> list[float]:
    """The reward model's score of each (prompt, answer): chat-rendered as trl's GRPO trainer renders them."""
    import torch

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                           tokenize=False) for p, a in zip(prompts, answers)]
    scores: list[float] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        model.eval()
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            with torch.no_grad():
                scores += model(**batch).logits[:, 0].float().tolist()
    finally:
        tokenizer.padding_side = side
    return scores


@dataclass
class PairScores:
    """A reward model on held-out pairs."""

    chosen: list[float]
    rejected: list[float]
    accuracy: float  # share of pairs with r(chosen) > r(rejected)
    by_kind: dict[str, float] = field(default_factory=dict)  # accuracy per pair kind (in_kb / out_of_kb)


def score_pairs(model, tokenizer, pairs: Sequence[Mapping]) -> PairScores:
    """Reward of chosen and rejected answers of ``pairs`` and the pair accuracy."""
    prompts = [p["prompt"] for p in pairs]
    chosen = reward_scores(model, tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = reward_scores(model, tokenizer, prompts, [p["rejected"] for p in pairs])
    wins = [c > r for c, r in zip(chosen, rejected)]
    kinds = sorted({p["kind"] for p in pairs})
    by_kind = {k: sum(w for w, p in zip(wins, pairs) if p["kind"] == k) / sum(p["kind"] == k for p in pairs) for k in kinds}
    return PairScores(chosen, rejected, sum(wins) / len(wins), by_kind)


# ---------------------------------------------------------------------------
# RL with trl's GRPO trainer
# ---------------------------------------------------------------------------


def prompt_dataset(prompts: Sequence[str]):
    """Conversational prompt-only rows for trl's online trainers (GRPO, RLOO)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])


def grpo_args(profile, output_dir: Path | str, beta: float, steps: int, learning_rate: float, prompts_per_step: int = 2,
              generations: int = 4, max_completion_length: int = 40, seed: int = 0, **overrides):
    """A ``GRPOConfig``: ``prompts_per_step`` prompts x ``generations`` sampled answers per step, KL coefficient ``beta``."""
    from trl import GRPOConfig

    kwargs = profile.training_kwargs(
        max_steps=steps, per_device_train_batch_size=prompts_per_step * generations, gradient_accumulation_steps=1,
        learning_rate=learning_rate, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, seed=seed,
        data_seed=seed, report_to="none", save_strategy="no",
    )
    kwargs.update(beta=beta, num_generations=generations, max_completion_length=max_completion_length,
                  temperature=1.0, top_k=0, top_p=1.0, disable_dropout=True, **overrides)
    return GRPOConfig(output_dir=str(output_dir), **kwargs)


def train_grpo(model, tokenizer, reward, prompts: Sequence[str], args, peft_config=None):
    """trl's ``GRPOTrainer`` with a LoRA adapter, rewarded by ``reward`` (a reward model); returns the trainer.

    With a PEFT adapter and ``beta > 0`` the reference is the same network with
    the adapter off (no second copy), as in ``ftlab.alignment.train_dpo``.
    """
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    from ftlab.alignment import lora_config

    trainer = GRPOTrainer(model=model, reward_funcs=reward, reward_processing_classes=tokenizer, args=args,
                          train_dataset=prompt_dataset(prompts), processing_class=tokenizer,
                          peft_config=peft_config if peft_config is not None else lora_config())
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.model.eval()
    return trainer


def grpo_log(trainer) -> dict[str, list[float]]:
    """Per step: mean reward of the sampled answers, trl's KL estimate (NaN at beta 0), mean answer length."""
    entries = [e for e in trainer.state.log_history if "reward" in e]
    return {"step": [e["step"] for e in entries], "reward": [e["reward"] for e in entries],
            "kl": [e.get("kl", math.nan) for e in entries],
            "length": [e.get("completions/mean_length", math.nan) for e in entries]}


def window_mean(values: Sequence[float], first: bool, size: int) -> float:
    """Mean of the first (or last) ``size`` values: a noisy per-step curve's start and end."""
    part = list(values[:size] if first else values[-size:])
    return sum(part) / len(part)


# ---------------------------------------------------------------------------
# DPO's variants: KTO (unpaired) and ORPO (no reference)
# ---------------------------------------------------------------------------


def unpaired_rows(pairs: Sequence[Mapping]) -> list[dict]:
    """KTO's data from preference pairs: each pair gives a desirable (chosen) and an undesirable (rejected) row."""
    rows = []
    for p in pairs:
        rows.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
        rows.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})
    return rows


def kto_dataset(rows: Sequence[Mapping]):
    """Conversational prompt/completion/label rows for trl's ``KTOTrainer``."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "completion": [{"role": "assistant", "content": r["completion"]}],
                               "label": bool(r["label"])} for r in rows])


def variant_kwargs(dpo_config) -> dict:
    """The budget of a DPO run (steps, batch, LR, schedule, seeds, length) to give a variant the same."""
    keys = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
            "lr_scheduler_type", "warmup_steps", "logging_steps", "seed", "data_seed", "report_to", "save_strategy",
            "use_cpu", "bf16", "fp16", "disable_tqdm", "max_length")
    return {k: getattr(dpo_config, k) for k in keys}


def train_kto(model, tokenizer, pairs: Sequence[Mapping], dpo_config, output_dir: Path | str, peft_config=None,
              **overrides):
    """trl's ``KTOTrainer`` on the pairs made unpaired, with ``dpo_config``'s budget and beta."""
    from transformers import PrinterCallback
    from trl import KTOConfig, KTOTrainer

    from ftlab.alignment import lora_config, peft_tying_quiet

    kwargs = variant_kwargs(dpo_config)
    kwargs["per_device_train_batch_size"] *= 2  # two unpaired rows per pair: the same answers per step as DPO
    args = KTOConfig(output_dir=str(output_dir), beta=dpo_config.beta, **{**kwargs, **overrides})
    with peft_tying_quiet():
        trainer = KTOTrainer(model=model, args=args, train_dataset=kto_dataset(unpaired_rows(pairs)),
                             processing_class=tokenizer, peft_config=peft_config if peft_config is not None else lora_config())
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.model.eval()
    return trainer


def train_orpo(model, tokenizer, pairs: Sequence[Mapping], dpo_config, output_dir: Path | str, peft_config=None,
               **overrides):
    """trl's ``ORPOTrainer`` (``trl.experimental.orpo`` in trl 1.16): no reference model, NLL + odds-ratio term.

    ORPO's ``beta`` is the weight lambda of the odds-ratio term (trl's default 0.1), not DPO's beta.
    """
    import warnings

    from transformers import PrinterCallback

    with warnings.catch_warnings():  # importing trl.experimental warns that the API may change
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from ftlab.alignment import lora_config, peft_tying_quiet, preference_dataset

    kwargs = {**variant_kwargs(dpo_config), "remove_unused_columns": False, **overrides}  # its beta is lambda (0.1)
    args = ORPOConfig(output_dir=str(output_dir), **kwargs)
    with peft_tying_quiet():
        trainer = ORPOTrainer(model=model, args=args, train_dataset=preference_dataset(pairs), processing_class=tokenizer,
                              peft_config=peft_config if peft_config is not None else lora_config())
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.model.eval()
    return trainer


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``: wall-clock seconds of a block."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = math.nan
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def reward_model_from_sft(profile=None, tokenizer=None, seed: int = 0):
    """A reward model on the shared SFT network (``ftlab.checkpoints``): its weights, a new scalar head."""
    import tempfile

    from ftlab.checkpoints import load_sft, sft_dir

    if profile is None or profile.is_tiny:
        return reward_model(sft_dir(profile), tokenizer, seed)
    model, _ = load_sft(profile)  # GPU profiles cache only the adapter: save the merged network once
    folder = Path(tempfile.mkdtemp(prefix="ftlab-rm-"))
    model.save_pretrained(folder)
    return reward_model(folder, tokenizer, seed)


def measure_policy(model, tokenizer, rows: Sequence[Mapping], reference=None, kl_prompts: Sequence[str] = (),
                   kl_samples: int = 2, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """``ftlab.alignment.score_answers`` of greedy answers to ``rows``, plus KL(policy || reference) on ``kl_prompts``.

    ``reference`` None means the policy is the reference (KL 0). Returns the
    scores with ``kl`` and ``kl_stderr`` (nats per answer) and the ``answers``.
    """
    from ftlab import alignment

    answered = alignment.answer_rows(model, tokenizer, rows, max_new_tokens)
    scores = alignment.score_answers(answered)
    if reference is None or not kl_prompts:
        scores.update(kl=0.0, kl_stderr=0.0)
    else:
        estimate = alignment.sampled_kl(model, reference, tokenizer, list(kl_prompts), kl_samples, max_new_tokens, seed)
        scores.update(kl=estimate.mean, kl_stderr=estimate.stderr)
    scores["answers"] = [r["answer"] for r in answered]
    return scores
