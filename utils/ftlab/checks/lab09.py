"""Checks for lab 09's exercises: the DPO loss, answer log-probs and the KL estimate, the abstention rule."""

from __future__ import annotations

import copy
import random
from typing import Callable, Sequence

# Which answers of the preference pairs are abstentions, by the template the data
# generator wrote them from (data/scripts/build_course_data.py): every out-of-KB
# "chosen" answer (k01-k08) admits not knowing; of the out-of-KB "rejected" ones,
# r01/r02/r06/r08 refuse (rudely) and r03/r04/r05/r07 make something up or brush
# the question off. In-KB answers all contain the fact, so none abstains.
REFUSING_REJECTED = {"r01", "r02", "r06", "r08"}


def check_dpo_loss(fn: Callable, cases: int = 20, seed: int = 0) -> int:
    """``fn(pc, pr, rc, rr, beta)`` returns per-pair losses and implicit rewards equal to the reference."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    for case in range(cases):
        n = rng.choice([1, 3, 8])
        pc, pr, rc, rr = (-torch.rand(n, generator=gen, dtype=torch.float64) * 80 for _ in range(4))
        if case == 0:  # policy == reference: every loss is log 2
            pc, pr = rc.clone(), rr.clone()
        beta = rng.choice([0.05, 0.1, 0.5, 1.0, 2.0])
        chosen, rejected = beta * (pc - rc), beta * (pr - rr)
        z = (chosen - rejected).double()
        want = torch.log1p(torch.exp(-z.abs())) + torch.clamp(-z, min=0)  # -log sigmoid(z), computed another way
        out = fn(pc, pr, rc, rr, beta)
        assert isinstance(out, tuple) and len(out) == 3, "return (losses, chosen_rewards, rejected_rewards)"
        losses, got_c, got_r = out
        assert tuple(losses.shape) == (n,), f"one loss per pair: expected shape ({n},), got {tuple(losses.shape)}"
        assert torch.allclose(losses.double(), want, atol=1e-6), (
            f"beta={beta}: losses {losses.tolist()[:3]} vs expected {want.tolist()[:3]}. Hint: the reward is "
            "beta * (policy - reference) for each answer; the loss is -log sigmoid(chosen reward - rejected reward)."
        )
        assert torch.allclose(got_c.double(), chosen.double(), atol=1e-9) and torch.allclose(got_r.double(), rejected.double(), atol=1e-9), (
            "implicit rewards: beta * (policy log-prob - reference log-prob), for chosen and for rejected"
        )
    big = fn(torch.tensor([0.0]), torch.tensor([-1000.0]), torch.tensor([0.0]), torch.tensor([0.0]), 1.0)[0]
    small = fn(torch.tensor([-1000.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), 1.0)[0]
    assert torch.isfinite(big).all() and torch.isfinite(small).all() and abs(small.item() - 1000.0) < 1e-3, (
        "numerically unstable: use torch.nn.functional.logsigmoid, not log(sigmoid(...))"
    )
    return cases


def _encoded(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    from ftlab.alignment import chat_pair
    from ftlab.sft import _encode_pair

    return _encode_pair(tokenizer, chat_pair(tokenizer, prompt, answer))


def reference_answer_logprob(model, tokenizer, prompt: str, answer: str) -> float:
    """log p(answer | prompt) from transformers' own cross-entropy (labels on the answer tokens only)."""
    import torch

    ids, start = _encoded(tokenizer, prompt, answer)
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :start] = -100
    with torch.no_grad():
        loss = model(input_ids=input_ids, labels=labels).loss.item()  # mean NLL over the answer tokens
    return -loss * (len(ids) - start)


