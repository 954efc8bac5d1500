"""ftlab.bench: the CPU smoke run and the FLOP/MFU arithmetic."""

import json

import pytest

from ftlab import bench
from ftlab.memory import load_model_spec


def test_smoke_run_on_cpu(capsys):
    """Full, LoRA and QLoRA train on the tiny config; unsloth is skipped without a GPU."""
    assert bench.main(["--smoke", "--steps", "1", "--device", "cpu", "--json"]) == 0
    rows = {row["method"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"full", "lora", "qlora", "unsloth"}
    assert rows["unsloth"]["skipped"] == "needs a CUDA GPU"
    for method in ("full", "lora", "qlora"):
        row = rows[method]
        assert row["peak_allocated"] > 0 and row["tokens_per_second"] > 0 and row["mfu"] is None
        assert row["predicted"] > row["predicted_compared"] > 0  # the CPU comparison leaves out the allocator margin
        assert abs(row["relative_error"]) < 1.0 and row["final_loss"] > 0
    assert rows["full"]["trainable_params"] > rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"]
    assert rows["qlora"]["peak_allocated"] < rows["lora"]["peak_allocated"] < rows["full"]["peak_allocated"]


def test_table_output(capsys):
    assert bench.main(["--smoke", "--methods", "lora,unsloth", "--steps", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| predicted | error | tokens/s | MFU" in out and "unsloth | skipped: needs a CUDA GPU" in out


def test_nf4_replaces_every_decoder_linear():
    import bitsandbytes as bnb
    import torch

    model = bench.build_model(bench.SMOKE_CONFIG, "full", "fp32", 8, "q_proj,v_proj", False, "cpu")
    assert bench.quantize_linears_nf4(model, torch.float32, "cpu") == 7 * bench.SMOKE_CONFIG["num_hidden_layers"]
    assert isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert isinstance(model.lm_head, torch.nn.Linear) and not isinstance(model.lm_head, bnb.nn.Linear4bit)


def test_flops_and_peaks():
    spec = load_model_spec("llama-3-8b")
    full, frozen = bench.flops_per_token(spec, 2048, False), bench.flops_per_token(spec, 2048, True)
    assert 6 * 6.9e9 < full < 6 * 8.1e9 + 12 * 32 * 4096 * 2048  # 8.0B parameters, 7.5B without the input embedding
    assert frozen < full and round((full - frozen) / (full - 12 * 32 * 4096 * 2048), 3) == round(1 / 3, 3)
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0 and bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("Tesla T4") == 65.0 and bench.peak_tflops("cpu") is None


def test_unknown_method_is_an_error(capsys):
    assert bench.main(["--smoke", "--methods", "dora", "--device", "cpu"]) == 2
    assert "unknown method 'dora'" in capsys.readouterr().err


def test_out_of_memory_becomes_a_row(monkeypatch):
    import torch

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(bench, "measure_method", oom)
    rows = bench.run_bench(bench.SMOKE_CONFIG, ["full"], 1, 16, "fp32", device="cpu")
    assert rows[0].skipped.startswith("out of memory (predicted") and rows[0].predicted > 0
