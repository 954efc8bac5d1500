"""The shared SFT model of Part III: built once, cached, reused by labs 09-11 and A2.

Labs 09 (DPO), 10 (RLHF and variants), 11 (distillation and evaluation) and the
A2 assignment all start from the same "knowledgeable but curt" model: the tiny
base fine-tuned on ``data/domain/sft_train.jsonl`` with lab 05's recipe. Lab 05
trains that model itself (that is its lesson) and asserts that its recipe is
``SFT_RECIPE``; no later lab retrains it.

The build is deterministic and cached in ``.cache/ftlab/sft`` next to the tiny
model. It is rebuilt only when its inputs change: the recipe, the training data,
this file's build version or the tiny base (its fingerprint).

Commands::

    python -m ftlab.checkpoints build           # build (or reuse) the cached SFT model
    python -m ftlab.checkpoints build --force   # rebuild it
    python -m ftlab.checkpoints info            # recipe, fingerprint, loss, held-out accuracy

In a notebook: ``model, tokenizer = ftlab.checkpoints.load_sft(profile)``.

On GPU profiles the same recipe trains a LoRA adapter on the profile's hub model
(the seeds' 2e-4 learning rate, the profile's batch and steps); only the adapter
is cached, and ``load_sft`` returns the base model with the adapter merged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from ftlab.paths import CACHE_DIR, DATA_DIR, build_lock

BUILD_VERSION = "1"  # bump when the build procedure changes

# Lab 05's main run on the CPU profile (lab 05 asserts that its CONFIG matches these keys).
SFT_RECIPE = {
    "steps": 500,  # optimizer steps
    "batch_size": 16,  # examples per optimizer step
    "learning_rate": 2e-3,  # full fine-tuning of the tiny model
    "warmup_ratio": 0.05,  # linear warmup over the first 5 % of the steps
    "scheduler": "cosine",  # then cosine decay to 0
    "max_length": 128,  # tokens per example
    "template": "chat",  # the tiny tokenizer's chat template
    "seed": 0,
}
SFT_DATA = ("domain/sft_train.jsonl",)
# GPU profiles: LoRA on the hub model (lab 05's GPU settings).
GPU_LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lora_dropout": 0.05}


def sft_dir(profile=None) -> Path:
    """Where the SFT model of ``profile`` (default: the CPU profile) is cached."""
    name = "sft" if profile is None or profile.is_tiny else f"sft-{profile.name}"
    return CACHE_DIR / name


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(profile=None) -> str:
    """A digest of everything the SFT model depends on."""
    from ftlab import tiny

    parts = {
        "build_version": BUILD_VERSION,
        "recipe": SFT_RECIPE,
        "data": {name: _file_digest(DATA_DIR / name) for name in SFT_DATA},
    }
    if profile is None or profile.is_tiny:
        parts["base"] = tiny.fingerprint(tiny.TinyConfig(), tiny.corpus_files())
    else:
        parts["base"] = profile.model_id
        parts["gpu"] = {"lora": GPU_LORA, "steps": profile.max_steps, "lr": profile.learning_rate,
                        "batch": profile.per_device_train_batch_size, "accum": profile.gradient_accumulation_steps}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def info(path: Path | None = None) -> dict:
    """The build record (recipe, fingerprint, loss, accuracy) of a built SFT model."""
    path = Path(path) if path is not None else sft_dir()
    record = path / "ftlab_sft.json"
    if not record.exists():
        raise FileNotFoundError(f"no SFT model at {path}: run `python -m ftlab.checkpoints build`")
    return json.loads(record.read_text(encoding="utf-8"))


def is_current(profile=None, path: Path | None = None) -> bool:
    path = Path(path) if path is not None else sft_dir(profile)
    try:
        return info(path)["fingerprint"] == fingerprint(profile)
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return False


def training_args(profile, output_dir: Path | str, **overrides):
    """The SFTConfig of the recipe on ``profile`` (GPU profiles: their own batch and steps)."""
    from ftlab import experiments

    recipe = SFT_RECIPE
    if profile.is_tiny:
        steps, batch, accum, lr = recipe["steps"], recipe["batch_size"], 1, recipe["learning_rate"]
        max_length = recipe["max_length"]
    else:
        steps, batch, accum = profile.max_steps, profile.per_device_train_batch_size, profile.gradient_accumulation_steps
        lr, max_length = profile.learning_rate, profile.max_seq_length
    kwargs = profile.training_kwargs(
        max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=accum, learning_rate=lr,
        warmup_steps=experiments.warmup_steps(steps, recipe["warmup_ratio"]), lr_scheduler_type=recipe["scheduler"],
        max_length=max_length, seed=recipe["seed"], data_seed=recipe["seed"], logging_steps=max(1, steps // 20),
        report_to="none",
    )
    kwargs.update(overrides)
    return experiments.sft_config(output_dir, **kwargs)


def build(profile=None, out: Path | None = None, verbose: bool = True) -> Path:
    """Train the SFT model with ``SFT_RECIPE`` and save it (tiny: full model; GPU: the adapter)."""
    from ftlab.lab import quiet_libraries, set_seed

    quiet_libraries()  # before peft imports bitsandbytes (its optional-kernels notice)
    from peft import LoraConfig

    from ftlab import data, sft
    from ftlab.profile import get_profile, load_model_and_tokenizer

    profile = profile or get_profile("cpu")
    out = Path(out) if out is not None else sft_dir(profile)
    set_seed(SFT_RECIPE["seed"])
    model, tokenizer = load_model_and_tokenizer(profile)
    train_rows = list(data.load_sft("train"))
    test_rows = list(data.load_sft("test"))
    lora = None if profile.is_tiny else LoraConfig(task_type="CAUSAL_LM", **GPU_LORA)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = sft.train_sft(model, tokenizer, training_args(profile, tmp),
                                sft.prompt_completion(train_rows, SFT_RECIPE["template"], tokenizer), peft_config=lora)
    seconds = time.time() - start
    accuracy = sft.fact_scores(trainer.model, tokenizer, test_rows, SFT_RECIPE["template"], 40)["accuracy"]
    losses = sft.log_series(trainer.state.log_history, "loss")
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    trainer.model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    record = {
        "fingerprint": fingerprint(profile),
        "profile": profile.name,
        "base": profile.model_id,
        "recipe": SFT_RECIPE,
        "adapter_only": lora is not None,
        "train_seconds": round(seconds, 1),
        "loss": {"step": losses["step"], "value": [round(v, 4) for v in losses["value"]]},
        "held_out_accuracy": round(accuracy, 4),
    }
    (staging / "ftlab_sft.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    if verbose:
        print(f"SFT model built in {seconds:.0f} s: loss {losses['value'][0]:.2f} -> {losses['value'][-1]:.3f}, "
              f"held-out fact accuracy {accuracy:.1%} ({out.name}, fingerprint {record['fingerprint']})")
    return out


def ensure_built(profile=None, verbose: bool = True) -> Path:
    """The cached SFT model's folder, built first if missing or out of date."""
    path = sft_dir(profile)
    if is_current(profile, path):
        return path
    with build_lock(path):  # another process (a second notebook, run.sh) may be building it right now
        if not is_current(profile, path):
            if verbose:
                print("building the shared SFT model (once; about 2-3 minutes on 2 CPU cores) ...", flush=True)
            build(profile, path, verbose=verbose)
    return path


