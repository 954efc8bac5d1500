"""Checks for lab 04 (tokenizer and pretraining): BPE merges and the causal-LM loss.

- :func:`check_bpe_merges`: the learner's BPE training loop must learn exactly the
  merges of ``tokenizers.trainers.BpeTrainer`` on the same corpus (toy and random corpora).
- :func:`check_causal_lm_loss`: the learner's shifted cross-entropy must equal the
  ``loss`` that ``transformers.LlamaForCausalLM`` computes from ``labels`` (padding and
  prompt positions set to -100).

How ``BpeTrainer`` breaks ties (tokenizers ``src/models/bpe/trainer.rs``, ``impl Ord for
Merge``): among pairs with the same count it takes the pair with the smallest
``(left id, right id)``. Ids are given to the characters first, in Unicode order
(``compute_alphabet`` sorts them), then to each merged token in the order it is created.
"""

from __future__ import annotations

import json
import random
from collections import Counter

TOY_CORPUS = [
    "low low low low low lower lower newest newest newest newest newest newest widest widest widest",
    "학교 학교 학교에 학교에서 학생 학생 학생이 학년",
]
IGNORE_INDEX = -100


def _fail(message: str) -> None:
    raise AssertionError(message)


# ---------------------------------------------------------------------------
# BPE
# ---------------------------------------------------------------------------


def tokenizers_bpe_merges(corpus: list[str], min_frequency: int = 2, vocab_size: int = 1_000_000) -> list[tuple[str, str]]:
    """Merges ``tokenizers``' BpeTrainer learns from ``corpus`` split on whitespace only.

    Character-level (no byte-level alphabet, no special tokens, no subword prefix or
    suffix); training stops at ``vocab_size`` or when no pair occurs ``min_frequency`` times.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[],
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return [tuple(merge) for merge in json.loads(tokenizer.to_str())["model"]["merges"]]


def random_corpus(rng: random.Random) -> list[str]:
    """A few lines of random "words" over a small alphabet of Latin letters and Hangul syllables."""
    letters = rng.sample(list("abcdeg가나다라학교"), rng.randint(3, 6))
    return [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(5, 30)))
            for _ in range(rng.randint(1, 3))]


def _pair_counts(corpus: list[str], merges: list[tuple[str, str]]) -> Counter:
    """Pair counts inside words after applying ``merges`` (used to explain a mismatch)."""
    words = Counter(word for line in corpus for word in line.split())
    counts: Counter = Counter()
    for word, n in words.items():
        symbols = list(word)
        for left, right in merges:
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == (left, right):
                    out.append(left + right)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += n
    return counts


def _compare_merges(corpus, got, want, num_merges) -> None:
    got = [tuple(pair) for pair in got]
    if got == want:
        return
    where = f"corpus {corpus[0][:40]!r}..., {num_merges} merges"
    for step, (g, w) in enumerate(zip(got, want)):
        if g != w:
            counts = _pair_counts(corpus, want[:step])
            if counts[g] == 0:
                hint = f"{g} never occurs inside one word: count pairs within words only, never across a space"
            elif counts[g] < counts[w]:
                hint = f"{g} occurs {counts[g]} times but {w} occurs {counts[w]} times: merge the MOST frequent pair"
            else:
                hint = (f"{g} and {w} both occur {counts[w]} times: break ties like tokenizers, by the smallest "
                        "(left id, right id), characters numbered in Unicode order, merged tokens after them in creation order")
            _fail(f"{where}: merge {step + 1} is {g}, tokenizers' BpeTrainer learns {w}. Hint: {hint}.")
    _fail(f"{where}: {len(got)} merges, tokenizers' BpeTrainer learns {len(want)}. Hint: stop after num_merges merges, "
          "or earlier when the most frequent pair occurs fewer than min_frequency times.")


def check_bpe_merges(train_bpe, seed: int = 0, n_corpora: int = 6) -> None:
    """``train_bpe(corpus, num_merges, min_frequency)`` must return tokenizers' merges, in order."""
    rng = random.Random(seed)
    corpora = [TOY_CORPUS] + [random_corpus(rng) for _ in range(n_corpora)]
    for corpus in corpora:
        min_frequency = rng.choice([2, 2, 3])
        want = tokenizers_bpe_merges(corpus, min_frequency)
        partial = rng.randint(1, max(1, len(want)))
        _compare_merges(corpus, train_bpe(corpus, partial, min_frequency), want[:partial], partial)
        _compare_merges(corpus, train_bpe(corpus, len(want) + 5, min_frequency), want, len(want) + 5)


# ---------------------------------------------------------------------------
# Causal-LM loss
# ---------------------------------------------------------------------------


def random_lm_batch(seed: int):
    """A small random ``LlamaForCausalLM`` and a right-padded batch whose labels are -100 on
    padding and on a random prompt prefix of each row: ``(model, input_ids, attention_mask, labels)``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rng = random.Random(seed)
    torch.manual_seed(seed)
    vocab = rng.choice([50, 97, 128])
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    batch, width = rng.randint(2, 4), rng.randint(6, 12)
    input_ids = torch.randint(1, vocab, (batch, width))
    attention_mask = torch.ones(batch, width, dtype=torch.long)
    labels = input_ids.clone()
    for row in range(batch):
        length = rng.randint(3, width)
        attention_mask[row, length:] = 0
        input_ids[row, length:] = 0  # pad id
        labels[row, length:] = IGNORE_INDEX
        labels[row, : rng.randint(0, length - 2)] = IGNORE_INDEX  # the prompt is not scored
    return model, input_ids, attention_mask, labels


def check_causal_lm_loss(causal_lm_loss, seed: int = 0, n_batches: int = 4) -> None:
    """``causal_lm_loss(logits, labels)`` must equal ``LlamaForCausalLM(..., labels=labels).loss``."""
    import torch

    for i in range(n_batches):
        model, input_ids, attention_mask, labels = random_lm_batch(seed + i)
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        got = causal_lm_loss(out.logits, labels)
        if not torch.is_tensor(got) or got.ndim != 0:
            _fail(f"expected a scalar tensor, got {type(got).__name__} {getattr(got, 'shape', '')}")
        if torch.allclose(got, out.loss, atol=1e-5):
            continue
        vocab = out.logits.shape[-1]
        unshifted = torch.nn.functional.cross_entropy(out.logits.reshape(-1, vocab), labels.reshape(-1))
        per_token = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1),
                                                      reduction="none")
        if torch.allclose(got, unshifted, atol=1e-5):
            hint = "the logits at position t predict the token at t+1: compare logits[:, :-1] with labels[:, 1:]"
        elif torch.allclose(got, per_token.mean(), atol=1e-5):
            hint = "average over the labelled positions only; positions with label -100 count neither in the sum nor in the count"
        else:
            hint = "shift (logits[:, :-1] vs labels[:, 1:]), flatten to (tokens, vocab), cross-entropy with ignore_index=-100"
        _fail(f"batch {tuple(labels.shape)}, {int((labels[:, 1:] != IGNORE_INDEX).sum())} labelled next tokens: "
              f"got {got.item():.5f}, the model's loss is {out.loss.item():.5f}. Hint: {hint}.")
