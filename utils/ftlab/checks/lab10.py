"""Checks for lab 10's exercises: PPO's clipped objective with a KL penalty, and the reward model's pairwise loss."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Callable


def ppo_reference(logp_new, logp_old, advantages, logp_ref, mask, epsilon, beta):
    """PPO's clipped surrogate + k3 KL penalty, written as trl 1.16's ``GRPOTrainer._compute_loss`` does it
    (``loss_type="grpo"``: ``coef_1``, ``coef_2 = clamp(coef_1, 1-eps, 1+eps)``, ``-min(coef_1*A, coef_2*A)``,
    ``+ beta * per_token_kl``, masked mean per sequence, mean over sequences)."""
    import torch

    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    coef_1 = torch.exp(logp_new - logp_old)
    coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * (torch.exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1)
    mask = mask.to(logp_new.dtype)
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def toy_batch(rng: random.Random, batch: int = 4, tokens: int = 6, spread: float = 0.5):
    """Random (batch, tokens) log-probs of sampled tokens, old and new policy, reference, advantages, mask.

    ``spread`` sets how far the new policy moved from the old one (log-ratio
    std), so a share of the tokens has a ratio outside 1 +- epsilon.
    """
    import torch

    g = torch.Generator().manual_seed(rng.randrange(2**31))
    logp_old = -torch.rand(batch, tokens, generator=g, dtype=torch.float64) * 3 - 0.05
    logp_new = logp_old + torch.randn(batch, tokens, generator=g, dtype=torch.float64) * spread
    logp_ref = logp_old + torch.randn(batch, tokens, generator=g, dtype=torch.float64) * 0.3
    advantages = torch.randn(batch, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, tokens + 1, (batch,), generator=g)
    mask = (torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)).long()  # completions of different lengths
    return logp_new, logp_old, advantages, logp_ref, mask


def check_ppo_loss(fn: Callable, cases: int = 6, seed: int = 0) -> int:
    """``fn(logp_new, logp_old, advantages, logp_ref, mask, epsilon, beta)`` is PPO's clipped loss with a KL penalty.

    On random batches: the value equals the reference, and its gradient is zero
    exactly on the tokens where the ratio left 1 +- epsilon on the side that the
    advantage favours (with ``beta=0``). Returns the cases checked.
    """
    import torch

    rng = random.Random(seed)
    for case in range(cases):
        batch, tokens = rng.choice([2, 3, 5]), rng.choice([4, 7, 9])
        epsilon, beta = rng.choice([0.1, 0.2, 0.3]), (0.0 if case % 3 == 0 else rng.choice([0.02, 0.1, 0.5]))
        new, old, adv, ref, mask = toy_batch(rng, batch, tokens)
        want = ppo_reference(new, old, adv, ref, mask, epsilon, beta)
        got = fn(new.clone(), old.clone(), adv.clone(), ref.clone(), mask.clone(), epsilon, beta)
        got = torch.as_tensor(got, dtype=torch.float64)
        assert got.dim() == 0, f"return one number (the batch loss), got shape {tuple(got.shape)}"
        assert torch.isclose(got, want, rtol=1e-6, atol=1e-9), (
            f"batch {batch}x{tokens}, epsilon {epsilon}, beta {beta}: you give {got.item():.6f}, PPO's clipped loss is "
            f"{want.item():.6f}. Hint: ratio = exp(new - old); take min(ratio*A, clip(ratio, 1-eps, 1+eps)*A) and "
            "negate it; add beta * (exp(ref - new) - (ref - new) - 1); average the masked tokens of each answer, then "
            "the answers.")
        # where clipping engages: the policy term's gradient vanishes exactly there (beta = 0 isolates it)
        leaf = new.clone().requires_grad_(True)
        fn(leaf, old.clone(), adv.clone(), ref.clone(), mask.clone(), epsilon, 0.0).backward()
        ratio = torch.exp(new - old)
        a = adv.unsqueeze(1).expand_as(ratio)
        clipped = ((ratio > 1 + epsilon) & (a > 0)) | ((ratio < 1 - epsilon) & (a < 0))
        live = mask.bool() & (a != 0)
        zero_grad = leaf.grad.abs() < 1e-12
        assert torch.equal(zero_grad[live], clipped[live]), (
            f"epsilon {epsilon}: your loss's gradient is zero on {int(zero_grad[live].sum())} tokens, but clipping "
            f"engages on {int(clipped[live].sum())} (ratio above 1+eps with A>0, below 1-eps with A<0). Hint: clip "
            "the ratio, not the log-ratio or the advantage, and keep the min of the two terms.")
    return cases


def _trl_reward_loss(rewards_chosen, rewards_rejected, margin=None):
    """trl 1.16's ``RewardTrainer.compute_loss`` on given rewards (the model is replaced by the rewards it would output)."""
    from collections import defaultdict

    import torch
    from trl import RewardTrainer

    logits = torch.cat([rewards_chosen, rewards_rejected]).unsqueeze(-1)  # (2 * batch, 1): chosen first, as trl stacks them
    identity = lambda x: x  # noqa: E731  (one process: gathering is the identity)
    trainer = SimpleNamespace(model=SimpleNamespace(training=False), args=SimpleNamespace(center_rewards_coefficient=None),
                              accelerator=SimpleNamespace(gather=identity, gather_for_metrics=identity),
                              _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0)
    inputs = {"input_ids": None} if margin is None else {"input_ids": None, "margin": margin}
    model = lambda **kwargs: SimpleNamespace(logits=logits)  # noqa: E731
    return RewardTrainer.compute_loss(trainer, model, inputs)


def check_reward_loss(fn: Callable, cases: int = 6, seed: int = 0) -> int:
    """``fn(rewards_chosen, rewards_rejected, margin=None)`` equals trl's reward-model loss on random rewards."""
    import torch

    rng = random.Random(seed)
    for case in range(cases):
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        batch = rng.choice([1, 3, 8, 16])
        chosen = torch.randn(batch, generator=g, dtype=torch.float64) * rng.choice([0.5, 2.0, 5.0])
        rejected = torch.randn(batch, generator=g, dtype=torch.float64) * rng.choice([0.5, 2.0])
        margin = None if case % 2 == 0 else torch.rand(batch, generator=g, dtype=torch.float64) * 2
        want = _trl_reward_loss(chosen, rejected, margin)
        got = fn(chosen.clone(), rejected.clone()) if margin is None else fn(chosen.clone(), rejected.clone(), margin.clone())
        got = torch.as_tensor(got, dtype=torch.float64)
        assert got.dim() == 0, f"return one number (the batch mean), got shape {tuple(got.shape)}"
        assert torch.isclose(got, want, rtol=1e-6, atol=1e-9), (
            f"{batch} pairs, margin {'none' if margin is None else 'given'}: you give {got.item():.6f}, trl's reward "
            f"loss is {want.item():.6f}. Hint: the Bradley-Terry model says P(chosen beats rejected) = "
            "sigmoid(r_chosen - r_rejected); the loss is its negative log, averaged over pairs; a margin is "
            "subtracted from the difference (the chosen answer must win by at least that much).")
    return cases
