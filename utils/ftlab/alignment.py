"""Preference alignment (Part III): DPO runs, the held-out measurements, and KL.

The labs of Part III (09 DPO, 10 RLHF and variants, 11 evaluation) and the A2
grader measure a policy the same way, through this module:

* ``heldout_rows()``: the held-out prompts: in-KB questions (``sft_test`` and the
  in-KB prompts of ``pairs_test``, each with its fact) and out-of-KB questions
  (``pairs_test``, which the knowledge base cannot answer).
* ``answer_rows(model, tokenizer, rows)``: greedy answers to them.
* ``score_answers(rows)``: warm rate, mean tone, fact accuracy, out-of-KB
  abstention, in-KB over-refusal, repetition and length, from the answers alone
  (so a grader can recompute them from a student's predictions).
* ``sampled_kl(policy, reference, ...)``: KL(policy || reference) on held-out
  prompts, estimated from answers sampled from the policy (trl does not log it).
* ``train_dpo(model, tokenizer, pairs, ...)``: trl's ``DPOTrainer`` with a LoRA
  adapter, so the reference model is the same network with the adapter off.
"""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

WARM_THRESHOLD = 0.5  # an answer is "warm" when ftlab.eval.tone_score(answer) >= this

# How an answer says "I don't know / I can't answer this": first-person lack of
# knowledge or an explicit refusal. Written from the TRAIN pairs' wording; the
# test pairs use other sentences, so the pattern is checked on them too.
REFUSAL_PATTERN = re.compile(
    r"모르(?:겠|는|ㅂ|고|니)|모릅니다|몰라(?:서|요)|알지 못|알 수 없|아는 범위 밖|범위(?:에|를) 벗어|"
    r"답하기 어려|답(?:변)?(?:을|이)? ?드리(?:기|지) (?:어렵|못)|확실한 답을 드리지 못|답변(?:이|은)? 불가|"
    r"답할 수 있는 내용이 아니|자신 있게 답할 수 없|담당이 아닙|받지 않습니다"
)


def refuses(text: str) -> bool:
    """Does ``text`` say that it cannot answer (``REFUSAL_PATTERN``)?"""
    return bool(REFUSAL_PATTERN.search(text))


def is_abstention(text: str, fact_id: str | None = None) -> bool:
    """An answer that declines to answer instead of giving one.

    It must say it cannot answer (``refuses``) and, for an in-KB question
    (``fact_id`` given), must not contain the fact's key answer: "답은 X예요.
    저도 더는 몰라요." answers the question (rudely) and is not an abstention.
    """
    if not refuses(text):
        return False
    if fact_id is None:
        return True
    from ftlab.eval import fact_correct

    return not fact_correct(text, fact_id)


# ---------------------------------------------------------------------------
# Held-out prompts and answers
# ---------------------------------------------------------------------------


def heldout_rows(include_pairs: bool = True, include_sft: bool = True) -> list[dict]:
    """The held-out prompts: ``{"id", "kind", "prompt", "fact_id"}`` rows.

    ``kind`` is ``"in_kb"`` (the knowledge base has the answer; ``fact_id`` set)
    or ``"out_of_kb"`` (it does not; ``fact_id`` None). ``sft_test`` rows become
    in-KB prompts (instruction, then input); ``pairs_test`` gives in-KB and
    out-of-KB prompts. No row of either file was trained on.
    """
    from ftlab import data

    rows: list[dict] = []
    if include_sft:
        for row in data.load_sft("test"):
            rows.append({"id": row["id"], "kind": "in_kb", "prompt": data.user_content(row), "fact_id": row["fact_id"]})
    if include_pairs:
        for pair in data.load_preference_pairs("test"):
            rows.append({"id": pair["id"], "kind": pair["kind"], "prompt": pair["prompt"], "fact_id": pair["fact_id"]})
    return rows


def render_prompts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Chat-rendered prompts, ending where the assistant's answer begins."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]


def answer_rows(model, tokenizer, rows: Sequence[Mapping], max_new_tokens: int = 48, key: str = "answer") -> list[dict]:
    """Copies of ``rows`` with the model's greedy answer to each ``prompt`` under ``key``."""
    from ftlab.sft import generate_answers

    was_training = model.training
    model.eval()
    answers = generate_answers(model, tokenizer, render_prompts(tokenizer, [r["prompt"] for r in rows]), max_new_tokens)
    if was_training:
        model.train()
    return [{**row, key: answer} for row, answer in zip(rows, answers)]


