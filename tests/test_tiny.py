"""The offline tiny model: deterministic build, tokenizer, chat template, generation."""

import hashlib
import json

import pytest

from ftlab import tiny

SMALL = tiny.TinyConfig(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, seq_len=32, batch_size=4, steps=12, warmup_steps=2,
)
SENTENCES = [
    "오늘은 날씨가 맑아서 공원에 산책을 나갔습니다.",
    "도서관에서 빌린 책을 주말까지 반납해야 합니다.",
    "김치찌개는 잘 익은 김치로 끓이면 더 맛있습니다.",
    "Spring comes after winter, and the days grow longer.",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "pretrain").mkdir()
    (root / "pretrain" / "text.txt").write_text("\n".join(SENTENCES * 20) + "\n", encoding="utf-8")
    dialogue = {"messages": [{"role": "user", "content": "예약할 수 있나요?"},
                             {"role": "assistant", "content": "네, 가능합니다. 몇 분이세요?"}]}
    (root / "pretrain" / "dialogues.jsonl").write_text((json.dumps(dialogue, ensure_ascii=False) + "\n") * 20)
    return root


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    return tiny.build(tmp_path_factory.mktemp("a") / "tiny", SMALL, data_dir=corpus, verbose=False)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_byte_identical(built, corpus, tmp_path):
    again = tiny.build(tmp_path / "tiny", SMALL, data_dir=corpus, verbose=False)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha(built / name) == sha(again / name), name


def test_build_record_and_fingerprint(built, corpus):
    record = tiny.info(built)
    assert record["fingerprint"] == tiny.fingerprint(SMALL, tiny.corpus_files(corpus))
    assert tiny.is_current(built, SMALL, corpus)
    assert not tiny.is_current(built, tiny.TinyConfig(), corpus)  # other config -> rebuild
    assert record["loss_log"][-1]["loss"] < record["loss_log"][0]["loss"]


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain"):
        tiny.corpus_files(tmp_path)


def test_tokenizer_round_trip_and_template(built):
    model, tok = tiny.load(built)
    text = "파인튜닝(Fine-tuning)은 재미있어요!"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    messages = [{"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "반가워요."}]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == tiny.render_chat(messages)
    enc = tok.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    answer_ids = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(answer_ids) == "반가워요.<|end|>"


def test_generation_runs_and_stops(built):
    model, tok = tiny.load(built)
    answer = tiny.chat(model, tok, "예약할 수 있나요?", max_new_tokens=12)
    assert isinstance(answer, str)
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|end|>")


def test_cli_build_reuses_current_cache(built, monkeypatch, capsys):
    monkeypatch.setattr(tiny, "is_current", lambda *a, **k: True)
    monkeypatch.setattr(tiny, "info", lambda *a, **k: {"fingerprint": "abc"})
    assert tiny.main(["build", "--out", str(built)]) == 0
    assert "up to date" in capsys.readouterr().out
