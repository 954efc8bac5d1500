"""From-scratch Llama blocks (ftlab.anatomy) against transformers' Llama modules."""

import math

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama import modeling_llama as hf

from ftlab import anatomy, tiny


def small_config(kv_heads=2, **overrides):
    fields = dict(vocab_size=61, hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=kv_heads, max_position_embeddings=64, rms_norm_eps=1e-5)
    fields.update(overrides)
    config = LlamaConfig(**fields)
    config._attn_implementation = "eager"
    return config


def randomize(module):
    """Random values everywhere (norm weights start at 1, which would hide a missing weight)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module.eval()


def additive_causal_mask(s):
    return torch.zeros(s, s).masked_fill(~anatomy.causal_mask(s), float("-inf"))[None, None]


@pytest.fixture
def config():
    return small_config()


def test_rms_norm_matches_llama(config):
    norm = randomize(hf.LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps))
    x = torch.randn(2, 5, config.hidden_size)
    assert_close(anatomy.rms_norm(x, norm.weight, config.rms_norm_eps), norm(x))


def test_layer_norm_matches_torch_and_equals_rms_norm_on_centred_input():
    ln = randomize(torch.nn.LayerNorm(16))
    x = torch.randn(3, 16)
    assert_close(anatomy.layer_norm(x, ln.weight, ln.bias), ln(x))
    centred = x - x.mean(-1, keepdim=True)
    ones, zeros = torch.ones(16), torch.zeros(16)
    assert_close(anatomy.rms_norm(centred, ones, 0.0), anatomy.layer_norm(centred, ones, zeros, 0.0))


def test_mlps_match_and_have_matched_parameter_counts(config):
    mlp = randomize(hf.LlamaMLP(config))
    x = torch.randn(2, 5, config.hidden_size)
    assert_close(anatomy.swiglu_mlp(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight), mlp(x))
    h = 48
    gelu = torch.nn.Sequential(torch.nn.Linear(h, 4 * h, bias=False), torch.nn.GELU(), torch.nn.Linear(4 * h, h, bias=False))
    x = torch.randn(3, h)
    assert_close(anatomy.gelu_mlp(x, gelu[0].weight, gelu[2].weight), gelu(x))
    swiglu = hf.LlamaMLP(LlamaConfig(hidden_size=h, intermediate_size=8 * h // 3, num_attention_heads=4))
    assert anatomy.count_parameters(gelu) == anatomy.count_parameters(swiglu) == 8 * h * h


def test_rope_matches_llama_rotary_embedding(config):
    head_dim = config.hidden_size // config.num_attention_heads
    positions = torch.arange(7)
    q = torch.randn(1, config.num_attention_heads, 7, head_dim)
    k = torch.randn(1, config.num_key_value_heads, 7, head_dim)
    cos_ref, sin_ref = hf.LlamaRotaryEmbedding(config)(q, positions[None])
    cos, sin = anatomy.rope_cos_sin(positions, head_dim, config.rope_parameters["rope_theta"])
    assert_close(cos, cos_ref[0])
    assert_close(sin, sin_ref[0])
    q_ref, k_ref = hf.apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    assert_close(anatomy.apply_rope(q, cos, sin), q_ref)
    assert_close(anatomy.apply_rope(k, cos, sin), k_ref)


def test_rope_score_depends_only_on_relative_distance():
    torch.manual_seed(0)
    q, k = torch.randn(2, 64, dtype=torch.float64)

    def score(m, n):
        cos, sin = anatomy.rope_cos_sin(torch.tensor([m, n]), 64, dtype=torch.float64)
        return float(anatomy.apply_rope(q, cos[0], sin[0]) @ anatomy.apply_rope(k, cos[1], sin[1]))

    same_offset = [score(m + 3, m) for m in (0, 17, 1000, 12345)]
    assert max(same_offset) - min(same_offset) < 1e-9
    assert abs(score(3, 0) - score(9, 0)) > 1e-3  # a different distance changes the score
    assert_close(score(0, 0), float(q @ k))  # distance 0 is the plain dot product


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_self_attention_matches_llama_attention(kv_heads):
    config = small_config(kv_heads)
    attn = randomize(hf.LlamaAttention(config, layer_idx=0))
    s = 6
    x = torch.randn(2, s, config.hidden_size)
    cos, sin = hf.LlamaRotaryEmbedding(config)(x, torch.arange(s)[None])
    with torch.no_grad():
        reference, _ = attn(x, position_embeddings=(cos, sin), attention_mask=additive_causal_mask(s))
        ours, (keys, values) = anatomy.self_attention(
            x, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
            config.num_attention_heads, kv_heads, cos[0], sin[0])
    assert_close(ours, reference)
    assert keys.shape == values.shape == (2, kv_heads, s, config.hidden_size // config.num_attention_heads)


def test_decoder_layer_matches_llama_decoder_layer(config):
    layer = randomize(hf.LlamaDecoderLayer(config, layer_idx=0))
    s = 5
    x = torch.randn(1, s, config.hidden_size)
    cos, sin = hf.LlamaRotaryEmbedding(config)(x, torch.arange(s)[None])
    with torch.no_grad():
        reference = layer(x, attention_mask=additive_causal_mask(s), position_embeddings=(cos, sin))
        ours, _ = anatomy.decoder_layer(x, layer, config, cos[0], sin[0])
    assert_close(ours, reference)


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_llama_forward_matches_model_and_cache_matches_full_pass(model, config):
    ids = torch.randint(0, config.vocab_size, (2, 9))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        full, cache = anatomy.llama_forward(model, ids)
        assert_close(full, reference)
        head, cache = anatomy.llama_forward(model, ids[:, :6])
        tail, cache = anatomy.llama_forward(model, ids[:, 6:], cache)  # positions 6..8 reuse the cache
    assert_close(torch.cat([head, tail], dim=1), reference)
    assert cache[0][0].shape[2] == 9
    assert anatomy.cache_nbytes(cache) == anatomy.kv_cache_bytes_for(config, 9, batch_size=2, bytes_per_value=4)


def test_generate_greedy_with_and_without_cache_equals_generate(model):
    prompt = torch.tensor([[5, 7, 11]])
    eos = model.generation_config.eos_token_id
    cached = anatomy.generate_greedy(model, prompt, 12, use_cache=True, eos_token_id=eos)
    uncached = anatomy.generate_greedy(model, prompt, 12, use_cache=False, eos_token_id=eos)
    library = model.generate(prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, library)


@pytest.mark.parametrize("s_q,s_k", [(7, 7), (1, 9), (3, 10)])
def test_naive_and_tiled_attention_match_sdpa(s_q, s_k):
    q = torch.randn(2, 3, s_q, 8)
    k, v = torch.randn(2, 3, s_k, 8), torch.randn(2, 3, s_k, 8)
    mask = anatomy.causal_mask(s_q, s_k)  # the last s_q positions of s_k
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(anatomy.naive_attention(q, k, v), reference)
    assert_close(anatomy.tiled_attention(q, k, v, block_size=4), reference)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert_close(anatomy.tiled_attention(q, k, v, block_size=3, causal=False), full)


def test_causal_mask_shape_and_cache_row():
    assert anatomy.causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert anatomy.causal_mask(1, 4).tolist() == [[True, True, True, True]]  # a cached step sees everything


def test_kv_cache_formula_on_published_configs():
    llama2_7b = dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_size=4096)
    llama3_8b = dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096)
    assert anatomy.kv_cache_bytes_for(llama2_7b, 4096) == 2 * 1024**3  # 0.5 MiB per token in fp16
    assert anatomy.kv_cache_bytes_for(llama3_8b, 8192) == 1024**3
    assert anatomy.kv_cache_bytes(32, 8, 128, 2 * 1000) == 2 * anatomy.kv_cache_bytes(32, 8, 128, 1000)
    assert anatomy.attention_score_bytes(32, 2000) == 4 * anatomy.attention_score_bytes(32, 1000)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_transformers_cache_bytes_equal_formula(kv_heads):
    config = small_config(kv_heads)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        out = lm(input_ids=torch.randint(0, 61, (3, 10)), use_cache=True)
    assert anatomy.cache_nbytes(out.past_key_values) == anatomy.kv_cache_bytes(
        config.num_hidden_layers, kv_heads, config.hidden_size // config.num_attention_heads, 10,
        batch_size=3, bytes_per_value=4)


def test_count_parameters_excludes_tied_embeddings():
    config = small_config(tie_word_embeddings=True)
    lm = LlamaForCausalLM(config)
    total = anatomy.count_parameters(lm)
    assert total == sum(p.numel() for p in lm.parameters())
    assert anatomy.count_parameters(lm, exclude_embeddings=True) == total - config.vocab_size * config.hidden_size


def test_fit_power_law_recovers_exponent():
    sizes = [1e3, 1e4, 1e5, 1e6]
    law = anatomy.fit_power_law(sizes, [5.0 * n ** -0.2 for n in sizes])
    assert math.isclose(law.alpha, 0.2, rel_tol=1e-9) and math.isclose(law.a, 5.0, rel_tol=1e-9)
    assert law.r_squared > 0.999999
    with_offset = anatomy.fit_power_law(sizes, [1.5 + 3.0 * n ** -0.3 for n in sizes], offset=1.5)
    assert math.isclose(with_offset.alpha, 0.3, rel_tol=1e-9)
    assert math.isclose(with_offset(1e4), 1.5 + 3.0 * 1e4 ** -0.3, rel_tol=1e-9)
    with pytest.raises(ValueError, match="offset"):
        anatomy.fit_power_law(sizes, [2.0, 1.9, 1.8, 1.7], offset=1.8)
    with pytest.raises(ValueError, match="two"):
        anatomy.fit_power_law([10], [1.0])


def test_peak_memory_sees_the_score_matrix():
    q = k = v = torch.randn(1, 2, 128, 16)
    naive = anatomy.peak_memory_bytes(lambda: anatomy.naive_attention(q, k, v))
    assert naive >= anatomy.attention_score_bytes(2, 128, bytes_per_value=4)
    tiled = anatomy.peak_memory_bytes(lambda: anatomy.tiled_attention(q, k, v, block_size=16))
    assert tiled < naive / 2


def test_scaling_config_and_a_tiny_sweep_point(tmp_path):
    base = tiny.TinyConfig(num_hidden_layers=1, seq_len=16, batch_size=2, steps=3, warmup_steps=1)
    config = anatomy.scaling_config(64, base)
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (64, 4, 168)
    texts = ["오늘은 날씨가 맑아서 공원에 갔습니다.", "Spring comes after winter."] * 30
    tokenizer = tiny.train_tokenizer(texts, 300)
    stream = [t for ids in tokenizer(texts)["input_ids"] for t in ids + [tokenizer.eos_token_id]]
    result = anatomy.train_and_evaluate(anatomy.scaling_config(16, base), tokenizer, stream, stream[:64])
    assert result["tokens_seen"] == 3 * 2 * 16
    assert 0 < result["heldout_loss"] < 20
    assert result["non_embedding_parameters"] < result["parameters"]
    with pytest.raises(ValueError, match="shorter than one window"):
        anatomy.heldout_loss(None, [1, 2, 3], seq_len=16)


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with anatomy.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with anatomy.torch_threads(None):
        assert torch.get_num_threads() == before
