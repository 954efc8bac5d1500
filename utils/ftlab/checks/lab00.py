"""Checks for lab 00 (setup and the tiny Llama), compared with transformers.

- ``check_count_llama_parameters``: the formula against ``LlamaForCausalLM`` built from
  several configs (tied and untied embeddings, GQA and full multi-head attention);
- ``check_assistant_token_share``: against the tokenizer's own assistant mask;
- ``UNSEEN_SENTENCES``: sentences that are not in the pretraining corpus (a unit test
  checks it), on which lab 00 shows that pretraining generalises.
"""

from __future__ import annotations

from typing import Callable

# Short everyday Korean sentences written for lab 00; tests/test_exercise_checks_lab00.py
# asserts that none of them occurs in the tiny model's pretraining corpus.
UNSEEN_SENTENCES = (
    "오늘은 비가 와서 우산을 챙겨 학교에 갔다.",
    "동생이 아침에 우유를 쏟아서 엄마가 바닥을 닦았다.",
    "주말에 친구와 함께 도서관에서 수학 숙제를 했다.",
    "버스가 늦게 와서 약속 시간에 조금 늦었다.",
    "할머니 댁에 가는 길에 과일 가게에 들러 사과를 샀다.",
    "저녁을 먹고 나서 가족과 함께 공원을 산책했다.",
    "시험이 끝나면 영화를 보러 가기로 친구와 약속했다.",
    "창문을 열어 두었더니 방 안이 금방 시원해졌다.",
)

# (vocab, hidden, intermediate, layers, heads, kv_heads, tied) of the configs the check builds
_CONFIGS = (
    (100, 64, 160, 2, 4, 2, True),
    (120, 96, 256, 3, 6, 6, False),  # full multi-head attention, untied lm_head
    (80, 128, 224, 1, 8, 2, False),
)


def check_count_llama_parameters(count_llama_parameters: Callable) -> None:
    """The formula equals the parameter count of transformers' ``LlamaForCausalLM`` on several configs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for vocab, hidden, inter, layers, heads, kv_heads, tied in _CONFIGS:
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                             tie_word_embeddings=tied)
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = LlamaForCausalLM(config)
        expected = sum(p.numel() for p in model.parameters())  # a tied tensor is listed once
        got = count_llama_parameters(config)
        what = f"{'tied' if tied else 'untied'} embeddings, {heads} heads / {kv_heads} kv heads"
        assert got == expected, (
            f"{what}: formula gives {got:,}, transformers counts {expected:,} (difference {got - expected:+,}). "
            "Check k/v sizes (kv_heads * head_dim), the two norms per layer, the final norm, "
            "and lm_head only when embeddings are not tied")


def check_assistant_token_share(assistant_token_share: Callable, tokenizer) -> None:
    """The share equals the mean of the tokenizer's assistant mask on a few conversations."""
    conversations = [
        [{"role": "user", "content": "안녕하세요?"}, {"role": "assistant", "content": "네, 안녕하세요."}],
        [{"role": "user", "content": "오늘 날씨 어때요?"}, {"role": "assistant", "content": "맑고 따뜻합니다. " * 4}],
        [{"role": "user", "content": "질문이 아주 길면 " * 6}, {"role": "assistant", "content": "네."}],
    ]
    for messages in conversations:
        enc = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
        expected = sum(enc["assistant_masks"]) / len(enc["input_ids"])
        got = float(assistant_token_share(tokenizer, messages))
        assert abs(got - expected) < 1e-9, (
            f"share {got:.3f}, expected {expected:.3f}: count tokens whose assistant mask is 1 and divide by "
            "ALL tokens of the conversation (template tokens included)")
