"""Checks for lab 05 (SFT and prompt templates).

- ``check_render_prompt``: the learner's prompt renderer against the tokenizer's
  own chat template (``apply_chat_template(..., add_generation_prompt=True)``)
  and the course's Instruction-Input-Response format (``ftlab.data``).
- ``check_completion_batch``: the learner's completion-only batch (input ids,
  attention mask, labels) against what trl's ``SFTTrainer`` builds from the same
  prompt/completion strings: its dataset preparation (``completion_mask`` ->
  ``-100`` labels) followed by its collator (``DataCollatorForLanguageModeling``).
"""

from __future__ import annotations

import random
import tempfile
from typing import Callable, Sequence

IGNORE = -100


def _sample_rows(n: int, seed: int) -> list[dict]:
    """``n`` SFT rows drawn with ``seed`` from all splits, at least one with and one without an input."""
    from ftlab import data

    rows = [row for split in ("train", "validation", "test") for row in data.load_sft(split)]
    rng = random.Random(seed)
    with_input = [row for row in rows if (row.get("input") or "").strip()]
    without = [row for row in rows if not (row.get("input") or "").strip()]
    picked = [rng.choice(with_input), rng.choice(without)] + rng.sample(rows, max(0, n - 2))
    rng.shuffle(picked)
    return picked


def _first_difference(mine: str, expected: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(mine, expected)) if a != b), min(len(mine), len(expected)))
    return f"first difference at character {at}: yours {mine[at:at + 20]!r}, expected {expected[at:at + 20]!r}"


def check_render_prompt(render: Callable, tokenizer, n_rows: int = 6, seed: int = 0) -> None:
    """``render(row, template, tokenizer)`` must equal the reference prompt for both templates.

    ``"chat"``: the tokenizer's chat template with one user turn (the
    instruction, then the input on the next line when there is one) and the
    generation prompt. ``"instruction"``: ``### 지시:`` / ``### 입력:`` (only when
    the input is not empty) / ``### 응답:``, ending right after ``### 응답:\\n``.
    The rows are drawn by the check (with and without an input).
    """
    from ftlab.data import format_instruction_prompt, user_content

    for row in _sample_rows(n_rows, seed):
        expected = {
            "chat": tokenizer.apply_chat_template([{"role": "user", "content": user_content(row)}],
                                                  add_generation_prompt=True, tokenize=False),
            "instruction": format_instruction_prompt(row, with_response=False),
        }
        for template, want in expected.items():
            got = render(dict(row), template, tokenizer)
            assert isinstance(got, str), f"{template}: return the prompt as a string, got {type(got).__name__}"
            if got == want:
                continue
            hint = _first_difference(got, want)
            if want.startswith(got) and template == "chat":
                hint += " (the generation prompt is missing: add_generation_prompt=True)"
            elif want.startswith(got) or got.rstrip("\n") == want.rstrip("\n"):
                hint += " (check the line break at the very end: the prompt ends where the answer starts)"
            if template == "instruction" and not (row.get("input") or "").strip() and "### 입력" in got:
                hint += " (an empty input gets no ### 입력: block)"
            if got == want + row["output"] or got.startswith(want) and row["output"] and row["output"] in got:
                hint += " (the prompt must not contain the answer)"
            raise AssertionError(f"{template} prompt for {row['instruction'][:30]!r}...: {hint}")


def trl_reference_batch(tokenizer, pairs: Sequence[dict]) -> dict:
    """The batch trl's ``SFTTrainer`` trains on for ``pairs`` (prompt/completion strings), in order.

    Builds a throw-away ``SFTTrainer`` (a 1-layer random Llama, so no weights
    are loaded) with ``completion_only_loss=True``, lets it prepare the dataset
    (tokenize prompt and prompt+completion, ``completion_mask`` -> ``-100``
    labels) and collates all rows with its own data collator (right padding,
    ``-100`` on padding).
    """
    key = (id(tokenizer), tuple((p["prompt"], p["completion"]) for p in pairs))
    if key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[key] = _trl_batch(tokenizer, pairs)
    return {k: v.clone() for k, v in _REFERENCE_CACHE[key].items()}


