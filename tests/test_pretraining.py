"""ftlab.pretraining: tokenizer measures, held-out loss, and the dW spectrum (lab 04)."""

import math

import pytest
import torch

from ftlab import pretraining, tiny

SENTENCES = [
    "오늘은 날씨가 맑아서 공원에 산책을 나갔습니다.",
    "도서관에서 빌린 책을 주말까지 반납해야 합니다.",
    "김치찌개는 잘 익은 김치로 끓이면 더 맛있습니다.",
    "학교 운동장에서 친구들과 축구를 했습니다.",
] * 10
SMALL = tiny.TinyConfig(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, seq_len=16, batch_size=4, steps=12, warmup_steps=2,
)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.train_tokenizer(SENTENCES, SMALL.vocab_size)


@pytest.fixture()
def model(tokenizer):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny.build_llama_config(SMALL, tokenizer)).eval()


def test_tokens_per_char_falls_with_vocab(tokenizer):
    small = tiny.train_tokenizer(SENTENCES, 270)  # 262 specials+bytes: almost no merges
    assert pretraining.tokens_per_char(tokenizer, SENTENCES[:4]) < pretraining.tokens_per_char(small, SENTENCES[:4])
    assert pretraining.tokens_per_char(small, ["가 나"]) == pytest.approx(6 / 2)  # 3 UTF-8 bytes per syllable
    with pytest.raises(ValueError, match="no characters"):
        pretraining.tokens_per_char(small, [" "])


