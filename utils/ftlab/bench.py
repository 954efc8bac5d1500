"""Measure one training configuration: peak memory, tokens/s and MFU, beside ``ftlab.memory``'s prediction.

The model is built with random weights from a config file (``ftlab/model_configs``
or any ``config.json``), so nothing is downloaded::

    python -m ftlab.bench --smoke                                   # CPU smoke test, a few seconds
    python -m ftlab.bench --config llama-3-8b --methods lora,qlora --batch-size 1 --seq-len 512
    python -m ftlab.bench --config llama-3-8b --methods lora,qlora --batch-size 1 --seq-len 2048 \\
        --gradient-checkpointing --json

Each method (``full``, ``lora``, ``qlora``, and ``unsloth`` where ``ftlab.accel``
finds it usable: a CUDA GPU with unsloth installed) trains ``--warmup + --steps``
optimizer steps of causal-LM loss on random tokens with fused AdamW, under
autocast like ``Trainer(bf16=True)``.

What is measured
----------------
- GPU: ``torch.cuda.max_memory_allocated()`` and ``max_memory_reserved()``, reset after
  the model is on the GPU (weights count, the CUDA context does not). The
  prediction is ``estimate_training_memory(...).peak_bytes`` (with its margin).
- CPU: the peak of ``ftlab.memory.LiveTensorTracker`` (exact tensor bytes, what a
  GPU allocator would be asked for) during the first step, compared with the
  prediction without its allocator margin; "reserved" is the process RSS growth
  (``ftlab.experiments.PeakRSS``), which includes allocator caches and libraries.
- tokens/s over the timed steps (after ``--warmup``), and MFU = achieved model
  FLOP/s over the card's peak dense FLOP/s (``PEAK_TFLOPS``; ``--peak-tflops``
  overrides; unknown on CPU). Model FLOPs per token follow PaLM (Chowdhery et
  al. 2022, appendix B): ``6 N + 12 L d T`` for full fine-tuning; with a frozen base
  (LoRA, QLoRA) the weight gradients are skipped, so ``4 N + 12 L d T``.
  Recomputation by gradient checkpointing is not counted (that would be HFU).

The unsloth row is built by ``FastLanguageModel.from_pretrained`` from the random
model saved to a temporary folder; it has not been run on a GPU yet (no GPU was
available when this was written; see docs/gpu_results.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Sequence

from ftlab.memory import (
    LINEAR_MODULES,
    count_parameters,
    estimate_training_memory,
    format_bytes,
    load_model_spec,
    preset_config,
)

METHODS = ("full", "lora", "qlora", "unsloth")
# A Llama small enough for a CPU smoke test (about 0.2M parameters); sizes are multiples of 64
# so bitsandbytes' NF4 blocks divide every weight.
SMOKE_CONFIG = {
    "_name": "smoke-llama",
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
# Peak dense tensor-core TFLOP/s at 16-bit (bf16; fp16 on the T4 and V100), from NVIDIA's data sheets.
# Matched as substrings of torch.cuda.get_device_name(); the first match wins.
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


@dataclass
class BenchRow:
    """One method's measurement and prediction (bytes, tokens per second)."""

    method: str
    device: str
    trainable_params: int
    peak_allocated: int | None  # max_memory_allocated (GPU) or tracked tensor peak (CPU)
    peak_reserved: int | None  # max_memory_reserved (GPU) or RSS growth (CPU)
    predicted: int | None  # estimate_training_memory(...).peak_bytes
    predicted_compared: int | None  # what peak_allocated is compared with (no margin on CPU)
    tokens_per_second: float | None
    mfu: float | None
    final_loss: float | None
    skipped: str = ""  # why the method did not run

    @property
    def relative_error(self) -> float | None:
        """(predicted - measured) / measured; positive means the estimator over-predicts."""
        if not self.peak_allocated or self.predicted_compared is None:
            return None
        return (self.predicted_compared - self.peak_allocated) / self.peak_allocated


def peak_tflops(device_name: str) -> float | None:
    """Peak dense 16-bit TFLOP/s of a GPU named ``device_name``, or None when unknown."""
    return next((value for key, value in PEAK_TFLOPS if key in device_name), None)


