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


# --- bitsandbytes' fused 4-bit CPU kernel: the layer-size rule and the switch ---------------


def _llama(intermediate_size: int, hidden: int = 64, heads: int = 4, kv_heads: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=intermediate_size, num_hidden_layers=1,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _linear4bit(out_features: int, in_features: int = 64):
    import bitsandbytes as bnb

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(out_features, in_features) / 8, requires_grad=False,
                                     quant_type="nf4", compress_statistics=True)
    return layer.to("cpu")


def test_every_layer_the_cpu_labs_quantize_fits_the_packed_path():
    """The tiny model (labs 07 and 08) and lab 08's one-layer timing satisfy the 32-row rule."""
    import inspect

    from transformers import LlamaConfig, LlamaForCausalLM

    from ftlab import experiments, tiny

    c = tiny.TinyConfig()
    config = LlamaConfig(vocab_size=64, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=1, num_attention_heads=c.num_attention_heads,
                         num_key_value_heads=c.num_key_value_heads)
    assert quant.packed_cpu_violations(LlamaForCausalLM(config)) == []
    d_out = inspect.signature(experiments.linear4bit_seconds).parameters["d_out"].default
    assert d_out % quant.PACKED_CPU_BLOCK_N == 0


def test_rule_names_the_layer_its_size_and_the_rule():
    model = _llama(intermediate_size=88)  # 88 = 2.75 x 32, like the old tiny model's 688
    bad = quant.packed_cpu_violations(model)
    assert [name.rsplit(".", 1)[-1] for name, _ in bad] == ["gate_proj", "up_proj"] and {s for _, s in bad} == {88}
    with pytest.raises(ValueError, match=r"gate_proj.*out_features=88.*multiple of 32"):
        quant.check_packed_cpu_rule(model)
    quant.check_packed_cpu_rule(_llama(intermediate_size=96))  # 3 x 32: fine


def test_rule_is_bitsandbytes_own_constraint():
    """Our rule accepts exactly the sizes bitsandbytes' repacking accepts (runs on any CPU)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    for out_features in (88, 96):
        layer = _linear4bit(out_features)
        ours = out_features % quant.PACKED_CPU_BLOCK_N == 0
        try:
            _convert_weight_packed_for_cpu(layer.weight.data, layer.weight.quant_state)
            theirs = True
        except AssertionError:
            theirs = False
        assert ours == theirs, out_features


@pytest.mark.skipif(not quant.cpu_has_fused_4bit(), reason="this CPU has no AVX-512 BF16: bitsandbytes never repacks")
def test_fused_path_on_this_cpu():
    """Forced on: right answer in bf16 precision, and a clear error for a bad size; off: nothing repacked."""
    import bitsandbytes as bnb

    x = torch.randn(8, 64)
    fused, plain = _linear4bit(96), _linear4bit(96)
    fused.support_avx512bf16_for_cpu, plain.support_avx512bf16_for_cpu = True, False
    with torch.no_grad():
        y_fused, y_plain = fused.eval()(x).float(), plain.eval()(x).float()
    assert fused.weight.quant_state.packing_format_for_cpu and not getattr(plain.weight.quant_state, "packing_format_for_cpu", False)
    assert ((y_fused - y_plain).norm() / y_plain.norm()).item() < 0.02  # bf16 compute
    model = torch.nn.Sequential(_linear4bit(88))
    assert isinstance(model[0], bnb.nn.Linear4bit)
    with pytest.raises(ValueError, match="out_features=88"):
        quant.set_fused_cpu_kernel(model, True)
    # switching off restores the standard layout of an already repacked layer; training works again
    quant.set_fused_cpu_kernel(torch.nn.Sequential(fused), False)
    assert not fused.weight.quant_state.packing_format_for_cpu
    x_grad = x.clone().requires_grad_(True)
    fused.train()(x_grad).sum().backward()
    assert x_grad.grad is not None and x_grad.grad.abs().sum() > 0


def test_course_loader_turns_the_fused_path_off(monkeypatch):
    """Every CPU computes the same way: no Linear4bit of a loaded model may take the fused path."""
    model = torch.nn.Sequential(_linear4bit(96), _linear4bit(64))
    for layer in model:
        layer.support_avx512bf16_for_cpu = True
    assert quant.set_fused_cpu_kernel(model, False) == 2
    assert not any(layer.support_avx512bf16_for_cpu for layer in model)
    monkeypatch.setattr(quant, "cpu_has_fused_4bit", lambda: False)
    quant.set_fused_cpu_kernel(model, True)  # asked for, but the CPU lacks it: stays off
    assert not any(layer.support_avx512bf16_for_cpu for layer in model)


def test_time_4bit_paths_reports_every_part_and_restores_the_layer():
    layer = _linear4bit(96)
    layer.support_avx512bf16_for_cpu, dtype = True, layer.compute_dtype
    times = quant.time_4bit_paths(layer, torch.randn(16, 64), repeats=1)
    assert set(times) == {"fp32 nn.Linear", "dequantize only", "bf16 matmul only",
                          "Linear4bit, compute fp32", "Linear4bit, compute bf16"}
    assert all(t > 0 for t in times.values())
    assert layer.support_avx512bf16_for_cpu and layer.compute_dtype == dtype
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)  # timed the standard path