def load_sft(profile=None, dtype: str | None = None):
    """The shared SFT model and its tokenizer (built on first use).

    CPU profile: the fully fine-tuned tiny model in ``dtype`` (default float32).
    GPU profiles: the hub model in the profile's dtype with the cached SFT adapter merged.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlab.profile import get_profile, load_model_and_tokenizer

    profile = profile or get_profile("cpu")
    path = ensure_built(profile)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if profile.is_tiny:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype or "float32"))
    else:
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(profile)
        model = PeftModel.from_pretrained(base, path).merge_and_unload()
    model.eval()
    return model, tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.checkpoints", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the shared SFT model")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    b.add_argument("--profile", default="cpu", help="cpu (default), t4 or a100")
    sub.add_parser("info", help="print the build record")
    args = parser.parse_args(argv)
    from ftlab.profile import get_profile

    if args.command == "build":
        profile = get_profile(args.profile)
        path = sft_dir(profile)
        with build_lock(path):
            stale = args.force or not is_current(profile, path)
            if stale:
                build(profile, path)
        if not stale:
            record = info(path)
            print(f"SFT model is current: {path.name} (fingerprint {record['fingerprint']}, "
                  f"held-out accuracy {record['held_out_accuracy']:.1%})")
        return 0
    print(json.dumps(info(), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
