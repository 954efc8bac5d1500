"""ftlab.quant: absmax and block-wise quantization, NF4, double quantization, byte counts."""

import math

import pytest
import torch

from ftlab import quant


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(0)
    return torch.randn(128, 192) * 0.02  # (d_out, d_in), normal like trained weights


def test_representable_values_is_two_to_the_bits():
    assert [quant.representable_values(b) for b in (1, 4, 8, 16)] == [2, 16, 256, 65536]
    assert quant.representable_values(32) == 4_294_967_296  # "약 43억 개"


def test_absmax_roundtrip_error_is_at_most_half_a_step(weights):
    for bits in (8, 4):
        codes, absmax = quant.absmax_quantize(weights, bits)
        qmax = quant.int_qmax(bits)
        assert codes.abs().max().item() == qmax  # the largest |w| uses the top code
        error = quant.quant_error(weights, quant.absmax_dequantize(codes, absmax, bits))
        assert error["max_abs"] <= absmax.item() / qmax / 2 + 1e-7
    assert quant.int_qmax(8) == 127 and quant.int_qmax(4) == 7
    with pytest.raises(ValueError):
        quant.int_qmax(1)


def test_nf4_codebook_matches_bitsandbytes():
    import bitsandbytes.functional as F

    code = quant.nf4_codebook()
    assert code.shape == (16,) and code[0] == -1 and code[-1] == 1 and (code == 0).sum() == 1
    torch.testing.assert_close(code, F.get_4bit_type("nf4", device="cpu"), atol=1e-6, rtol=0)
    assert quant.NF4_OFFSET == pytest.approx(0.9677083, abs=1e-7)


def test_blockwise_nf4_reproduces_bitsandbytes(weights):
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(weights, blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = quant.blockwise_dequantize(quant.blockwise_quantize(weights, 4, 64, quant.nf4_codebook()))
    torch.testing.assert_close(ours, F.dequantize_4bit(packed, state), atol=1e-7, rtol=0)


def test_blockwise_handles_padding_and_shapes():
    x = torch.arange(100, dtype=torch.float32).view(10, 10) - 50
    q = quant.blockwise_quantize(x, bits=8, blocksize=64)
    assert q.codes.shape == (2, 64) and q.absmax.shape == (2,)
    back = quant.blockwise_dequantize(q)
    assert back.shape == x.shape
    assert quant.quant_error(x, back)["max_abs"] <= q.absmax.max().item() / 127 / 2 + 1e-6


def test_blockwise_beats_tensorwise_with_an_outlier(weights):
    x = weights.clone()
    x[0, 0] = 1.0  # one outlier, 50 standard deviations out
    rest = torch.ones_like(x, dtype=torch.bool)
    rest[0, 0] = False
    codes, absmax = quant.absmax_quantize(x, 8)
    tensorwise = quant.quant_error(x[rest], quant.absmax_dequantize(codes, absmax, 8)[rest])["mse"]
    blockwise = quant.quant_error(x[rest], quant.blockwise_dequantize(quant.blockwise_quantize(x, 8, 64))[rest])["mse"]
    assert blockwise * 10 < tensorwise


def test_nf4_beats_int4_on_normal_weights(weights):
    int4 = quant.blockwise_dequantize(quant.blockwise_quantize(weights, 4, 64))
    nf4 = quant.blockwise_dequantize(quant.blockwise_quantize(weights, 4, 64, quant.nf4_codebook()))
    assert quant.quant_error(weights, nf4)["mse"] < quant.quant_error(weights, int4)["mse"]


def test_double_quantization_adds_little_error(weights):
    q = quant.blockwise_quantize(weights, 4, 64, quant.nf4_codebook())
    dq = quant.double_quantize(q.absmax)
    assert dq.shape == q.absmax.shape
    plain = quant.quant_error(weights, quant.blockwise_dequantize(q))["mse"]
    double = quant.quant_error(weights, quant.blockwise_dequantize(q, dq))["mse"]
    assert double < 1.01 * plain


def test_bits_per_param():
    from ftlab import memory

    assert quant.bits_per_param() == 4.5
    assert quant.bits_per_param(double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert quant.bits_per_param(double_quant=True) == pytest.approx(memory.NF4_DQ_BITS)
    assert quant.bits_per_param(bits=8, blocksize=256) == 8.125


@pytest.fixture(scope="module")
def four_bit_model(tmp_path_factory):
    """A random tiny Llama saved and reloaded in 4 bits through from_pretrained."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_config, device_map="cpu")


def test_weight_bytes_of_a_4bit_model(four_bit_model):
    import bitsandbytes as bnb

    linears = [m for m in four_bit_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    n = sum(math.prod(m.weight.quant_state.shape) for m in linears)
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down in each layer; lm_head stays
    counted = quant.weight_bytes(four_bit_model)
    assert counted["quantized_params"] == n
    predicted = n * quant.bits_per_param(double_quant=True) / 8
    overhead = len(linears) * (16 + 256 + 1) * 4  # per-layer code books and offset (fp32)
    assert predicted <= counted["quantized"] <= predicted + overhead + len(linears) * 8
    # get_memory_footprint() counts the packed codes but not the quantization state
    assert four_bit_model.get_memory_footprint() < counted["total"]
    assert quant.linear4bit_nbytes(linears[0])["codes"] == math.ceil(linears[0].weight.quant_state.shape.numel() / 2)
