"""Supervised fine-tuning helpers: prompt templates, training, generation, scoring.

Every function takes a model, a tokenizer and plain rows (dicts with
``instruction``, ``input``, ``output`` and, for scoring, ``fact_id``), so the
same code serves the tiny CPU model and the GPU profiles' hub models, full
fine-tuning and PEFT adapters (labs 05 and 08).

- ``prompt_fn(template, tokenizer)``: how a row becomes a prompt, for
  ``"instruction"`` (Alpaca-style ``### 지시:`` / ``### 입력:`` / ``### 응답:``)
  or ``"chat"`` (the tokenizer's own chat template); any callable works too.
- ``prompt_completion(rows, template, tokenizer)``: a ``datasets.Dataset`` of
  ``{"prompt", "completion"}`` strings for trl's ``SFTTrainer``; with
  ``completion_only_loss=True`` the loss covers the completion only.
- ``train_sft(model, tokenizer, args, train, eval_dataset)``: one trl run
  (``sft_trainer`` builds the trainer without training it).
- ``completion_batch``: a padded batch with labels on the completion only.
- ``generate_answers`` / ``fact_scores``: greedy answers and the fact check.
- ``answer_nll``: mean negative log-likelihood per answer token.
- ``mix_at_ratio``: a training list with a given share of replay rows.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence, Union

Template = Union[str, Callable[[dict], str]]
TEMPLATE_NAMES = ("instruction", "chat")


def chat_messages(row: dict) -> list[dict]:
    """A row as one user turn (instruction, then input) and one assistant turn (``ftlab.data.to_messages``)."""
    from ftlab.data import to_messages

    return to_messages(row)


def prompt_fn(template: Template, tokenizer=None) -> Callable[[dict], str]:
    """The function that renders a row's prompt (everything before the answer).

    ``"instruction"`` uses ``ftlab.data.format_instruction_prompt`` without the
    response; ``"chat"`` uses ``tokenizer.apply_chat_template`` with the
    generation prompt; a callable is returned unchanged.
    """
    if callable(template):
        return template
    if template == "instruction":
        from ftlab.data import format_instruction_prompt

        return lambda row: format_instruction_prompt(row, with_response=False)
    if template == "chat":
        if tokenizer is None:
            raise ValueError("the chat template needs the tokenizer: prompt_fn('chat', tokenizer)")
        return lambda row: tokenizer.apply_chat_template(
            chat_messages(row)[:1], add_generation_prompt=True, tokenize=False
        )
    raise ValueError(f"unknown template {template!r}: use one of {', '.join(TEMPLATE_NAMES)} or a function")


def to_pairs(rows: Sequence[dict], template: Template, tokenizer) -> list[dict]:
    """``[{"prompt", "completion"}]`` with the end-of-turn token closing each answer."""
    render = prompt_fn(template, tokenizer)
    return [{"prompt": render(row), "completion": row["output"] + tokenizer.eos_token} for row in rows]


def prompt_completion(rows: Sequence[dict], template: Template | None = None, tokenizer=None):
    """A ``datasets.Dataset`` of prompt/completion strings, ready for ``SFTTrainer``.

    ``rows`` are data rows rendered with ``template``, or already rendered
    pairs (dicts with ``prompt`` and ``completion``, e.g. the output of
    ``mix_at_ratio`` over ``to_pairs`` lists), which are passed through.
    """
    from datasets import Dataset

    rows = list(rows)
    if rows and "prompt" in rows[0]:
        pairs = rows
    elif template is None or tokenizer is None:
        raise ValueError("rows need rendering: pass the template and the tokenizer, or rows that are prompt/completion pairs")
    else:
        pairs = to_pairs(rows, template, tokenizer)
    return Dataset.from_list([{"prompt": p["prompt"], "completion": p["completion"]} for p in pairs])


def sft_trainer(model, tokenizer, args, train_dataset, eval_dataset=None, callbacks=None, peft_config=None,
                quiet: bool = True):
    """A trl ``SFTTrainer``, ready to ``.train()`` (``train_sft`` builds one and trains it).

    ``quiet`` drops the callback that prints every log entry when progress
    bars are off (``disable_tqdm=True``); the log itself stays in
    ``trainer.state.log_history``.
    """
    from transformers import PrinterCallback
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    if quiet:
        trainer.remove_callback(PrinterCallback)
    return trainer


def train_sft(model, tokenizer, args, train_dataset, eval_dataset=None, callbacks=None, peft_config=None,
              quiet: bool = True):
    """Fine-tune ``model`` with trl's ``SFTTrainer``; return the trainer.

    ``args`` is an ``SFTConfig``; the log (loss, learning rate, eval_loss) is in
    ``trainer.state.log_history``. With ``peft_config`` (a ``LoraConfig``) only
    an adapter is trained; ``trainer.model`` is then the wrapped model, so
    evaluate ``trainer.model`` rather than ``model``. It is left in eval mode.
    ``quiet``: see ``sft_trainer``.
    """
    trainer = sft_trainer(model, tokenizer, args, train_dataset, eval_dataset, callbacks, peft_config, quiet)
    trainer.train()
    trainer.model.eval()
    return trainer


def stop_after(steps: int):
    """A callback that ends training after ``steps`` optimizer steps.

    The learning-rate schedule still follows ``max_steps``, so a run stopped at
    step 60 of 300 saw exactly the learning rates of the first 60 steps of the
    full run: two runs that differ only in their data or loss can be compared
    at equal steps without paying for the whole schedule twice.
    """
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= steps:
                control.should_training_stop = True
            return control

    return StopAfter()


def measure_at(steps: int | Sequence[int], measure: Callable, results: dict):
    """A callback that calls ``measure(model)`` after each optimizer step in ``steps``.

    ``results[step]`` receives the value. The model is switched to eval mode
    for the measurement and back to training mode after it.
    """
    from transformers import TrainerCallback

    wanted = {steps} if isinstance(steps, int) else set(steps)

    class MeasureAt(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in wanted:
                model.eval()
                results[state.global_step] = measure(model)
                model.train()
            return control

    return MeasureAt()


def early_stopping_step(steps: Sequence[int], values: Sequence[float], patience: int, threshold: float = 0.0):
    """The step at which ``transformers.EarlyStoppingCallback`` would stop on this validation curve, or None.

    Follows the callback and the Trainer exactly, for a metric where lower is
    better: an evaluation resets the patience counter only if it beats the best
    earlier value by more than ``threshold`` (``early_stopping_threshold``);
    otherwise the counter grows, and training stops when it reaches
    ``patience``. The best value itself moves on any improvement, however small.
    Use it to ask "where would early stopping with these settings have cut
    this run?" without training again.
    """
    if patience < 1:
        raise ValueError(f"patience must be at least 1, got {patience}")
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps but {len(values)} values")
    best, counter = None, 0
    for step, value in zip(steps, values):
        if best is None or (value < best and abs(value - best) > threshold):
            counter = 0
        else:
            counter += 1
        if best is None or value < best:
            best = value
        if counter >= patience:
            return step
    return None


def log_series(log_history: Sequence[dict], key: str) -> dict[str, list]:
    """``{"step": [...], "value": [...]}`` for one logged key (``loss``, ``eval_loss``, ``learning_rate``)."""
    entries = [entry for entry in log_history if key in entry]
    return {"step": [entry["step"] for entry in entries], "value": [entry[key] for entry in entries]}


def generate_answers(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 64
) -> list[str]:
    """Greedy answers to already rendered prompts (left-padded batches, stop at EOS)."""
    import torch

    answers: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                list(prompts[start : start + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            answers += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def fact_scores(
    model, tokenizer, rows: Sequence[dict], template: Template, max_new_tokens: int = 48, batch_size: int = 64
) -> dict:
    """Greedy answers to ``rows`` in ``template`` and their fact accuracy.

    Returns ``{"accuracy": float, "answers": [...], "correct": [bool, ...]}``;
    a row counts as correct when ``ftlab.eval.fact_correct(answer, fact_id)``.
    """
    from ftlab.eval import fact_correct

    render = prompt_fn(template, tokenizer)
    answers = generate_answers(model, tokenizer, [render(r) for r in rows], max_new_tokens, batch_size)
    correct = [bool(fact_correct(answer, row["fact_id"])) for answer, row in zip(answers, rows)]
    return {"accuracy": sum(correct) / max(1, len(correct)), "answers": answers, "correct": correct}


def _encode_pair(tokenizer, pair: dict) -> tuple[list[int], int]:
    """Token ids of prompt+completion and where the completion starts (as trl computes it)."""
    prompt_ids = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
    ids = tokenizer(pair["prompt"] + pair["completion"], add_special_tokens=False)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    return ids, start


def completion_batch(tokenizer, pairs: Sequence[dict]) -> dict:
    """One right-padded batch of ``{"prompt", "completion"}`` pairs as (batch, tokens) CPU tensors.

    ``labels`` hold the completion's token ids only (prompt and padding are
    -100), so a model's loss on the batch is the answer's cross-entropy, as in
    trl's ``completion_only_loss``. The completion starts where the tokens of
    prompt+completion stop matching the prompt's own (``_encode_pair``).
    """
    import torch

    encoded = [_encode_pair(tokenizer, pair) for pair in pairs]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(input_ids, -100)
    mask = torch.zeros_like(input_ids)
    for row, (ids, begin) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, begin : len(ids)] = torch.tensor(ids[begin:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def answer_nll_sums(model, tokenizer, pairs: Sequence[dict], batch_size: int = 32) -> list[tuple[float, int]]:
    """Per pair: (summed NLL of its completion tokens in nats, number of completion tokens)."""
    import torch

    sums: list[tuple[float, int]] = []
    for start in range(0, len(pairs), batch_size):
        batch = completion_batch(tokenizer, pairs[start : start + batch_size])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"].to(model.device),
                           attention_mask=batch["attention_mask"].to(model.device)).logits
        logits, targets = logits[:, :-1].float().cpu(), batch["labels"][:, 1:]  # predict token t+1 from tokens <= t
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=-100, reduction="none"
        )  # (batch, tokens), 0 where ignored
        sums += list(zip(nll.sum(dim=1).tolist(), (targets != -100).sum(dim=1).tolist()))
    return sums


def answer_nll(model, tokenizer, pairs: Sequence[dict], batch_size: int = 32) -> float:
    """Mean negative log-likelihood per completion token (nats), prompts excluded.

    ``pairs`` are ``{"prompt", "completion"}`` dicts (``to_pairs``). Averaging
    over tokens, not examples, matches the training loss of ``SFTTrainer``.
    """
    sums = answer_nll_sums(model, tokenizer, pairs, batch_size)
    return sum(total for total, _ in sums) / max(1, sum(count for _, count in sums))


def answer_nll_per_example(model, tokenizer, pairs: Sequence[dict], batch_size: int = 32) -> list[float]:
    """Mean NLL per completion token of each pair: the paired values for ``ftlab.stats`` tests."""
    return [total / max(1, count) for total, count in answer_nll_sums(model, tokenizer, pairs, batch_size)]


def mix_at_ratio(domain: Sequence, replay: Sequence, replay_share: float, size: int, seed: int = 0) -> list:
    """``size`` items, ``round(size * replay_share)`` of them from ``replay``, the rest from ``domain``.

    The seeds' "일반:도메인 = 8:2" is ``replay_share=0.8``. Each source is
    drawn in shuffled passes (every item once before any repeats), and the
    result is shuffled, so a short run still sees both sources throughout.
    """
    if not 0.0 <= replay_share <= 1.0:
        raise ValueError(f"replay_share must be between 0 and 1, got {replay_share}")
    n_replay = round(size * replay_share)
    rng = random.Random(seed)

    def draw(items: Sequence, n: int) -> list:
        if n and not items:
            raise ValueError(f"cannot draw {n} items from an empty source")
        out: list = []
        for _ in range(math.ceil(n / max(1, len(items)))):
            chunk = list(items)
            rng.shuffle(chunk)
            out += chunk
        return out[:n]

    mixed = draw(replay, n_replay) + draw(domain, size - n_replay)
    rng.shuffle(mixed)
    return mixed
