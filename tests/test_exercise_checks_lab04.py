"""Lab 04 exercise checks: the reference solutions pass, plausible wrong answers are rejected."""

from collections import Counter

import pytest
import torch

from ftlab.checks import lab04

# --- reference solutions (the same code as solutions/04_tokenizer_and_pretraining.ipynb) ----------


def _merge_word(symbols, pair):
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_bpe(corpus, num_merges, min_frequency=2):
    words = Counter(word for line in corpus for word in line.split())
    splits = {word: list(word) for word in words}
    ids = {ch: i for i, ch in enumerate(sorted({ch for word in words for ch in word}))}
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(splits[word], splits[word][1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], ids[p[0]], ids[p[1]]))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        ids.setdefault(best[0] + best[1], len(ids))
        splits = {word: _merge_word(symbols, best) for word, symbols in splits.items()}
    return merges


def causal_lm_loss(logits, labels):
    vocab = logits.shape[-1]
    shift_logits = logits[:, :-1].reshape(-1, vocab).float()
    shift_labels = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


# --- wrong variants ---------------------------------------------------------------------------------


def bpe_first_pair_found(corpus, num_merges, min_frequency=2):
    words = Counter(word for line in corpus for word in line.split())
    splits = {word: list(word) for word in words}
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(splits[word], splits[word][1:]):
                pairs[pair] += n
        frequent = [p for p in pairs if pairs[p] >= min_frequency]
        if not frequent:
            break
        merges.append(frequent[0])
        splits = {word: _merge_word(symbols, frequent[0]) for word, symbols in splits.items()}
    return merges


def bpe_across_word_boundaries(corpus, num_merges, min_frequency=2):
    return train_bpe(["".join(line.split()) for line in corpus], num_merges, min_frequency)


def bpe_string_tie_break(corpus, num_merges, min_frequency=2):  # ties by the merged string, not by ids
    words = Counter(word for line in corpus for word in line.split())
    splits = {word: list(word) for word in words}
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(splits[word], splits[word][1:]):
                pairs[pair] += n
        if not pairs or max(pairs.values()) < min_frequency:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        splits = {word: _merge_word(symbols, best) for word, symbols in splits.items()}
    return merges


def loss_unshifted(logits, labels):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def loss_mean_over_all_positions(logits, labels):
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                  labels[:, 1:].reshape(-1), reduction="none")
    return per_token.mean()  # the -100 positions count as zeros


def loss_pad_as_label(logits, labels):
    return causal_lm_loss(logits, labels.clamp(min=0))


# --- tests ------------------------------------------------------------------------------------------


def test_bpe_reference_passes():
    lab04.check_bpe_merges(train_bpe, seed=0)
    lab04.check_bpe_merges(train_bpe, seed=11, n_corpora=10)


@pytest.mark.parametrize("wrong, hint", [(bpe_first_pair_found, "MOST frequent"),
                                         (bpe_across_word_boundaries, "within words"),
                                         (bpe_string_tie_break, "ties")])
def test_bpe_rejects(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab04.check_bpe_merges(wrong, seed=0)


def test_toy_corpus_merges_are_what_the_lab_prints():
    merges = lab04.tokenizers_bpe_merges(lab04.TOY_CORPUS)
    assert merges[:4] == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w")]


def test_causal_lm_loss_reference_passes():
    lab04.check_causal_lm_loss(causal_lm_loss, seed=0)
    lab04.check_causal_lm_loss(causal_lm_loss, seed=20, n_batches=3)


@pytest.mark.parametrize("wrong, hint", [(loss_unshifted, "t\\+1"), (loss_mean_over_all_positions, "labelled positions"),
                                         (loss_pad_as_label, "ignore_index")])
def test_causal_lm_loss_rejects(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lab04.check_causal_lm_loss(wrong, seed=0)