_REFERENCE_CACHE: dict = {}


def _trl_batch(tokenizer, pairs: Sequence[dict]) -> dict:
    import warnings

    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        # transformers 5.23 deprecates SFTConfig's inherited `gradient_checkpointing` field name; we don't set it.
        warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*` is deprecated.*", category=FutureWarning)
        args = SFTConfig(output_dir=out, completion_only_loss=True, report_to="none", max_length=None,
                         use_cpu=True, disable_tqdm=True, dataset_num_proc=None)
        trainer = SFTTrainer(model=LlamaForCausalLM(config), args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_list([{"prompt": p["prompt"], "completion": p["completion"]}
                                                              for p in pairs]))
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        return trainer.data_collator(rows)


def _compare_batch(mine: dict, ref: dict, pairs: Sequence[dict]) -> None:
    import torch

    for key in ("input_ids", "attention_mask", "labels"):
        assert key in mine, f"the batch needs the key {key!r} (got {sorted(mine)})"
    got = {k: torch.as_tensor(mine[k]).cpu() for k in ("input_ids", "attention_mask", "labels")}
    for key, tensor in got.items():
        assert tuple(tensor.shape) == tuple(ref[key].shape), (
            f"{key}: shape {tuple(tensor.shape)}, expected {tuple(ref[key].shape)} "
            f"(batch, longest row; pad every row on the right to the longest one)")
    assert torch.equal(got["input_ids"], ref["input_ids"]), (
        "input_ids differ: prompt + completion tokens (add_special_tokens=False), right-padded with pad_token_id")
    assert torch.equal(got["attention_mask"], ref["attention_mask"]), "attention_mask: 1 on real tokens, 0 on padding"
    labels, want = got["labels"], ref["labels"]
    if torch.equal(labels, want):
        return
    padding = ref["attention_mask"] == 0
    if not torch.equal(labels[padding], want[padding]):
        raise AssertionError("labels on padding must be -100 (padding is not part of the answer)")
    shifted = torch.full_like(want, IGNORE)
    shifted[:, :-1] = ref["input_ids"][:, 1:]
    if torch.equal(labels[:, :-1], want[:, 1:]) or torch.equal(labels[labels != IGNORE], shifted[labels != IGNORE]):
        raise AssertionError("labels look shifted by one: keep labels aligned with input_ids, the model shifts them itself")
    for row in range(want.shape[0]):
        if torch.equal(labels[row], want[row]):
            continue
        answer = (want[row] != IGNORE).nonzero().flatten()
        first, last = int(answer[0]), int(answer[-1])
        if labels[row, first] == IGNORE:
            raise AssertionError(f"row {row}: the first answer token (position {first}) is masked: off by one at the start")
        if labels[row, last] == IGNORE:
            raise AssertionError(f"row {row}: the last answer token (the end-of-turn token) is masked: train on it too")
        if first > 0 and labels[row, first - 1] != IGNORE:
            raise AssertionError(f"row {row}: position {first - 1} is a prompt token but has a label: off by one at the start")
        raise AssertionError(f"row {row}: labels differ from trl's; prompt positions are -100, answer positions are the token ids")


def check_completion_batch(build: Callable, tokenizer, batch_sizes: Sequence[int] = (1, 3, 5), seed: int = 0) -> None:
    """``build(tokenizer, pairs)`` must return the batch trl's ``SFTTrainer`` trains on.

    ``pairs`` are ``{"prompt", "completion"}`` strings in both templates, drawn
    by the check; every batch is compared with ``trl_reference_batch``.
    """
    from ftlab import sft

    rng = random.Random(seed)
    rows = _sample_rows(sum(batch_sizes), seed)
    start = 0
    for size in batch_sizes:
        template = rng.choice(sft.TEMPLATE_NAMES)
        pairs = sft.to_pairs(rows[start:start + size], template, tokenizer)
        start += size
        mine = build(tokenizer, [dict(p) for p in pairs])
        assert isinstance(mine, dict), f"return a dict of tensors, got {type(mine).__name__}"
        _compare_batch(mine, trl_reference_batch(tokenizer, pairs), pairs)