def flops_per_token(spec, seq_len: int, frozen_base: bool) -> float:
    """Model FLOPs of one training token (PaLM appendix B; see the module docstring)."""
    matmul_params = count_parameters(spec) - (0 if spec.tie_word_embeddings else spec.vocab_size * spec.hidden_size)
    attention = 12 * spec.num_hidden_layers * spec.num_attention_heads * spec.head_dim * seq_len
    return (4 if frozen_base else 6) * matmul_params + attention


def resolve_config(config: str | None, smoke: bool, num_hidden_layers: int | None) -> dict:
    """The raw config dict: ``SMOKE_CONFIG``, a preset or a ``config.json`` path; layers optionally cut."""
    if smoke or config is None:
        raw = dict(SMOKE_CONFIG)
    elif config.endswith(".json"):
        with open(config, encoding="utf-8") as handle:
            raw = {"_name": config, **json.load(handle)}
    else:
        raw = {"_name": config, **preset_config(config)}
    if num_hidden_layers:
        raw["num_hidden_layers"] = num_hidden_layers
    return raw


def _model_config(raw: dict) -> dict:
    """``raw`` without our private keys (``_name``, ``_source``), ready for ``AutoConfig``."""
    return {key: value for key, value in raw.items() if not key.startswith("_")}


def _estimator_config(raw: dict) -> dict:
    """``raw`` as ``ftlab.memory`` reads a dict (its name in ``_name_or_path``)."""
    return {**_model_config(raw), "_name_or_path": raw.get("_name", "config")}


def quantize_linears_nf4(model, compute_dtype, device: str) -> int:
    """Replace every decoder linear layer by a bitsandbytes NF4 ``Linear4bit`` (double quantization), on ``device``.

    This is what ``from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))``
    produces, done in place on random weights: embeddings, ``lm_head`` and norms stay unquantized.
    Returns the number of layers replaced.
    """
    import bitsandbytes as bnb
    import torch

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name not in LINEAR_MODULES or not isinstance(child, torch.nn.Linear):
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                      device="meta")
            layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", module=layer)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer.to(device))
            replaced += 1
    model.is_loaded_in_4bit = True  # what peft.prepare_model_for_kbit_training looks for
    return replaced


def _dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def build_model(raw: dict, method: str, precision: str, lora_r: int, lora_targets: str,
                gradient_checkpointing: bool, device: str):
    """A random-weight model ready to train with ``method`` (full, lora, qlora or unsloth)."""
    import torch

    from ftlab.memory import _build_training_model, resolve_lora_targets

    config = _model_config(raw)
    base_dtype = _dtype(precision)
    if method in ("full", "lora"):
        return _build_training_model(config, method, base_dtype, lora_r, lora_targets, gradient_checkpointing, device)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules=list(resolve_lora_targets(lora_targets)))
    if method == "qlora":
        model = _build_training_model(config, "full", base_dtype, lora_r, lora_targets, False, device)
        quantize_linears_nf4(model, base_dtype, device)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        return get_peft_model(model, lora).train()
    return _build_unsloth_model(config, precision, lora, gradient_checkpointing, device)


def _build_unsloth_model(config: dict, precision: str, lora, gradient_checkpointing: bool, device: str):
    """unsloth's 4-bit model with LoRA, loaded from the random model saved to a temporary folder."""
    import unsloth  # noqa: F401  (before transformers' model code runs, as unsloth requires)

    from ftlab.accel import lora_target_list
    from ftlab.memory import _build_training_model

    with tempfile.TemporaryDirectory() as folder:
        _build_training_model(config, "full", _dtype(precision), 0, (), False, device).save_pretrained(folder)
        model, _ = unsloth.FastLanguageModel.from_pretrained(model_name=folder, max_seq_length=4096,
                                                             dtype=_dtype(precision), load_in_4bit=True)
    return unsloth.FastLanguageModel.get_peft_model(
        model, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=0.0, target_modules=lora_target_list(lora.target_modules),
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=0).train()


