"""ftlab.alignment: the Part III measurements, the biased pairs, trl-compatible log-probs."""

import math

import pytest
import torch

from ftlab import alignment, data
from ftlab.eval import fact_correct


def test_score_answers_counts_each_measure():
    rows = [
        {"id": "a", "kind": "in_kb", "fact_id": "F001", "answer": "불편하셨겠어요. 공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요. 편하게 말씀해 주세요."},
        {"id": "b", "kind": "in_kb", "fact_id": "F001", "answer": "그건 제가 모르는 부분이에요."},
        {"id": "c", "kind": "out_of_kb", "fact_id": None, "answer": "확실히는 모르겠어요. 제조사에 물어봐 주세요."},
        {"id": "d", "kind": "out_of_kb", "fact_id": None, "answer": "그건 무조건 부품 고장입니다."},
    ]
    s = alignment.score_answers(rows)
    assert s["fact_accuracy"] == 0.5 and s["abstention_rate"] == 0.5 and s["over_refusal_rate"] == 0.5
    assert s["n_in_kb"] == 2 and s["n_out_of_kb"] == 2
    assert s["warm_rate"] == 1.0  # both in-KB answers sound warm (a polite refusal too)
    assert s["mean_length"] == pytest.approx((len(rows[0]["answer"]) + len(rows[1]["answer"])) / 2)


def test_score_answers_names_the_bad_row():
    with pytest.raises(ValueError, match=r"row 1 \(x\).*kind"):
        alignment.score_answers([{"id": "ok", "kind": "in_kb", "fact_id": "F001", "answer": ""},
                                 {"id": "x", "kind": "maybe", "answer": ""}])
    with pytest.raises(ValueError, match="fact_id"):
        alignment.score_answers([{"id": "y", "kind": "in_kb", "answer": "a"}])


def test_abstention_needs_a_refusal_and_no_fact():
    assert alignment.is_abstention("그건 제가 아는 범위 밖이에요.")
    assert not alignment.is_abstention("공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요. 저도 더는 몰라요.", "F001")
    assert alignment.is_abstention("저도 더는 몰라요.", "F001")
    assert not alignment.is_abstention("그런 건 인터넷에 다 있어요.")


def test_heldout_rows_cover_both_files():
    rows = alignment.heldout_rows()
    assert sum(r["kind"] == "out_of_kb" for r in rows) == 12
    assert sum(r["kind"] == "in_kb" for r in rows) == 167 + 101
    assert len({r["id"] for r in rows}) == len(rows)


def test_warm_filler_pairs_drop_the_fact_and_are_longer():
    pairs = list(data.load_preference_pairs("train"))
    biased = alignment.warm_filler_pairs(pairs, repeats=2)
    assert len(biased) == len(pairs)
    changed = [(p, b) for p, b in zip(pairs, biased) if p["chosen"] != b["chosen"]]
    assert len(changed) > 0.8 * sum(p["kind"] == "in_kb" for p in pairs)
    assert all(not fact_correct(b["chosen"], b["fact_id"]) for _, b in changed)
    assert all(b["rejected"] == p["rejected"] for p, b in zip(pairs, biased))
    longer = sum(len(b["chosen"]) > len(b["rejected"]) for b in biased) / len(biased)
    assert longer > 0.7


def test_example_ids_follow_the_rule():
    rows = alignment.heldout_rows()
    ids = alignment.example_ids(rows)
    assert len(ids) == 10 and len(set(ids)) == 10 and ids == alignment.example_ids(list(reversed(rows)))
    kinds = {r["id"]: r["kind"] for r in rows}
    assert [kinds[i] for i in ids].count("out_of_kb") == 2


def test_kl_from_logprobs():
    mean, se = alignment.kl_from_logprobs([-1.0, -2.0, -3.0], [-2.0, -2.0, -5.0])
    assert mean == pytest.approx(1.0) and se == pytest.approx(math.sqrt(1.0 / 3))
    with pytest.raises(ValueError):
        alignment.kl_from_logprobs([], [])


def test_dpo_loss_is_log2_at_initialisation():
    t = torch.tensor([-3.0, -7.0])
    loss, c, r = alignment.dpo_loss(t, t - 1, t, t - 1, beta=0.1)
    assert torch.allclose(loss, torch.full((2,), math.log(2))) and torch.all(c == 0) and torch.all(r == 0)


@pytest.fixture(scope="module")
def tiny():
    from ftlab import tiny as tiny_model

    model, tokenizer = tiny_model.load()
    return model.eval(), tokenizer


def test_chat_pair_matches_trl_tokenization(tiny):
    from trl.data_utils import apply_chat_template  # noqa: F401  (the pinned trl must still ship it)

    _, tokenizer = tiny
    pair = alignment.chat_pair(tokenizer, "질문이에요", "답이에요")
    assert pair["completion"].startswith("답이에요" + tokenizer.eos_token)
    head = tokenizer.apply_chat_template([{"role": "user", "content": "질문이에요"}], add_generation_prompt=True, tokenize=True)
    full = tokenizer.apply_chat_template([{"role": "user", "content": "질문이에요"}, {"role": "assistant", "content": "답이에요"}], tokenize=True)
    head = head["input_ids"] if hasattr(head, "keys") else head
    full = full["input_ids"] if hasattr(full, "keys") else full
    from ftlab.sft import _encode_pair

    ids, start = _encode_pair(tokenizer, pair)
    assert ids == list(full) and start == len(head)


def test_restricted_rows_leave_other_embeddings_unchanged(tiny):
    import copy

    from peft import get_peft_model

    model, tokenizer = tiny
    peft_model = get_peft_model(copy.deepcopy(model), alignment.lora_config(trainable_embeddings=True))
    rows = [5, 17, 300]
    assert alignment.restrict_embedding_rows(peft_model, rows) == 3
    weight = next(p for n, p in peft_model.named_parameters() if "modules_to_save" in n)
    before = weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    batch = tokenizer(["공유기 전원을 뽑으세요"], return_tensors="pt")
    peft_model.train()
    peft_model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    moved = (weight.detach() - before).abs().sum(dim=1) > 0
    assert moved[rows].all() and moved.sum() == len(rows)


def test_precomputed_reference_gives_trls_losses(tiny):
    import copy

    from ftlab.profile import get_profile

    model, tokenizer = tiny
    pairs = list(data.load_preference_pairs("train"))[:16]
    losses = {}
    for name, reference in (("trl", None), ("precomputed", alignment.reference_logprobs(model, tokenizer, pairs))):
        args = alignment.dpo_args(get_profile("cpu"), alignment.temporary_dir(), beta=0.1, steps=2, learning_rate=1e-3, batch_size=8)
        trainer = alignment.train_dpo(copy.deepcopy(model), tokenizer, pairs, args, reference=reference)
        losses[name] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses["trl"]) == 2 and losses["precomputed"] == pytest.approx(losses["trl"], abs=1e-4)
