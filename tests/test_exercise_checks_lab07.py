"""Lab 07 exercise checks: the reference answers pass, plausible wrong answers fail."""

import pytest
import torch

from ftlab import quant
from ftlab.checks import lab07

CODE = quant.nf4_codebook()


def absmax_quantize(x):
    absmax = x.abs().max()
    return torch.round(x / absmax * 127).to(torch.int8), absmax


def absmax_dequantize(codes, absmax):
    return codes.float() / 127 * absmax


def nf4_roundtrip(x, code, blocksize=64):
    blocks = x.view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    index = (blocks / absmax)[..., None].sub(code).abs().argmin(dim=-1)
    return (code[index] * absmax).view(-1)


def nf4_quantize_packed(x, code, blocksize=64, *, per_block=True, order="high_first", nearest="value"):
    blocks = x.view(-1, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1) if per_block else x.abs().max().expand(blocks.shape[0])
    scaled = blocks / absmax[:, None]
    if nearest == "value":
        codes = (scaled[..., None] - code).abs().argmin(dim=-1)
    else:  # rounding on an evenly spaced index grid, as if the code book were uniform
        codes = torch.round((scaled + 1) / 2 * 15)
    codes = codes.to(torch.uint8).view(-1, 2)
    first, second = (codes[:, 0], codes[:, 1]) if order == "high_first" else (codes[:, 1], codes[:, 0])
    return (first << 4) | second, absmax.contiguous()


def double_quant_bits(blocksize):
    return 4 + 8 / blocksize + 32 / (blocksize * 256)


def test_references_pass():
    lab07.check_absmax_int8(absmax_quantize, absmax_dequantize)
    lab07.check_absmax_int8(quant.absmax_quantize, quant.absmax_dequantize)
    lab07.check_nf4_roundtrip(nf4_roundtrip, CODE)
    lab07.check_nf4_packed(nf4_quantize_packed, CODE)
    lab07.check_double_quant_bits(double_quant_bits)
    lab07.check_double_quant_bits(lambda b: quant.bits_per_param(4, b, double_quant=True))


@pytest.mark.parametrize("quantize", [
    lambda x: (torch.round(x / x.max() * 127).clamp(-127, 127).to(torch.int8), x.max()),  # max, not |max|
    lambda x: ((x / x.abs().max() * 127).to(torch.int8), x.abs().max()),  # truncation
    lambda x: (torch.round(x / x.abs().max() * 128).clamp(-128, 127).to(torch.int8), x.abs().max()),  # 128
])
def test_absmax_wrong_variants_fail(quantize):
    with pytest.raises(AssertionError):
        lab07.check_absmax_int8(quantize, absmax_dequantize)


def test_absmax_wrong_dequantize_fails():
    with pytest.raises(AssertionError):
        lab07.check_absmax_int8(absmax_quantize, lambda c, a: c.float() / 128 * a)


@pytest.mark.parametrize("kwargs, hint", [
    ({"order": "low_first"}, "nibble order"),
    ({"per_block": False}, "absmax"),
    ({"nearest": "index"}, "nearest"),
])
def test_nf4_packed_wrong_variants_fail(kwargs, hint):
    with pytest.raises(AssertionError, match=hint):
        lab07.check_nf4_packed(lambda x, c, b: nf4_quantize_packed(x, c, b, **kwargs), CODE)


def test_nf4_roundtrip_wrong_variants_fail():
    whole_tensor = lambda x, c, b: c[(x / x.abs().max())[..., None].sub(c).abs().argmin(-1)] * x.abs().max()
    int_grid = lambda x, c, b: (lambda bl, a: (torch.round(bl / a * 7) / 7 * a).view(-1))(
        x.view(-1, b), x.view(-1, b).abs().amax(1, keepdim=True))
    for wrong in (whole_tensor, int_grid):
        with pytest.raises(AssertionError):
            lab07.check_nf4_roundtrip(wrong, CODE)


@pytest.mark.parametrize("wrong", [
    lambda b: 4 + 8 / b,  # forgets the second-level fp32 constants
    lambda b: 4 + 32 / b,  # no double quantization at all
    lambda b: 4 + 8 / b + 32 / 256,  # second-level scale per 256 absmax counted per weight, not per 256 blocks
])
def test_double_quant_bits_wrong_variants_fail(wrong):
    with pytest.raises(AssertionError):
        lab07.check_double_quant_bits(wrong)


def test_stored_bits_match_the_qlora_arithmetic():
    assert lab07.stored_bits_per_param(64, double_quant=False) == 4.5
    assert abs(lab07.stored_bits_per_param(64, double_quant=True) - (4 + 8 / 64 + 32 / (64 * 256))) < 1e-12
