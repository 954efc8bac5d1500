"""Checks for lab 07 (quantization and NF4), compared with torch and bitsandbytes on CPU.

- ``check_absmax_int8``: against ``torch.fake_quantize_per_tensor_affine`` (int8, scale absmax/127);
- ``check_nf4_roundtrip``: against bitsandbytes ``quantize_4bit`` / ``dequantize_4bit``;
- ``check_nf4_packed``: codes, block absmax and packed bytes against ``quantize_4bit``;
- ``check_double_quant_bits``: against the bytes bitsandbytes really stores with
  ``compress_statistics=True``.
"""

from __future__ import annotations

from typing import Callable

import torch

# (rows, cols, seed) of the test tensors: several shapes, none chosen by the learner
_SHAPES = ((8, 64, 1), (16, 128, 2), (4, 256, 3))


def _normal(rows: int, cols: int, seed: int, std: float = 0.02) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=generator) * std  # (rows, cols)


def _bnb_nf4(x: torch.Tensor, blocksize: int, double_quant: bool = False):
    import bitsandbytes.functional as bnbF

    return bnbF.quantize_4bit(x.view(-1, blocksize), blocksize=blocksize, quant_type="nf4",
                              compress_statistics=double_quant)


def check_absmax_int8(quantize: Callable, dequantize: Callable) -> None:
    """``quantize(x) -> (codes int8, absmax)`` and ``dequantize(codes, absmax) -> x_hat`` match torch's qint8.

    The reference is torch's int8 fake quantization
    (``torch.fake_quantize_per_tensor_affine(x, absmax / 127, 0, -127, 127)``, the op
    quantization-aware training uses): symmetric codes in [-127, 127], round half to even.
    """
    for rows, cols, seed in _SHAPES:
        x = _normal(rows, cols, seed)
        x[0, 0] = -3 * x.abs().max()  # the absmax element is negative here: use |x|, not x.max()
        codes, absmax = quantize(x.clone())
        assert torch.is_tensor(codes) and codes.shape == x.shape, f"codes should have x's shape {tuple(x.shape)}"
        assert codes.dtype == torch.int8, f"codes should be torch.int8, got {codes.dtype}"
        expected_absmax = x.abs().max()
        assert torch.allclose(torch.as_tensor(absmax, dtype=torch.float32), expected_absmax), (
            f"absmax {float(absmax):.4g} != max |x| {expected_absmax:.4g}: take the largest absolute value")
        scale = (expected_absmax / 127).item()
        ref = torch.fake_quantize_per_tensor_affine(x, scale, 0, -127, 127)  # (rows, cols) dequantized qint8
        wrong = (codes.long() != torch.round(ref / scale).long()).sum().item()
        assert wrong == 0, (f"{wrong} codes differ from torch's int8 quantization: round(x / absmax * 127) "
                            "(round to nearest, do not truncate; 127, not 128)")
        x_hat = dequantize(codes, absmax)
        torch.testing.assert_close(x_hat.float(), ref, atol=1e-6, rtol=1e-5,
                                   msg="dequantize: codes / 127 * absmax")


def check_nf4_roundtrip(nf4_roundtrip: Callable, code: torch.Tensor) -> None:
    """``nf4_roundtrip(x, code, blocksize)`` equals bitsandbytes' dequantize(quantize(x)) for several block sizes."""
    import bitsandbytes.functional as bnbF

    for (rows, cols, seed), blocksize in zip(_SHAPES, (64, 128, 256)):
        x = _normal(rows, cols, seed).reshape(-1)  # (n,)
        packed, state = _bnb_nf4(x, blocksize)
        ref = bnbF.dequantize_4bit(packed, state).view(-1)
        mine = nf4_roundtrip(x.clone(), code, blocksize)
        assert mine.shape == x.shape, f"expected shape {tuple(x.shape)}, got {tuple(mine.shape)}"
        torch.testing.assert_close(mine.float(), ref, atol=1e-7, rtol=0,
                                   msg=f"blocksize {blocksize}: one absmax per block, nearest code value")


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' packed uint8 bytes back to 4-bit codes: the high nibble holds the earlier element."""
    flat = packed.reshape(-1)
    return torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1)  # (2 * n_bytes,)


