"""Lab 00 exercise checks: the reference answers pass, plausible wrong answers fail."""

import pytest

from ftlab import tiny
from ftlab.checks import lab00


def count_llama_parameters(config, *, tied_mode="config", kv="gqa", norms=True):
    h, inter = config.hidden_size, config.intermediate_size
    head_dim = h // config.num_attention_heads
    kv_heads = config.num_key_value_heads if kv == "gqa" else config.num_attention_heads
    attention = 2 * h * config.num_attention_heads * head_dim + 2 * h * kv_heads * head_dim
    per_layer = attention + 3 * h * inter + (2 * h if norms else 0)
    tied = config.tie_word_embeddings if tied_mode == "config" else tied_mode == "always"
    lm_head = 0 if tied else config.vocab_size * h
    return config.vocab_size * h + config.num_hidden_layers * per_layer + (h if norms else 0) + lm_head


def test_reference_passes():
    lab00.check_count_llama_parameters(count_llama_parameters)


@pytest.mark.parametrize("kwargs", [
    {"tied_mode": "always"},  # assumes tied embeddings whatever the config says
    {"tied_mode": "never"},  # counts lm_head twice for a tied model
    {"kv": "mha"},  # k/v projections as large as q (ignores GQA)
    {"norms": False},  # forgets the RMSNorm weights
])
def test_wrong_parameter_counts_fail(kwargs):
    with pytest.raises(AssertionError):
        lab00.check_count_llama_parameters(lambda c: count_llama_parameters(c, **kwargs))


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.load_tokenizer()


def share(tokenizer, messages):
    enc = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    return sum(enc["assistant_masks"]) / len(enc["input_ids"])


def test_assistant_share_reference_and_wrong_variants(tokenizer):
    lab00.check_assistant_token_share(share, tokenizer)

    def answer_over_content(tok, messages):  # divides by the message text's tokens, not the conversation's
        enc = tok.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
        content = sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)
        return sum(enc["assistant_masks"]) / content

    def question_share(tok, messages):  # the complement
        return 1 - share(tok, messages)

    for wrong in (answer_over_content, question_share):
        with pytest.raises(AssertionError):
            lab00.check_assistant_token_share(wrong, tokenizer)


def test_unseen_sentences_are_not_in_the_pretraining_corpus():
    corpus = "\n".join(str(doc) for _, doc in tiny.load_documents(tiny.corpus_files()))
    assert len(lab00.UNSEEN_SENTENCES) >= 6
    for sentence in lab00.UNSEEN_SENTENCES:
        assert sentence not in corpus
        assert sentence[:12] not in corpus, f"the start of {sentence!r} occurs in the corpus"