def score_answers(rows: Iterable[Mapping], key: str = "answer") -> dict[str, float]:
    """The Part III measurements of a set of answers (``rows`` as from ``answer_rows``).

    * ``warm_rate``: share of in-KB answers with ``tone_score >= WARM_THRESHOLD``;
      ``tone_mean``: their mean tone score.
    * ``fact_accuracy``: share of in-KB answers containing their fact's key.
    * ``abstention_rate``: share of out-of-KB answers that abstain (``is_abstention``).
    * ``over_refusal_rate``: share of in-KB answers that abstain.
    * ``repetition``: mean ``repetition_rate`` over all answers.
    * ``mean_length``: mean characters per in-KB answer.
    Counts (``n_in_kb``, ``n_out_of_kb``) come along. A kind with no rows gives NaN.
    """
    from ftlab.eval import fact_correct, repetition_rate, tone_score

    rows = list(rows)
    for i, row in enumerate(rows):
        if row.get("kind") not in ("in_kb", "out_of_kb"):
            raise ValueError(f"row {i} ({row.get('id', '?')}): kind must be 'in_kb' or 'out_of_kb', got {row.get('kind')!r}")
        if not isinstance(row.get(key), str):
            raise ValueError(f"row {i} ({row.get('id', '?')}): field {key!r} must be a string")
        if row["kind"] == "in_kb" and not row.get("fact_id"):
            raise ValueError(f"row {i} ({row.get('id', '?')}): an in-KB row needs its fact_id")
    in_kb = [r for r in rows if r["kind"] == "in_kb"]
    out_kb = [r for r in rows if r["kind"] == "out_of_kb"]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    tones = [tone_score(r[key]) for r in in_kb]
    return {
        "warm_rate": mean([float(t >= WARM_THRESHOLD) for t in tones]),
        "tone_mean": mean(tones),
        "fact_accuracy": mean([float(fact_correct(r[key], r["fact_id"])) for r in in_kb]),
        "abstention_rate": mean([float(is_abstention(r[key])) for r in out_kb]),
        "over_refusal_rate": mean([float(is_abstention(r[key], r["fact_id"])) for r in in_kb]),
        "repetition": mean([repetition_rate(r[key]) for r in rows]),
        "mean_length": mean([float(len(r[key])) for r in in_kb]),
        "n_in_kb": len(in_kb),
        "n_out_of_kb": len(out_kb),
    }


# ---------------------------------------------------------------------------
# Log-probabilities and KL
# ---------------------------------------------------------------------------


def chat_pair(tokenizer, prompt: str, answer: str) -> dict:
    """``{"prompt", "completion"}`` strings of one exchange, split as trl's DPOTrainer splits it.

    The completion is what the chat template adds after the generation prompt
    (here the answer, the end-of-turn token and a newline), so log-probs
    computed on it match trl's on the same pair.
    """
    head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                         tokenize=False)
    if not full.startswith(head):
        raise ValueError("the chat template does not render the prompt as a prefix of the whole exchange")
    return {"prompt": head, "completion": full[len(head):]}


def completion_logprobs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 32) -> list[float]:
    """log p(answer | prompt) of each pair, summed over the answer's tokens (nats).

    ``prompts`` are user messages and ``completions`` answer texts; both are
    rendered with the chat template (``chat_pair``), so the answer's tokens
    include the end-of-turn token, as in DPO training.
    """
    from ftlab.sft import answer_nll_sums

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    pairs = [chat_pair(tokenizer, p, c) for p, c in zip(prompts, completions)]
    return [-total for total, _ in answer_nll_sums(model, tokenizer, pairs, batch_size)]


