"""Lab 09's exercise checks accept the reference and reject plausible wrong answers."""

import re

import pytest
import torch
import torch.nn.functional as F

from ftlab import alignment
from ftlab.checks import lab09
from ftlab.eval import fact_correct


def dpo_reference(pc, pr, rc, rr, beta):
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(chosen - rejected), chosen, rejected


def test_dpo_check_accepts_the_reference():
    assert lab09.check_dpo_loss(dpo_reference, cases=10) == 10


@pytest.mark.parametrize("wrong", [
    lambda pc, pr, rc, rr, b: (-F.logsigmoid((pc - rc) - (pr - rr)), b * (pc - rc), b * (pr - rr)),  # beta left out of the loss
    lambda pc, pr, rc, rr, b: (-F.logsigmoid(b * ((pr - rr) - (pc - rc))), b * (pc - rc), b * (pr - rr)),  # chosen/rejected swapped
    lambda pc, pr, rc, rr, b: (-F.logsigmoid(b * (pc - pr)), b * pc, b * pr),  # no reference model
    lambda pc, pr, rc, rr, b: (-torch.log(torch.sigmoid(b * ((pc - rc) - (pr - rr)))), b * (pc - rc), b * (pr - rr)),  # unstable
    lambda pc, pr, rc, rr, b: (-F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean().expand(len(pc)), b * (pc - rc), b * (pr - rr)),  # batch mean
])
def test_dpo_check_rejects_wrong_losses(wrong):
    with pytest.raises(AssertionError):
        lab09.check_dpo_loss(wrong, cases=10)


@pytest.fixture(scope="module")
def tiny():
    from ftlab import tiny as tiny_model

    model, tokenizer = tiny_model.load()
    return model.eval(), tokenizer


def logprob_reference(model, input_ids, start):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=input_ids).logits[0, :-1].float(), -1)
    return logp.gather(1, input_ids[0, 1:].unsqueeze(1)).squeeze(1)[start - 1:].sum().item()


def no_shift(model, input_ids, start):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=input_ids).logits[0].float(), -1)
    return logp.gather(1, input_ids[0].unsqueeze(1)).squeeze(1)[start:].sum().item()


def with_prompt(model, input_ids, start):
    return logprob_reference(model, input_ids, 1)


def mean_not_sum(model, input_ids, start):
    return logprob_reference(model, input_ids, start) / (input_ids.shape[1] - start)


PROMPTS = ["공유기 인터넷이 자주 끊겨요.", "프린터 용지가 걸렸어요. 어떻게 하죠?", "냉장고에서 소리가 나요."]


def test_logprob_check_accepts_the_reference(tiny):
    model, tokenizer = tiny
    assert lab09.check_answer_logprob(logprob_reference, model, tokenizer, PROMPTS) == 3


@pytest.mark.parametrize("wrong", [no_shift, with_prompt, mean_not_sum])
def test_logprob_check_rejects_wrong_logprobs(tiny, wrong):
    model, tokenizer = tiny
    with pytest.raises(AssertionError):
        lab09.check_answer_logprob(wrong, model, tokenizer, PROMPTS)


def test_kl_check_accepts_the_reference_and_rejects_reversed(tiny):
    model, tokenizer = tiny
    mean = lambda p, r: sum(a - b for a, b in zip(p, r)) / len(p)
    got, want = lab09.check_estimate_kl(mean, logprob_reference, model, tokenizer, PROMPTS[:2], samples=2, max_new_tokens=12)
    assert abs(got - want) < 1e-3 and abs(want) > 1e-3
    for wrong in (lambda p, r: sum(b - a for a, b in zip(p, r)) / len(p), lambda p, r: sum(abs(a - b) for a, b in zip(p, r)) / len(p)):
        with pytest.raises(AssertionError):
            lab09.check_estimate_kl(wrong, logprob_reference, model, tokenizer, PROMPTS[:2], samples=2, max_new_tokens=12)


def abstains_reference(text, fact_id=None):
    return alignment.is_abstention(text, fact_id)


def test_abstention_check_accepts_the_reference():
    assert lab09.check_abstention(abstains_reference, splits=("train", "test")) > 1000


@pytest.mark.parametrize("wrong", [
    lambda t, f=None: "모르" in t,  # one phrase only
    lambda t, f=None: bool(re.search(r"모르|모릅|몰라|알지 못|알 수 없|범위 밖|답하기 어려|드리지 못|불가|아니에요|담당|받지 않", t)),  # ignores the fact
    lambda t, f=None: False,  # never abstains
    lambda t, f=None: ("죄송" in t or "모르" in t) and (f is None or not fact_correct(t, f)),  # an apology is not a refusal
])
def test_abstention_check_rejects_wrong_rules(wrong):
    with pytest.raises(AssertionError):
        lab09.check_abstention(wrong, splits=("train", "test"))
