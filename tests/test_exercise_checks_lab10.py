"""Lab 10's exercise checks accept the reference and reject plausible wrong answers."""

import pytest
import torch
import torch.nn.functional as F

from ftlab import rl
from ftlab.checks import lab10


def ppo_solution(new, old, adv, ref, mask, epsilon, beta):
    return rl.ppo_clipped_loss(new, old, adv, ref, mask, epsilon, beta)


def reward_solution(chosen, rejected, margin=None):
    diff = chosen - rejected if margin is None else chosen - rejected - margin
    return -F.logsigmoid(diff).mean()


def test_checks_accept_the_reference():
    assert lab10.check_ppo_loss(ppo_solution) == 6
    assert lab10.check_reward_loss(reward_solution) == 6


def test_ftlab_reference_matches_the_check_reference():
    rng = __import__("random").Random(3)
    new, old, adv, ref, mask = lab10.toy_batch(rng, 3, 5)
    assert torch.isclose(rl.ppo_clipped_loss(new, old, adv, ref, mask, 0.2, 0.1),
                         lab10.ppo_reference(new, old, adv, ref, mask, 0.2, 0.1))


def _tokens(x, mask):
    mask = mask.to(x.dtype)
    return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _kl(new, ref):
    return torch.exp(ref - new) - (ref - new) - 1


def _adv(adv):
    return adv.unsqueeze(1)


def no_clip(new, old, adv, ref, mask, eps, beta):
    return _tokens(-torch.exp(new - old) * _adv(adv) + beta * _kl(new, ref), mask)


def clipped_only(new, old, adv, ref, mask, eps, beta):
    return _tokens(-torch.clamp(torch.exp(new - old), 1 - eps, 1 + eps) * _adv(adv) + beta * _kl(new, ref), mask)


def max_not_min(new, old, adv, ref, mask, eps, beta):
    r = torch.exp(new - old)
    return _tokens(-torch.max(r * _adv(adv), torch.clamp(r, 1 - eps, 1 + eps) * _adv(adv)) + beta * _kl(new, ref), mask)


def clip_log_ratio(new, old, adv, ref, mask, eps, beta):
    lr = new - old
    r, rc = torch.exp(lr), torch.exp(torch.clamp(lr, -eps, eps))
    return _tokens(-torch.min(r * _adv(adv), rc * _adv(adv)) + beta * _kl(new, ref), mask)


def inverted_ratio(new, old, adv, ref, mask, eps, beta):
    r = torch.exp(old - new)
    return _tokens(-torch.min(r * _adv(adv), torch.clamp(r, 1 - eps, 1 + eps) * _adv(adv)) + beta * _kl(new, ref), mask)


def k1_kl(new, old, adv, ref, mask, eps, beta):
    r = torch.exp(new - old)
    return _tokens(-torch.min(r * _adv(adv), torch.clamp(r, 1 - eps, 1 + eps) * _adv(adv)) + beta * (new - ref), mask)


def kl_rewarded(new, old, adv, ref, mask, eps, beta):  # sign of the penalty flipped
    r = torch.exp(new - old)
    return _tokens(-torch.min(r * _adv(adv), torch.clamp(r, 1 - eps, 1 + eps) * _adv(adv)) - beta * _kl(new, ref), mask)


def token_mean_over_batch(new, old, adv, ref, mask, eps, beta):  # every token weighs the same (bnpo), not every answer
    r = torch.exp(new - old)
    per = -torch.min(r * _adv(adv), torch.clamp(r, 1 - eps, 1 + eps) * _adv(adv)) + beta * _kl(new, ref)
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum()


def mask_ignored(new, old, adv, ref, mask, eps, beta):
    return ppo_solution(new, old, adv, ref, torch.ones_like(mask), eps, beta)


@pytest.mark.parametrize("wrong", [no_clip, clipped_only, max_not_min, clip_log_ratio, inverted_ratio, k1_kl,
                                   kl_rewarded, token_mean_over_batch, mask_ignored])
def test_ppo_check_rejects_wrong_objectives(wrong):
    with pytest.raises(AssertionError):
        lab10.check_ppo_loss(wrong)


@pytest.mark.parametrize("wrong", [
    lambda c, r, m=None: -F.logsigmoid(r - c if m is None else r - c - m).mean(),  # chosen and rejected swapped
    lambda c, r, m=None: -torch.sigmoid(c - r if m is None else c - r - m).mean(),  # probability, not its log
    lambda c, r, m=None: -F.logsigmoid(c - r if m is None else c - r + m).mean(),  # margin with the wrong sign
    lambda c, r, m=None: -F.logsigmoid(c - r).mean(),  # margin ignored
    lambda c, r, m=None: -F.logsigmoid(c - r if m is None else c - r - m).sum(),  # sum, not mean
    lambda c, r, m=None: torch.clamp(1 - (c - r if m is None else c - r - m), min=0).mean(),  # hinge loss
])
def test_reward_check_rejects_wrong_losses(wrong):
    with pytest.raises(AssertionError):
        lab10.check_reward_loss(wrong)