def check_answer_logprob(fn: Callable, model, tokenizer, prompts: Sequence[str], seed: int = 0) -> int:
    """``fn(model, input_ids, answer_start)`` equals transformers' summed answer log-prob."""
    import torch

    from ftlab.data import load_preference_pairs

    rng = random.Random(seed)
    answers = [p[rng.choice(["chosen", "rejected"])] for p in load_preference_pairs("train")]
    for prompt in prompts:
        answer = rng.choice(answers)
        ids, start = _encoded(tokenizer, prompt, answer)
        want = reference_answer_logprob(model, tokenizer, prompt, answer)
        got = fn(model, torch.tensor([ids]), start)
        assert abs(got - want) < 1e-3 * max(1.0, abs(want)), (
            f"answer log-prob {got:.4f}, transformers says {want:.4f} ({len(ids) - start} answer tokens). Hint: the "
            "logits at position t predict token t+1; sum log_softmax values of the answer tokens only (not a mean)."
        )
    return len(prompts)


def check_estimate_kl(estimate_kl: Callable, answer_logprob: Callable, model, tokenizer, prompts: Sequence[str],
                      samples: int = 2, max_new_tokens: int = 48, seed: int = 0) -> tuple[float, float]:
    """Your KL estimate on answers sampled from ``model`` vs ``alignment.sampled_kl`` against a perturbed copy."""
    import torch

    from ftlab import alignment

    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.01)
    want = alignment.sampled_kl(model, reference, tokenizer, prompts, samples, max_new_tokens, seed=seed).mean
    drawn = alignment.sample_answers(model, tokenizer, prompts, samples, max_new_tokens, seed=seed)
    policy_logps, ref_logps = [], []
    for prompt, answers in zip(prompts, drawn):
        for answer in answers:
            ids, start = _encoded(tokenizer, prompt, answer)
            policy_logps.append(answer_logprob(model, torch.tensor([ids]), start))
            ref_logps.append(answer_logprob(reference, torch.tensor([ids]), start))
    got = estimate_kl(policy_logps, ref_logps)
    assert abs(got - want) < 1e-3 * max(1.0, abs(want)), (
        f"KL estimate {got:.4f}, expected {want:.4f} on the same {len(policy_logps)} samples. Hint: average "
        "log pi(y|x) - log pi_ref(y|x) over the samples drawn from the policy (order matters: policy minus reference)."
    )
    return got, want


def abstention_cases(split: str) -> list[tuple[str, str | None, bool]]:
    """(answer, fact_id, abstains?) for every answer in a preference split, plus over-refusal cases."""
    from ftlab.data import load_preference_pairs
    from ftlab.eval import fact_correct

    pairs = list(load_preference_pairs(split))
    refusals = [p["chosen"] for p in pairs if p["kind"] == "out_of_kb"]
    cases = []
    for i, pair in enumerate(pairs):
        if pair["kind"] == "in_kb":
            for text in (pair["chosen"], pair["rejected"]):
                assert fact_correct(text, pair["fact_id"]), f"{pair['id']}: an in-KB answer without its fact"
                cases.append((text, pair["fact_id"], False))
            # Over-refusal: an in-KB question answered with a refusal sentence only.
            cases.append((refusals[i % len(refusals)], pair["fact_id"], True))
        else:
            cases.append((pair["chosen"], None, True))
            cases.append((pair["rejected"], None, pair["rejected_template"] in REFUSING_REJECTED))
    return cases


def check_abstention(fn: Callable, splits: Sequence[str] = ("train",)) -> int:
    """``fn(text, fact_id)`` labels every preference-pair answer as the data generator did."""
    n = 0
    for split in splits:
        for text, fact_id, want in abstention_cases(split):
            got = bool(fn(text, fact_id))
            kind = "out-of-KB" if fact_id is None else f"in-KB ({fact_id})"
            assert got == want, (
                f"[{split}] {kind} answer {text!r}: you say abstains={got}, expected {want}. Hint: "
                + ("an answer that contains the fact's key is not an abstention, however rude."
                   if fact_id and not want else
                   "saying it does not know, or refusing to answer, counts; making something up does not.")
            )
            n += 1
    return n
