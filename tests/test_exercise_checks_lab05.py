"""Lab 05 exercise checks: the reference solutions pass, plausible wrong answers fail."""

import pytest
import torch

from ftlab.checks import lab05


@pytest.fixture(scope="module")
def tokenizer():
    from ftlab.profile import detect_profile, load_model_and_tokenizer

    return load_model_and_tokenizer(detect_profile())[1]


def render_prompt(row, template, tokenizer, generation_prompt=True, empty_input_block=False, final_newline=True):
    """The solution, with switches that make it wrong."""
    if template == "instruction":
        parts = [f"### 지시:\n{row['instruction']}"]
        if (row.get("input") or "").strip() or empty_input_block:
            parts.append(f"### 입력:\n{row['input']}")
        return "\n\n".join(parts + ["### 응답:\n" if final_newline else "### 응답:"])
    user = row["instruction"] + (f"\n{row['input']}" if (row.get("input") or "").strip() else "")
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=generation_prompt,
                                         tokenize=False)


def completion_only_batch(tokenizer, pairs, shift=0, mask_padding=True, shift_labels=False):
    """The solution; ``shift`` moves the prompt/answer boundary, the other switches break it."""
    rows = []
    for pair in pairs:
        prompt_ids = tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"]
        ids = tokenizer(pair["prompt"] + pair["completion"], add_special_tokens=False)["input_ids"]
        cut = len(prompt_ids) + shift
        labels = [-100] * cut + ids[cut:]
        if shift_labels:
            labels = labels[1:] + [-100]
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100 if mask_padding else tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)], labels[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), torch.tensor(lab), 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def test_render_prompt_solution_passes(tokenizer):
    lab05.check_render_prompt(render_prompt, tokenizer)
    lab05.check_render_prompt(render_prompt, tokenizer, seed=1)


@pytest.mark.parametrize("wrong", [dict(generation_prompt=False), dict(empty_input_block=True), dict(final_newline=False)],
                         ids=["no generation prompt", "empty input block", "no final newline"])
def test_render_prompt_wrong_variants_fail(tokenizer, wrong):
    with pytest.raises(AssertionError):
        lab05.check_render_prompt(lambda row, template, tok: render_prompt(row, template, tok, **wrong), tokenizer)


def test_render_prompt_with_answer_fails(tokenizer):
    with pytest.raises(AssertionError, match="answer"):
        lab05.check_render_prompt(lambda row, t, tok: render_prompt(row, t, tok) + row["output"], tokenizer)


def test_completion_batch_solution_passes(tokenizer):
    lab05.check_completion_batch(completion_only_batch, tokenizer)


@pytest.mark.parametrize("wrong, message", [
    (dict(shift=1), "first answer token"),  # first answer token masked
    (dict(shift=-1), "prompt token"),  # last prompt token unmasked
    (dict(mask_padding=False), "padding"),
    (dict(shift_labels=True), "shifted"),
], ids=["first answer token masked", "last prompt token unmasked", "padding not masked", "labels shifted"])
def test_completion_batch_wrong_variants_fail(tokenizer, wrong, message):
    with pytest.raises(AssertionError, match=message):
        lab05.check_completion_batch(lambda tok, pairs: completion_only_batch(tok, pairs, **wrong), tokenizer)


def test_completion_batch_end_token_masked_fails(tokenizer):
    def end_masked(tok, pairs):
        batch = completion_only_batch(tok, pairs)
        for row in range(batch["labels"].shape[0]):
            last = int(batch["attention_mask"][row].sum()) - 1
            batch["labels"][row, last] = -100
        return batch

    with pytest.raises(AssertionError, match="end-of-turn"):
        lab05.check_completion_batch(end_masked, tokenizer)