def _train_step(model, optimizer, batch, precision: str, device_type: str) -> float:
    import torch

    half = torch.float16 if precision.endswith("fp16") else torch.bfloat16
    with torch.autocast(device_type, dtype=half, enabled=precision != "fp32"):
        loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def measure_method(raw: dict, method: str, batch_size: int, seq_len: int, precision: str = "bf16",
                   lora_r: int = 8, lora_targets: str = "q_proj,v_proj", gradient_checkpointing: bool = False,
                   steps: int = 3, warmup: int = 1, device: str = "cpu", peak_tflops_value: float | None = None,
                   seed: int = 0) -> BenchRow:
    """Train ``warmup + steps`` steps of ``method`` and return the measured :class:`BenchRow`."""
    import torch

    from ftlab.experiments import PeakRSS
    from ftlab.memory import LiveTensorTracker

    torch.manual_seed(seed)
    cuda = device.startswith("cuda")
    model = build_model(raw, method, precision, lora_r, lora_targets, gradient_checkpointing, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    batch = torch.randint(0, raw["vocab_size"], (batch_size, seq_len), device=device)
    reserved = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(warmup):
            loss = _train_step(model, optimizer, batch, precision, "cuda")
    else:
        tracker = LiveTensorTracker()
        tracker.track(model, batch)
        with PeakRSS() as rss, tracker:
            loss = _train_step(model, optimizer, batch, precision, "cpu")
        allocated, reserved = tracker.peak_bytes, rss.delta
        for _ in range(warmup - 1):
            loss = _train_step(model, optimizer, batch, precision, "cpu")
    started = time.perf_counter()
    for _ in range(steps):
        loss = _train_step(model, optimizer, batch, precision, "cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.synchronize()
        allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    seconds = time.perf_counter() - started
    tokens_per_second = steps * batch_size * seq_len / seconds if steps else None
    spec = load_model_spec(_estimator_config(raw))
    mfu = None
    if tokens_per_second and peak_tflops_value:
        mfu = tokens_per_second * flops_per_token(spec, seq_len, method != "full") / (peak_tflops_value * 1e12)
    trainable = sum(p.numel() for p in params)
    del model, optimizer
    return BenchRow(method=method, device=device, trainable_params=trainable, peak_allocated=allocated,
                    peak_reserved=reserved, predicted=None, predicted_compared=None,
                    tokens_per_second=tokens_per_second, mfu=mfu, final_loss=loss)


def predict(raw: dict, method: str, batch_size: int, seq_len: int, precision: str, lora_r: int,
            lora_targets: str, gradient_checkpointing: bool):
    """``estimate_training_memory`` for the benchmarked run (unsloth is predicted as QLoRA)."""
    return estimate_training_memory(
        _estimator_config(raw), method="qlora" if method == "unsloth" else method,
        batch_size=batch_size, seq_len=seq_len, lora_r=lora_r, lora_targets=lora_targets,
        gradient_checkpointing=gradient_checkpointing, optimizer="adamw", precision=precision, adamw_impl="fused",
    )


def unsloth_unavailable(device: str) -> str:
    """Why unsloth cannot run here ("" when it can)."""
    from ftlab.accel import MIN_CAPABILITY, unsloth_installed

    if not device.startswith("cuda"):
        return "needs a CUDA GPU"
    import torch

    if tuple(torch.cuda.get_device_capability(0)) < MIN_CAPABILITY:
        return "GPU too old for unsloth"
    return "" if unsloth_installed() else "unsloth not installed (requirements-gpu.txt)"


def run_bench(raw: dict, methods: Sequence[str], batch_size: int, seq_len: int, precision: str, lora_r: int = 8,
              lora_targets: str = "q_proj,v_proj", gradient_checkpointing: bool = False, steps: int = 3,
              warmup: int = 1, device: str | None = None, peak_tflops_value: float | None = None) -> list[BenchRow]:
    """One :class:`BenchRow` per method, measured and predicted."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if peak_tflops_value is None and device.startswith("cuda"):
        peak_tflops_value = peak_tflops(torch.cuda.get_device_name(0))
    rows = []
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use {', '.join(METHODS)}")
        why_not = unsloth_unavailable(device) if method == "unsloth" else ""
        if why_not:
            rows.append(BenchRow(method, device, 0, None, None, None, None, None, None, None, skipped=why_not))
            continue
        est = predict(raw, method, batch_size, seq_len, precision, lora_r, lora_targets, gradient_checkpointing)
        try:
            row = measure_method(raw, method, batch_size, seq_len, precision, lora_r, lora_targets,
                                 gradient_checkpointing, steps, warmup, device, peak_tflops_value)
        except torch.OutOfMemoryError:
            # a row of its own: the prediction said whether it should have fitted
            rows.append(BenchRow(method, device, 0, None, None, est.peak_bytes, None, None, None, None,
                                 skipped=f"out of memory (predicted {format_bytes(est.peak_bytes)})"))
            torch.cuda.empty_cache()
            continue
        except Exception as error:  # noqa: BLE001  unsloth has not run here yet: report, keep the other rows
            if method != "unsloth":
                raise
            rows.append(BenchRow(method, device, 0, None, None, None, None, None, None, None,
                                 skipped=f"unsloth failed: {type(error).__name__}: {error}"[:200]))
            continue
        row.predicted = est.peak_bytes
        row.predicted_compared = est.peak_bytes if device.startswith("cuda") else est.peak_bytes - est.margin_bytes
        rows.append(row)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def _cell(value, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "bytes":
        return format_bytes(value)
    if kind == "pct":
        return f"{100 * value:+.1f}%"
    if kind == "mfu":
        return f"{100 * value:.1f}%"
    return f"{value:,.0f}"


def format_rows(rows: Sequence[BenchRow], title: str) -> str:
    """The table printed by the command line."""
    head = ("method", "trainable", "peak alloc", "reserved", "predicted", "error", "tokens/s", "MFU")
    lines = [title, " | ".join(head), " | ".join("---" for _ in head)]
    for row in rows:
        if row.skipped:
            lines.append(f"{row.method} | skipped: {row.skipped}" + " | " * (len(head) - 2))
            continue
        lines.append(" | ".join([
            row.method, f"{row.trainable_params:,}", _cell(row.peak_allocated, "bytes"), _cell(row.peak_reserved, "bytes"),
            _cell(row.predicted_compared, "bytes"), _cell(row.relative_error, "pct"), _cell(row.tokens_per_second, "num"),
            _cell(row.mfu, "mfu"),
        ]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ftlab.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="preset name (see ftlab.memory) or config.json path")
    parser.add_argument("--smoke", action="store_true", help="the tiny SMOKE_CONFIG (the default without --config)")
    parser.add_argument("--methods", default="full,lora,qlora,unsloth", help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--precision", default=None, help="bf16 (GPU default), fp16, fp32 (CPU default)")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-targets", default="q_proj,v_proj")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--num-hidden-layers", type=int, default=None, help="cut the model to this many layers")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense TFLOP/s for MFU")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ftlab.bench``; returns the exit status."""
    import torch

    args = build_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision or ("bf16" if device.startswith("cuda") else "fp32")
    try:
        raw = resolve_config(args.config, args.smoke, args.num_hidden_layers)
        rows = run_bench(raw, [m.strip() for m in args.methods.split(",") if m.strip()], args.batch_size,
                         args.seq_len, precision, args.lora_r, args.lora_targets, args.gradient_checkpointing,
                         args.steps, max(1, args.warmup), device, args.peak_tflops)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    title = (f"{raw.get('_name')}: batch {args.batch_size} x seq {args.seq_len}, {precision}, LoRA r={args.lora_r} "
             f"{args.lora_targets}{', gradient checkpointing' if args.gradient_checkpointing else ''}; {name}, torch {torch.__version__}")
    if args.json:
        print(json.dumps({"title": title, "rows": [{**asdict(r), "relative_error": r.relative_error} for r in rows]}, indent=2))
    else:
        print(format_rows(rows, title))
        print("\nerror = (predicted - measured) / measured. On CPU, 'peak alloc' is the tracked tensor peak, "
              "'predicted' is ftlab.memory's estimate without its allocator margin, and 'reserved' is the RSS growth.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
