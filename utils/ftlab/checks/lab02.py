"""Checks for lab 02 (inference efficiency): the KV-cache decoding loop and the KV-cache size.

``check_greedy_with_kv_cache`` compares the learner's loop with
``model.generate(do_sample=False)`` on prompts chosen here (one alone, and a
left-padded batch), and records every forward call through a thin wrapper so
that a loop which re-feeds the whole sequence (same tokens, no cache) is caught.
``check_kv_cache_size`` compares the learner's formula with the bytes of the
key/value tensors that ``transformers`` really returns in ``past_key_values``
for MHA, GQA and MQA configs, in float32 and bfloat16.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROMPTS = (
    "고객님, 주문하신 상품은",
    "오늘 날씨가",
    "책을 읽으면 가 보지 못한 곳을",
    "우리 동네 도서관은",
    "주말에 친구와",
    "배송은 보통",
)
# (layers, query heads, kv heads, hidden, explicit head_dim or None): MHA, GQA, MQA, GQA with a wide head
CACHE_CONFIGS = ((2, 8, 8, 64, None), (3, 8, 2, 64, None), (2, 4, 1, 32, None), (2, 4, 2, 32, 16))


class RecordingModel:
    """Forwards every call to ``model`` and records the new tokens and cache of each call."""

    def __init__(self, model):
        self._model = model
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append({"new_tokens": input_ids.shape[1], "cache": kwargs.get("past_key_values") is not None})
        return self._model(*args, **kwargs)

    def __getattr__(self, name):  # config, device, dtype ... come from the real model
        return getattr(self._model, name)


def _encode(tokenizer, prompts):
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues at the right end of every row
    try:
        return tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


def check_greedy_with_kv_cache(fn: Callable, model, tokenizer, max_new_tokens: int = 12, seed: int = 0,
                               prompts: Sequence[str] = PROMPTS) -> None:
    """``fn(model, input_ids, attention_mask, max_new_tokens)`` gives ``generate``'s greedy tokens with a cache.

    Cases: one prompt alone, and a left-padded batch of three prompts picked by ``seed``.
    ``fn`` must return (batch, prompt + max_new_tokens) ids, feed the whole prompt once
    (prefill) and then exactly one new token per row per call, passing ``past_key_values``.
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(prompts), generator=gen).tolist()
    for batch in ([prompts[order[0]]], [prompts[i] for i in order[1:4]]):
        enc = _encode(tokenizer, batch)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
        recorder = RecordingModel(model)
        got = fn(recorder, ids.clone(), mask.clone(), max_new_tokens)
        where = f"batch of {len(batch)} prompt(s)"
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise AssertionError(f"{where}: returned {shape}, expected {tuple(expected.shape)} "
                                 "(prompt ids followed by max_new_tokens new ids)")
        calls = recorder.calls
        if not calls:
            raise AssertionError(f"{where}: no forward call was seen; call the model as model(input_ids=...), "
                                 "not model.forward or model.generate")
        if calls[0]["new_tokens"] != ids.shape[1]:
            raise AssertionError(f"{where}: the first call must feed the whole prompt once (prefill)")
        later = calls[1:]
        if any(c["new_tokens"] != 1 for c in later):
            raise AssertionError(f"{where}: after the prefill every call must feed ONE new token, got lengths "
                                 f"{[c['new_tokens'] for c in later][:5]}...: the loop re-feeds the sequence")
        if not all(c["cache"] for c in later):
            raise AssertionError(f"{where}: calls after the prefill must pass past_key_values (the cache)")
        if len(calls) > max_new_tokens + 1:
            raise AssertionError(f"{where}: {len(calls)} forward calls for {max_new_tokens} tokens "
                                 f"(one prefill, then one call per new token)")
        if not torch.equal(got[:, : ids.shape[1]], ids):
            raise AssertionError(f"{where}: the returned ids must start with the prompt ids")
        if not torch.equal(got, expected):
            first = int((got != expected).any(0).nonzero()[0]) - ids.shape[1]
            raise AssertionError(f"{where}: tokens differ from generate from new token {first} on: extend "
                                 "attention_mask by one column per step (padding rows!) and keep positions growing")


def _measured_cache_bytes(config: LlamaConfig, seq_len: int, batch_size: int, dtype: torch.dtype) -> int:
    """Bytes of the key and value tensors in the cache ``transformers`` returns for a random model."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(dtype).eval()
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def check_kv_cache_size(fn: Callable, configs: Sequence[tuple] = CACHE_CONFIGS,
                        lengths: Sequence[tuple] = ((7, 2), (5, 1)),
                        dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16)) -> None:
    """``fn(config_dict, seq_len, batch_size, bytes_per_value)`` equals the real ``past_key_values`` bytes.

    One config has an explicit ``head_dim`` (not hidden_size // heads); for the
    others ``head_dim`` is removed from the dict, as in many published config.json files.
    """
    for layers, heads, kv_heads, hidden, head_dim in configs:
        config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                             head_dim=head_dim, max_position_embeddings=64)
        as_dict = config.to_dict()
        if head_dim is None:
            as_dict.pop("head_dim", None)
        d = head_dim or hidden // heads
        for seq_len, batch in lengths:
            for dtype in dtypes:
                nbytes = torch.tensor([], dtype=dtype).element_size()
                measured = _measured_cache_bytes(config, seq_len, batch, dtype)
                got = fn(dict(as_dict), seq_len, batch, nbytes)
                if got == measured:
                    continue
                where = (f"{layers} layers, {heads} heads, {kv_heads} KV heads, head_dim {d}, seq {seq_len}, "
                         f"batch {batch}, {nbytes} B/value: got {got}, cache holds {measured}")
                if got == measured * heads // kv_heads:
                    raise AssertionError(f"{where}: use num_key_value_heads, not num_attention_heads")
                if 2 * got == measured:
                    raise AssertionError(f"{where}: the factor 2 is missing (keys AND values are stored)")
                if head_dim is not None and got == measured * (hidden // heads) // head_dim:
                    raise AssertionError(f"{where}: use config['head_dim'] when the config gives it")
                raise AssertionError(f"{where}: 2 x layers x kv_heads x head_dim x seq x batch x bytes")