def check_nf4_packed(nf4_quantize_packed: Callable, code: torch.Tensor) -> None:
    """``nf4_quantize_packed(x, code, blocksize) -> (packed uint8 (n/2,), absmax (n/blocksize,))``.

    Compared with ``bitsandbytes.functional.quantize_4bit(quant_type="nf4")``: the
    absmax per block, the 4-bit codes (unpacked from bitsandbytes' bytes) and the bytes.
    """
    for (rows, cols, seed), blocksize in zip(_SHAPES, (64, 64, 128)):
        x = _normal(rows, cols, seed).reshape(-1)  # (n,)
        x[blocksize + 3] = 0.5  # an outlier in the second block only
        packed_ref, state = _bnb_nf4(x, blocksize)
        packed, absmax = nf4_quantize_packed(x.clone(), code, blocksize)
        assert absmax.numel() == state.absmax.numel(), (
            f"{absmax.numel()} absmax values, expected {state.absmax.numel()}: one per block of {blocksize}")
        torch.testing.assert_close(absmax.reshape(-1).float(), state.absmax, atol=0, rtol=1e-6,
                                   msg="absmax differs: the largest |x| of each block")
        assert packed.dtype == torch.uint8 and packed.numel() == x.numel() // 2, (
            f"packed should be uint8 with {x.numel() // 2} bytes (two codes per byte), "
            f"got {packed.dtype} with {packed.numel()}")
        codes_ref = unpack_nibbles(packed_ref)
        mine = unpack_nibbles(packed.reshape(-1))
        if not torch.equal(mine, codes_ref):
            swapped = torch.stack([packed.reshape(-1) & 0x0F, packed.reshape(-1) >> 4], dim=1).reshape(-1)
            if torch.equal(swapped, codes_ref):
                raise AssertionError("codes are right but the nibble order is swapped: "
                                     "bitsandbytes puts the earlier element in the high 4 bits")
            wrong = (mine != codes_ref).sum().item()
            raise AssertionError(f"{wrong} of {x.numel()} codes differ from bitsandbytes: "
                                 "pick the index of the nearest code-book VALUE to x / absmax")
        assert torch.equal(packed.reshape(-1), packed_ref.reshape(-1)), "packed bytes differ"


def stored_bits_per_param(blocksize: int, double_quant: bool, n_blocks: int = 512) -> float:
    """Bits per weight that bitsandbytes really stores for NF4: packed codes + absmax (+ second-level scales).

    Counts ``quantize_4bit``'s packed bytes, the block absmax (fp32, or uint8 with
    double quantization) and the second-level fp32 absmax; the fixed code books and
    the single offset are left out (their share vanishes for large layers).
    """
    x = _normal(n_blocks, blocksize, seed=0).reshape(-1)
    packed, state = _bnb_nf4(x, blocksize, double_quant)
    nbytes = packed.nbytes + state.absmax.nbytes
    if state.nested:
        nbytes += state.state2.absmax.nbytes
    return nbytes * 8 / x.numel()


def check_double_quant_bits(double_quant_bits: Callable) -> None:
    """``double_quant_bits(blocksize)`` equals the bits bitsandbytes stores (8-bit absmax, fp32 per 256 of them)."""
    for blocksize in (64, 128, 256):
        expected = stored_bits_per_param(blocksize, double_quant=True)
        got = float(double_quant_bits(blocksize))
        single = stored_bits_per_param(blocksize, double_quant=False)
        assert abs(got - single) > 1e-9, (
            f"blocksize {blocksize}: {got} is the cost WITHOUT double quantization (fp32 absmax per block)")
        assert abs(got - expected) < 1e-9, (
            f"blocksize {blocksize}: {got:.5f} bits, bitsandbytes stores {expected:.5f}: 4 bits per code + "
            "8-bit absmax per block + one fp32 scale per 256 absmax values")