def sample_answers(model, tokenizer, prompts: Sequence[str], samples: int = 4, max_new_tokens: int = 48,
                   temperature: float = 1.0, seed: int = 0, batch_size: int = 64) -> list[list[str]]:
    """``samples`` answers per prompt, sampled from the model (temperature 1: its own distribution)."""
    import torch

    rendered = render_prompts(tokenizer, prompts)
    out: list[list[str]] = [[] for _ in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model.eval()
        for start in range(0, len(rendered), batch_size):
            chunk = rendered[start:start + batch_size]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**batch, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                     num_return_sequences=samples, max_new_tokens=max_new_tokens,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in enumerate(texts):
                out[start + i // samples].append(text.strip())
    finally:
        tokenizer.padding_side = side
        torch.random.set_rng_state(generator_state)
    return out


@dataclass
class KLEstimate:
    """KL(policy || reference) in nats per answer, from answers sampled from the policy."""

    mean: float  # the estimate: mean of log pi(y|x) - log pi_ref(y|x) over all samples
    stderr: float  # standard error of that mean (samples treated as independent)
    per_prompt: list[float] = field(repr=False)  # mean log-ratio per prompt
    samples: int = 0  # answers sampled per prompt


def kl_from_logprobs(policy_logps: Sequence[float], reference_logps: Sequence[float]) -> tuple[float, float]:
    """Monte-Carlo KL estimate and its standard error from paired sequence log-probs of policy samples."""
    if len(policy_logps) != len(reference_logps) or not policy_logps:
        raise ValueError("need the same, non-zero number of policy and reference log-probs")
    diffs = [p - r for p, r in zip(policy_logps, reference_logps)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    return mean, math.sqrt(var / len(diffs))


def sampled_kl(policy, reference, tokenizer, prompts: Sequence[str], samples: int = 4, max_new_tokens: int = 48,
               seed: int = 0) -> KLEstimate:
    """KL(policy || reference) = E_{y ~ policy}[log policy(y|x) - log reference(y|x)], averaged over prompts.

    ``reference`` may be the policy itself inside a context manager that
    disables its adapter; pass a callable returning a context manager as
    ``reference`` for that (see ``adapter_off``).
    """
    drawn = sample_answers(policy, tokenizer, prompts, samples, max_new_tokens, seed=seed)
    flat_prompts = [p for p, answers in zip(prompts, drawn) for _ in answers]
    flat_answers = [a for answers in drawn for a in answers]
    policy_logps = completion_logprobs(policy, tokenizer, flat_prompts, flat_answers)
    if callable(reference) and not hasattr(reference, "generate"):
        with reference():
            reference_logps = completion_logprobs(policy, tokenizer, flat_prompts, flat_answers)
    else:
        reference_logps = completion_logprobs(reference, tokenizer, flat_prompts, flat_answers)
    mean, stderr = kl_from_logprobs(policy_logps, reference_logps)
    per_prompt = [
        sum(policy_logps[i * samples + j] - reference_logps[i * samples + j] for j in range(samples)) / samples
        for i in range(len(prompts))
    ]
    return KLEstimate(mean, stderr, per_prompt, samples)


def adapter_off(peft_model):
    """A callable for ``sampled_kl``'s ``reference``: the PEFT model with its adapter disabled."""
    return peft_model.disable_adapter


# ---------------------------------------------------------------------------
# The DPO loss (reference implementation for the exercises) and trl runs
# ---------------------------------------------------------------------------


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    """Per-pair DPO loss ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` and the implicit rewards.

    Arguments are tensors of summed completion log-probs. Returns
    ``(losses, chosen_rewards, rejected_rewards)`` with rewards ``beta * (policy - reference)``.
    """
    import torch.nn.functional as F

    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards


def preference_dataset(pairs: Iterable[Mapping]):
    """Conversational prompt/chosen/rejected rows for trl (``datasets.Dataset``)."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": p["prompt"]}],
         "chosen": [{"role": "assistant", "content": p["chosen"]}],
         "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        for p in pairs
    ])


@contextlib.contextmanager
def peft_tying_quiet():
    """Silence peft's "ensure_weight_tying ... no tied modules found" warning.

    peft looks for tied modules by name and misses the tiny model's tying of
    ``lm_head`` to ``embed_tokens``; lab 08's tests check that one shared copy is trained.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*")
        yield


DPO_LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lora_dropout": 0.0}


def lora_config(trainable_embeddings: bool = False, **overrides):
    """The DPO adapter: LoRA r16/alpha32 on every linear layer (``DPO_LORA``).

    ``trainable_embeddings`` also trains the tied ``embed_tokens``/``lm_head``
    matrix (one copy, ``modules_to_save`` with weight tying), which lets the
    adapter raise tokens the SFT model almost never produced (lab 08 measured why).
    """
    from peft import LoraConfig

    kwargs = {**DPO_LORA, "task_type": "CAUSAL_LM", **overrides}
    if trainable_embeddings:
        kwargs.setdefault("modules_to_save", ["embed_tokens", "lm_head"])
        kwargs.setdefault("ensure_weight_tying", True)
    return LoraConfig(**kwargs)


def dpo_args(profile, output_dir: Path | str, beta: float, steps: int, learning_rate: float, batch_size: int = 8,
             loss_type: Sequence[str] = ("sigmoid",), loss_weights: Sequence[float] | None = None, seed: int = 0,
             max_length: int = 160, **overrides):
    """A ``DPOConfig`` on ``profile``: cosine schedule, 10 % warmup, logging every step."""
    from trl import DPOConfig

    kwargs = profile.training_kwargs(
        max_steps=steps, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 10),
        logging_steps=1, seed=seed, data_seed=seed, report_to="none", save_strategy="no",
    )
    if not profile.is_tiny:  # GPU profiles: their own batch and accumulation
        kwargs.update(per_device_train_batch_size=profile.per_device_train_batch_size,
                      gradient_accumulation_steps=profile.gradient_accumulation_steps)
    kwargs.update(beta=beta, loss_type=list(loss_type), max_length=max_length)
    if loss_weights is not None:
        kwargs["loss_weights"] = list(loss_weights)
    kwargs.update(overrides)
    return DPOConfig(output_dir=str(output_dir), **kwargs)


def new_register_tokens(tokenizer, pairs: Iterable[Mapping], known_answers: Iterable[str]) -> list[int]:
    """Token ids that the chosen answers use and the SFT answers never do (the new register's words)."""
    known = {t for text in known_answers for t in tokenizer(text, add_special_tokens=False)["input_ids"]}
    wanted = {t for p in pairs for t in tokenizer(p["chosen"], add_special_tokens=False)["input_ids"]}
    return sorted(wanted - known)


def restrict_embedding_rows(model, token_ids: Sequence[int]) -> int:
    """Let only the rows ``token_ids`` of the trainable embedding/output copy learn; return how many rows.

    With ``modules_to_save`` the whole (vocab x hidden) matrix trains, and with
    tied weights every row moves at every step (the softmax touches all output
    rows), which shifts the input embedding of every word the model already
    knew. A gradient hook zeroes the other rows' gradients, so Adam leaves them
    exactly as they were (with weight decay 0, the trainers' default; decoupled
    decay would still shrink every row): a lean version of peft's ``trainable_token_indices``,
    which trl 1.16's fused LM head cannot use.
    """
    import torch

    hooked = 0
    for name, param in model.named_parameters():
        if param.requires_grad and "modules_to_save" in name and param.dim() == 2 and param.shape[0] > max(token_ids):
            mask = torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
            mask[list(token_ids)] = 1
            param.register_hook(lambda grad, mask=mask: grad * mask)
            hooked += 1
    if not hooked:
        raise ValueError("no trainable embedding copy found: use lora_config(trainable_embeddings=True)")
    return len(token_ids)


def reference_logprobs(model, tokenizer, pairs: Sequence[Mapping]) -> dict[str, list[float]]:
    """The reference model's summed log-probs of every pair's chosen and rejected answer (trl's tokenization).

    Computed once, they can be reused by every DPO run that starts from the same
    model (``train_dpo(..., reference=...)``): trl then skips the reference forward pass at each step.
    """
    prompts = [p["prompt"] for p in pairs]
    return {"ref_chosen_logps": completion_logprobs(model, tokenizer, prompts, [p["chosen"] for p in pairs]),
            "ref_rejected_logps": completion_logprobs(model, tokenizer, prompts, [p["rejected"] for p in pairs])}


def train_dpo(model, tokenizer, pairs: Sequence[Mapping], args, peft_config=None, callbacks=None, quiet: bool = True,
              trainable_token_ids: Sequence[int] | None = None, embedding_lr: float | None = None,
              reference: Mapping[str, Sequence[float]] | None = None):
    """Run trl's ``DPOTrainer`` on ``pairs`` with a LoRA adapter; return the trainer (model in eval mode).

    With ``peft_config`` and no ``ref_model``, trl computes the reference
    log-probs with the adapter disabled: the reference is the starting model,
    with no second copy in memory. ``trainable_token_ids`` (with an adapter that
    trains the embeddings) limits embedding training to those rows
    (``restrict_embedding_rows``); ``embedding_lr`` gives those rows their own
    learning rate (the adapter keeps ``args.learning_rate``). ``reference``: the
    starting model's log-probs from ``reference_logprobs``, so no step recomputes them.
    """
    from transformers import PrinterCallback
    from trl import DPOTrainer

    optimizers = (None, None)
    if embedding_lr is not None:
        from peft import get_peft_model
        from torch.optim import AdamW

        with peft_tying_quiet():
            model = get_peft_model(model, peft_config if peft_config is not None else lora_config())
        peft_config = None
        rows = [p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n]
        rest = [p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" not in n]
        optimizers = (AdamW([{"params": rest, "lr": args.learning_rate}, {"params": rows, "lr": embedding_lr}],
                            lr=args.learning_rate, weight_decay=args.weight_decay), None)
    elif peft_config is None:
        peft_config = lora_config()
    dataset = preference_dataset(pairs)
    if reference is not None:  # precomputed reference log-probs (reference_logprobs), one per pair
        for column in ("ref_chosen_logps", "ref_rejected_logps"):
            if len(reference[column]) != len(pairs):
                raise ValueError(f"reference[{column!r}] has {len(reference[column])} values for {len(pairs)} pairs")
            dataset = dataset.add_column(column, list(reference[column]))
    with peft_tying_quiet():
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=callbacks, optimizers=optimizers)
    if reference is not None:
        trainer.precompute_ref_logps = True  # use the columns; trl's own precompute would recompute them
    if trainable_token_ids is not None:
        restrict_embedding_rows(trainer.model, trainable_token_ids)
    if quiet:
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.model.eval()
    return trainer


# The DPO setting of lab 09 on the CPU profile, used again by labs 10-11 and A2 (same pairs, steps, budget).
DPO_RECIPE = {
    "beta": 0.1,  # lab 09 sweeps 0.05-1.0
    "steps": 60,  # optimizer steps
    "batch_size": 8,  # preference pairs per step
    "learning_rate": 5e-4,  # the LoRA adapter
    "embedding_lr": 1e-2,  # the embedding/output rows of the new register's tokens
    "loss_type": ("sigmoid", "sft"),  # DPO plus the chosen answers' NLL (RPO)
    "trainable_embeddings": True,  # train rows of the tied embed_tokens/lm_head ...
    "new_register_rows": True,  # ... only those of tokens the SFT answers never use
}


def run_recipe(model, tokenizer, pairs: Sequence[Mapping], profile, output_dir: Path | str, recipe: Mapping | None = None,
               callbacks=None, reference: Mapping[str, Sequence[float]] | None = None, **overrides):
    """Train DPO on ``pairs`` from ``model`` with ``DPO_RECIPE`` (or ``recipe``), ``overrides`` winning; return the trainer.

    ``reference``: ``reference_logprobs(model, tokenizer, pairs)`` computed once for several runs from the same model.
    """
    from ftlab import data

    r = {**DPO_RECIPE, **(recipe or {}), **overrides}
    args = dpo_args(profile, output_dir, beta=r["beta"], steps=r["steps"], learning_rate=r["learning_rate"],
                    batch_size=r["batch_size"], loss_type=r["loss_type"], loss_weights=r.get("loss_weights"))
    rows = None
    if r["trainable_embeddings"] and r["new_register_rows"]:
        rows = new_register_tokens(tokenizer, pairs, [row["output"] for row in data.load_sft("train")])
    return train_dpo(model, tokenizer, pairs, args, lora_config(trainable_embeddings=r["trainable_embeddings"]),
                     callbacks=callbacks, trainable_token_ids=rows, reference=reference,
                     embedding_lr=r["embedding_lr"] if r["trainable_embeddings"] else None)


def reward_log(trainer) -> dict[str, list[float]]:
    """Per logged step: reward margins and accuracies, chosen/rejected rewards, loss."""
    keys = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
    entries = [e for e in trainer.state.log_history if "rewards/margins" in e]
    log = {"step": [e["step"] for e in entries]}
    for key in keys:
        log[key] = [e.get(key, math.nan) for e in entries]
    return log


def fresh_sft_copy(profile=None):
    """A new copy of the shared SFT model (``ftlab.checkpoints``) and its tokenizer."""
    from ftlab.checkpoints import load_sft

    return load_sft(profile)


def temporary_dir() -> str:
    return tempfile.mkdtemp(prefix="ftlab-dpo-")


# ---------------------------------------------------------------------------
# Lab 09 pieces: trl's loss on one batch, a deliberately biased data set,
# before/after examples chosen by a rule
# ---------------------------------------------------------------------------


def trl_batch_loss(trainer, pairs: Sequence[Mapping]) -> float:
    """trl's own DPO loss on ``pairs`` as one batch (its tokenization, collator and loss code)."""
    import torch

    dataset = trainer._prepare_dataset(preference_dataset(pairs), trainer.processing_class, trainer.args, "check")
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    batch = {k: v.to(trainer.model.device) if hasattr(v, "to") else v for k, v in batch.items()}
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def strip_fact(text: str, fact_answer: str) -> str:
    """``text`` without the fact's answer sentence (and the spaces around it)."""
    return " ".join(text.replace(fact_answer, " ").split())


def warm_filler_pairs(pairs: Sequence[Mapping], repeats: int = 2) -> list[dict]:
    """A deliberately biased copy of the in-KB pairs: the chosen answer is warm filler WITHOUT the fact.

    The chosen answer's warm sentences (its text with the fact's answer removed)
    are stacked ``repeats`` times, or more until they are longer than the rejected
    answer; the rejected answer stays as it is (it holds the fact). Out-of-KB pairs are kept. A judge that rewards warmth alone prefers
    these "chosen" answers: they are longer, repetitive and unhelpful.
    """
    from ftlab.data import load_facts

    facts = load_facts()
    biased = []
    for pair in pairs:
        if pair["kind"] != "in_kb":
            biased.append(dict(pair))
            continue
        filler = strip_fact(pair["chosen"], facts[pair["fact_id"]]["answer"])
        if not filler:  # a chosen answer with no warm sentence: keep the pair as it is
            biased.append(dict(pair))
            continue
        n = repeats
        while len(" ".join([filler] * n)) <= len(pair["rejected"]) and n < 4 * repeats:
            n += 1  # stack until the filler is longer than the rejected answer: a pure length bias as well
        biased.append({**pair, "chosen": " ".join([filler] * n)})
    return biased


def example_ids(rows: Sequence[Mapping], n_in_kb: int = 8, n_out_of_kb: int = 2) -> list[str]:
    """The before/after examples, chosen by a rule: evenly spaced ids of the pairs_test prompts.

    In-KB and out-of-KB pairs_test prompts are sorted by id; the rule takes
    ``n_in_kb`` and ``n_out_of_kb`` of them at evenly spaced positions. Nothing
    depends on the answers, so no example is picked for looking good.
    """
    chosen: list[str] = []
    for kind, n in (("in_kb", n_in_kb), ("out_of_kb", n_out_of_kb)):
        ids = sorted(r["id"] for r in rows if r["kind"] == kind and r["id"].startswith("pref-"))
        if len(ids) < n:
            raise ValueError(f"only {len(ids)} {kind} pairs_test prompts, {n} requested")
        chosen += [ids[(2 * i + 1) * len(ids) // (2 * n)] for i in range(n)]
    return chosen


def before_after_markdown(before: Sequence[Mapping], after: Sequence[Mapping], ids: Sequence[str]) -> str:
    """A Markdown table of the answers to ``ids`` before and after, with tone and fact marks."""
    from ftlab.eval import fact_correct, tone_score

    b, a = {r["id"]: r for r in before}, {r["id"]: r for r in after}

    def cell(row) -> str:
        text = row["answer"].replace("|", "\\|").replace("\n", " ")
        mark = ""
        if row["kind"] == "in_kb":
            mark = " ✅" if fact_correct(row["answer"], row["fact_id"]) else " ❌"
        elif is_abstention(row["answer"]):
            mark = " 🙋"
        return f"{text} *(tone {tone_score(row['answer']):.2f}{mark})*"

    lines = ["| # | 질문 (종류) | SFT 모델 (전) | DPO 후 |", "|---|---|---|---|"]
    for i, key in enumerate(ids, start=1):
        kind = "KB 안" if b[key]["kind"] == "in_kb" else "KB 밖"
        lines.append(f"| {i} | {b[key]['prompt']} ({kind}) | {cell(b[key])} | {cell(a[key])} |")
    return "\n".join(lines)
