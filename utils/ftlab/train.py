"""Script versions of the SFT, LoRA and DPO runs, for one process or many (``accelerate launch``).

One process (the CPU profile's tiny model by default)::

    python -m ftlab.train sft  --max-steps 100 --batch-size 16
    python -m ftlab.train lora --max-steps 100 --batch-size 16 --lora-r 32
    python -m ftlab.train dpo  --max-steps 50  --batch-size 8 --beta 0.1

Several processes, one per GPU (or CPU processes with gloo, as the CI test does)::

    accelerate launch --config_file configs/accelerate/ddp.yaml  -m ftlab.train lora --batch-size 8
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m ftlab.train sft  --batch-size 4
    accelerate launch --cpu --num_processes 2 -m ftlab.train lora --batch-size 4 --max-steps 3

``--batch-size`` is per process: the effective batch is
``batch-size x gradient-accumulation x processes`` (docs/multi_gpu.md). The model,
dtype and sequence length come from the hardware profile (``FTLAB_PROFILE``);
``FTLAB_UNSLOTH=1`` loads LoRA/QLoRA/DPO models through unsloth on a supported GPU
(``ftlab.accel``). Every process writes ``<output-dir>/rank<N>.json`` (its loss log
and settings) and ``rank<N>.pt`` (its trainable weights), so runs can be compared.
"""

from __future__ import annotations

# ftlab.accel must decide about unsloth before transformers, trl or peft are imported.
from ftlab import accel, profile as hardware  # noqa: I001

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

MODES = ("sft", "lora", "dpo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ftlab.train", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=MODES, help="sft: full fine-tuning; lora: LoRA adapters; dpo: DPO with a LoRA adapter")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: .cache/ftlab/train/<mode>")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: the profile's)")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per process per pass (default: the profile's)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the profile's (DPO: 5e-4 on CPU)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the profile's)")
    parser.add_argument("--train-rows", type=int, default=None, help="use only the first N training rows")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=None, help="default: 2 x r")
    parser.add_argument("--lora-targets", default="all-linear")
    parser.add_argument("--qlora", action="store_true", help="4-bit NF4 base model (QLoRA)")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    parser.add_argument("--shuffle", choices=("random", "sequential"), default="random", help="training data order")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _rank() -> tuple[int, int]:
    """(rank, world size) as set by ``accelerate launch`` / torchrun; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def lora_config(args):
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha or 2 * args.lora_r, lora_dropout=0.0,
                      target_modules=args.lora_targets, bias="none", task_type="CAUSAL_LM")


def training_kwargs(prof, args) -> dict:
    """Keyword arguments for ``SFTConfig``/``DPOConfig``: the profile's, then the command line's.

    The schedule is constant and the last incomplete batch is dropped, so that a
    run on N processes with batch b matches one process with batch N x b step by step.
    """
    dpo_tiny_lr = 5e-4 if args.mode == "dpo" and prof.is_tiny else None  # NOTES.md: the tiny model's DPO runs
    overrides = {
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate or dpo_tiny_lr,
        "max_length": args.max_length or prof.max_seq_length,
    }
    kwargs = prof.training_kwargs(**{key: value for key, value in overrides.items() if value is not None})
    kwargs.update(logging_steps=1, report_to="none", seed=args.seed, data_seed=args.seed,
                  lr_scheduler_type="constant", warmup_steps=0, dataloader_drop_last=True)
    if args.shuffle != "random":  # the Trainer's default; the field is newer than the GPU stack's transformers
        kwargs["train_sampling_strategy"] = args.shuffle
    return kwargs


def sft_dataset(tokenizer, train_rows: int | None):
    from ftlab import data, sft

    rows = list(data.load_sft("train"))
    return sft.prompt_completion(rows[:train_rows] if train_rows else rows, "chat", tokenizer)


def dpo_dataset(train_rows: int | None):
    """Preference pairs as conversations (prompt: the user turn; chosen/rejected: the assistant turn)."""
    from datasets import Dataset

    from ftlab import data

    rows = list(data.load_preference_pairs("train"))
    rows = rows[:train_rows] if train_rows else rows
    return Dataset.from_list([{
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    } for row in rows])


def build_trainer(args, prof, backend, output_dir: Path):
    """The trl trainer of ``args.mode``, with the model loaded by ``backend``."""
    import torch

    torch.manual_seed(args.seed)
    use_adapter = args.mode in ("lora", "dpo")
    model, tokenizer = accel.load_model(prof, backend if use_adapter else accel.Backend(False, "full fine-tuning"),
                                        load_in_4bit=args.qlora)
    if use_adapter:
        model = accel.add_lora(model, lora_config(args), prof, backend, seed=args.seed)
        if prof.device == "cpu":  # trl casts adapters of 4-bit models to bf16; CPUs emulate bf16 matmuls slowly
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
    kwargs = training_kwargs(prof, args)
    if args.mode == "dpo":
        from trl import DPOConfig, DPOTrainer

        from transformers import PrinterCallback

        accel.prepare_dpo(backend)
        trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=str(output_dir), beta=args.beta, **kwargs),
                             train_dataset=dpo_dataset(args.train_rows), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # the log stays in trainer.state.log_history
        return trainer
    from ftlab import sft
    from ftlab.experiments import sft_config

    return sft.sft_trainer(model, tokenizer, sft_config(output_dir, **kwargs), sft_dataset(tokenizer, args.train_rows))


def save_rank_outputs(trainer, args, output_dir: Path, backend) -> dict:
    """Write this process's loss log and trainable weights; return the summary."""
    import torch

    rank, world = _rank()
    weights = {name: p.detach().float().cpu() for name, p in trainer.model.named_parameters() if p.requires_grad}
    summary = {
        "mode": args.mode, "rank": rank, "world_size": world, "backend": backend.name,
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "effective_batch_size": trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps * world,
        "steps": trainer.state.global_step,
        "loss": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "trainable_params": sum(t.numel() for t in weights.values()),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, output_dir / f"rank{rank}.pt")
    (output_dir / f"rank{rank}.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prof = hardware.detect_profile()
    backend = accel.choose_backend(prof)
    accel.import_unsloth_first(backend)
    from ftlab.paths import cache_dir

    output_dir = args.output_dir or cache_dir("train", args.mode)
    trainer = build_trainer(args, prof, backend, output_dir)
    trainer.train()
    summary = save_rank_outputs(trainer, args, output_dir, backend)
    if summary["rank"] == 0:
        print(f"{args.mode}: {summary['steps']} steps on {summary['world_size']} process(es), effective batch "
              f"{summary['effective_batch_size']}, final loss {summary['loss'][-1]:.4f} ({backend.reason}); "
              f"outputs in {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
