"""The setup cell of every lab: profile, seeds, versions, offline status, tracking.

Usage at the top of a notebook::

    from ftlab.lab import start_lab
    ctx = start_lab("05_sft_and_prompt_templates")
    ctx.profile.max_steps, ctx.report_to, ctx.output_dir

It prints one short report so a learner (and an instructor looking over a
shoulder) sees at once which machine profile is active and why.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from ftlab import tracking
from ftlab.paths import cache_dir
from ftlab.profile import Profile, detect_profile

REPORTED_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes")


@dataclass
class LabContext:
    lab: str
    profile: Profile
    seed: int
    report_to: str  # "none" or "wandb", ready for TrainingArguments(report_to=...)
    offline: bool
    output_dir: Path  # scratch folder for this lab's checkpoints and adapters

    def run_name(self, **config) -> str:
        return tracking.run_name(self.lab, self.profile.name, **config)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def quiet_libraries() -> None:
    """Silence progress bars and advisory warnings that clutter notebook output."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:  # trl's dataset preparation ("Tokenizing train dataset ...") goes through datasets' bars
        from datasets.utils import logging as datasets_logging

        datasets_logging.disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=".*kernels.*")
    # On CPUs with AVX-512 BF16, importing bitsandbytes logs (to stderr) that the optional
    # `kernels` package could fetch a faster gemm kernel from the Hugging Face hub. The course
    # runs offline without it; bitsandbytes falls back to its built-in kernel (lab 07).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # transformers 5.23 renames the argument to activation_checkpointing; the labs keep the old
    # name, which still works (tests/test_api_drift.py fails the day it stops working).
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*` is deprecated.*", category=FutureWarning)


def start_lab(lab: str, seed: int = 0, verbose: bool = True) -> LabContext:
    """Detect the profile, fix seeds, set offline mode and tracking; print a report."""
    quiet_libraries()
    profile = detect_profile()
    if profile.is_tiny:
        # Everything the CPU profile needs is local: never wait on a hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    report_to = tracking.configure()
    set_seed(seed)
    ctx = LabContext(lab, profile, seed, report_to, offline, cache_dir("runs", lab))
    if verbose:
        print(report(ctx))
    return ctx


def report(ctx: LabContext) -> str:
    profile = ctx.profile
    gpu = f"{profile.gpu_name} (compute capability {profile.compute_capability})" if profile.gpu_name else "none"
    versions = ", ".join(f"{name} {package_version(name) or 'MISSING'}" for name in REPORTED_PACKAGES)
    lines = [
        f"lab        : {ctx.lab}",
        f"profile    : {profile.name} ({profile.reason})",
        f"model      : {profile.model_id} [{profile.dtype}], seq {profile.max_seq_length}, "
        f"batch {profile.per_device_train_batch_size} x accum {profile.gradient_accumulation_steps}",
        f"GPU        : {gpu}",
        f"offline    : {'yes (HF_HUB_OFFLINE=1)' if ctx.offline else 'no (models download from the hub)'}",
        f"tracking   : {ctx.report_to} (WANDB_MODE={os.environ.get('WANDB_MODE', '-')})",
        f"seed       : {ctx.seed}",
        f"python     : {sys.version.split()[0]}; {versions}",
    ]
    return "\n".join(lines)