def test_char_level_bpe_has_unknowns_byte_level_has_none(tokenizer):
    char_bpe = pretraining.train_char_level_bpe(SENTENCES, 200)
    assert "[UNK]" in char_bpe.encode("오늘은 🙂").tokens
    ids = tokenizer("오늘은 🙂", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "오늘은 🙂"


def test_split_documents_is_disjoint_and_deterministic():
    docs = [("text", str(i)) for i in range(20)]
    train, held = pretraining.split_documents(docs, 5)
    assert len(held) == 4 and len(train) == 16 and not set(map(str, train)) & set(map(str, held))
    assert pretraining.split_documents(docs, 5) == (train, held)
    with pytest.raises(ValueError, match="heldout_every"):
        pretraining.split_documents(docs, 1)


def test_windows_and_mean_loss_match_the_model(tokenizer, model):
    stream = pretraining.token_stream([("text", s) for s in SENTENCES[:8]], tokenizer)
    assert stream.count(tokenizer.eos_token_id) == 8
    windows = pretraining.make_windows(stream, 16, limit=3)
    assert windows.shape == (3, 16) and windows[0].tolist() == stream[:16]
    expected = model(input_ids=windows, labels=windows).loss.item()  # equal-length windows: same token mean
    assert pretraining.mean_loss(model, windows, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert pretraining.perplexity(math.log(7.0)) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="shorter than one window"):
        pretraining.make_windows(stream[:5], 16)


def test_pretrain_evaluation_hook_leaves_training_unchanged(tokenizer):
    from transformers import LlamaForCausalLM

    stream = pretraining.token_stream([("text", s) for s in SENTENCES], tokenizer)
    held = pretraining.make_windows(stream, 16, limit=4)
    logs, weights = [], []
    for hook in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(tiny.build_llama_config(SMALL, tokenizer))
        monitor = pretraining.HeldOutMonitor(model, held, every=5)
        evaluate = monitor.evaluate if hook else None
        logs.append(tiny.pretrain(model, stream, SMALL, log_every=3, evaluate=evaluate, eval_every=5, device="cpu"))
        weights.append(model.lm_head.weight.detach().clone())
    assert logs[0] == logs[1] and torch.equal(weights[0], weights[1])  # the hook does not change training
    assert [p["step"] for p in monitor.log] == [0, 5, 10, 12]
    assert monitor.log[-1]["loss"] < monitor.log[0]["loss"]


def test_held_out_monitor_records_during_pretrain(tokenizer, model):
    stream = pretraining.token_stream([("text", s) for s in SENTENCES], tokenizer)
    held = pretraining.make_windows(stream, 16, limit=4)
    monitor = pretraining.HeldOutMonitor(model, held, every=5)
    log = tiny.pretrain(monitor, stream, SMALL)
    monitor.evaluate(SMALL.steps)
    assert [p["step"] for p in monitor.log] == [0, 5, 10, 12]
    assert monitor.log[-1]["loss"] < monitor.log[0]["loss"] and log[-1]["loss"] < log[0]["loss"]


def test_batch_loss_spread_shrinks_with_batch_size(tokenizer, model):
    stream = pretraining.token_stream([("text", s) for s in SENTENCES], tokenizer)
    windows = pretraining.make_windows(stream, 8)
    small = torch.tensor(pretraining.batch_loss_spread(model, windows, 1, 40)).std()
    large = torch.tensor(pretraining.batch_loss_spread(model, windows, 16, 40)).std()
    assert large < small


def test_chat_batch_labels_only_answers(tokenizer):
    chats = [[{"role": "user", "content": "예약할 수 있나요?"}, {"role": "assistant", "content": "네, 가능합니다."}],
             [{"role": "user", "content": "몇 시?"}, {"role": "assistant", "content": "9시."}]]
    batch = pretraining.chat_batch(tokenizer, chats)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    first = batch["labels"][0][batch["labels"][0] != pretraining.IGNORE_INDEX]
    assert tokenizer.decode(first) == "네, 가능합니다.<|end|>"
    padded = batch["attention_mask"][1] == 0
    assert padded.any() and (batch["labels"][1][padded] == pretraining.IGNORE_INDEX).all()


def test_energy_and_effective_rank():
    torch.manual_seed(0)
    u, v = torch.randn(40, 3), torch.randn(3, 30)
    low_rank = u @ v
    assert pretraining.energy_fraction(low_rank, 3) == pytest.approx(1.0, abs=1e-5)
    assert pretraining.effective_rank(low_rank, 0.999) <= 3
    assert pretraining.energy_fraction(torch.eye(10), 2) == pytest.approx(0.2)
    assert pretraining.effective_rank(torch.eye(10), 0.9) == 9
    curve = pretraining.energy_curve(low_rank)
    assert curve == sorted(curve) and curve[-1] == pytest.approx(1.0)


def test_delta_weights_and_report(model):
    import copy

    tuned = copy.deepcopy(model)
    with torch.no_grad():
        w = tuned.model.layers[0].self_attn.q_proj.weight
        w += 0.01 * torch.outer(torch.ones(w.shape[0]), torch.ones(w.shape[1]))  # a rank-1 update
    deltas = pretraining.delta_weights(model, tuned)
    assert all(name.endswith("_proj.weight") for name in deltas)
    report = {r["weight"]: r for r in pretraining.delta_report(deltas, k=1)}
    q = report["L0.self_attn.q_proj"]
    assert q["dW top-1 energy"] == pytest.approx(1.0, abs=1e-4) and q["noise top-1 energy"] < 0.5
    assert report["L1.mlp.down_proj"]["dW/W (norm)"] == 0.0
    with pytest.raises(ValueError, match="no 2-D weights"):
        pretraining.delta_weights(model, tuned, include=("nothing",))


def test_token_pieces_show_bytes_of_split_syllables(tokenizer):
    ids = tokenizer("오늘은 뷁", add_special_tokens=False)["input_ids"]
    pieces = pretraining.token_pieces(tokenizer, ids)
    assert pieces[0].startswith("오") and "▁" in "".join(pieces)
    assert "\\xeb" in "".join(pieces)  # 뷁 (eb b7 81) was never seen: shown byte by byte
    assert pretraining.token_pieces(tokenizer, [tokenizer.eos_token_id]) == ["<|end|>"]
