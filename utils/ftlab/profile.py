"""Hardware profiles: one notebook, three machines.

A profile fixes everything that depends on the hardware: which model a lab
loads, its dtype, sequence length, batch size, gradient accumulation, the
number of training steps and the optimizer. Labs read these fields instead
of hard-coding numbers, so the same notebook runs on a laptop CPU (the tiny
offline model), a Colab T4 (fp16) and an A100/H100 (bf16).

Detection order:

1. ``FTLAB_PROFILE`` (``cpu``, ``t4`` or ``a100``) overrides everything.
2. A CUDA GPU with compute capability >= 8.0 (A100, L4, H100, RTX 30xx/40xx)
   gets ``a100``: bf16 runs natively there.
3. Any other CUDA GPU (T4 is 7.5, V100 is 7.0) gets ``t4`` with fp16. We do
   not ask ``torch.cuda.is_bf16_supported()``: it reports True on a T4
   because bf16 can be emulated, which is slow and gives no memory benefit.
4. No GPU: ``cpu`` with the tiny Llama model built from the shipped corpus.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

PROFILE_ENV = "FTLAB_PROFILE"

# Hub models for the GPU profiles. Qwen2.5 lists Korean among its 29+
# supported languages (Qwen2.5 model cards and the Qwen2.5 technical report,
# arXiv:2412.15115), is Apache-2.0 licensed for the 1.5B and 7B sizes, and is
# Llama-family (RoPE, RMSNorm, SwiGLU, GQA), so every lab's module names
# (q_proj, v_proj, gate_proj, ...) carry over from the tiny model unchanged.
T4_MODEL_ID = "Qwen/Qwen2.5-1.5B-Instruct"
A100_MODEL_ID = "Qwen/Qwen2.5-7B-Instruct"
TINY_MODEL_ID = "ftlab-tiny"  # resolved to the local cache by ftlab.tiny


@dataclass(frozen=True)
class Profile:
    """Everything a lab needs to know about the machine it runs on."""

    name: str  # "cpu" | "t4" | "a100"
    reason: str  # one sentence: why this profile was chosen
    device: str  # "cpu" | "cuda"
    model_id: str  # hub id, or TINY_MODEL_ID for the local tiny model
    dtype: str  # weights/compute dtype: "float32" | "float16" | "bfloat16"
    max_seq_length: int  # tokens per training example (longer ones are cut)
    per_device_train_batch_size: int  # examples per forward/backward pass
    gradient_accumulation_steps: int  # passes per optimizer step
    max_steps: int  # optimizer steps of a standard SFT run in the labs
    learning_rate: float  # LoRA learning rate (the seeds' 2e-4 on real models)
    optim: str  # transformers optimizer name
    gradient_checkpointing: bool  # trade compute for activation memory
    gpu_name: str = ""  # e.g. "Tesla T4"; empty on CPU
    compute_capability: tuple[int, int] | None = None

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @property
    def is_tiny(self) -> bool:
        return self.model_id == TINY_MODEL_ID

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def training_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments shared by TrainingArguments/SFTConfig/DPOConfig.

        Mixed precision flags follow the dtype; on CPU we train in fp32.
        Anything passed in ``overrides`` wins.
        """
        kwargs: dict[str, Any] = {
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_steps": self.max_steps,
            "learning_rate": self.learning_rate,
            "optim": self.optim,
            "gradient_checkpointing": self.gradient_checkpointing,
            "bf16": self.dtype == "bfloat16",
            "fp16": self.dtype == "float16",
            "use_cpu": self.device == "cpu",
            "logging_steps": 10,
            "save_strategy": "no",
            "seed": 0,
            "data_seed": 0,
            "disable_tqdm": True,
        }
        kwargs.update(overrides)
        return kwargs

    def with_overrides(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)


def _cpu(reason: str) -> Profile:
    return Profile(
        name="cpu",
        reason=reason,
        device="cpu",
        model_id=TINY_MODEL_ID,
        dtype="float32",
        max_seq_length=128,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=1,
        max_steps=400,
        learning_rate=2e-3,  # tiny models from scratch need a larger LR than 2e-4
        optim="adamw_torch",
        gradient_checkpointing=False,
    )


def _t4(reason: str, gpu_name: str = "", cc: tuple[int, int] | None = None) -> Profile:
    return Profile(
        name="t4",
        reason=reason,
        device="cuda",
        model_id=T4_MODEL_ID,
        dtype="float16",
        max_seq_length=512,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        max_steps=200,
        learning_rate=2e-4,
        optim="paged_adamw_8bit",
        gradient_checkpointing=True,
        gpu_name=gpu_name,
        compute_capability=cc,
    )


def _a100(reason: str, gpu_name: str = "", cc: tuple[int, int] | None = None) -> Profile:
    return Profile(
        name="a100",
        reason=reason,
        device="cuda",
        model_id=A100_MODEL_ID,
        dtype="bfloat16",
        max_seq_length=1024,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=300,
        learning_rate=2e-4,
        optim="adamw_torch_fused",
        gradient_checkpointing=True,
        gpu_name=gpu_name,
        compute_capability=cc,
    )


PROFILE_NAMES = ("cpu", "t4", "a100")


def _cuda_info() -> tuple[str, tuple[int, int]] | None:
    """Name and compute capability of GPU 0, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))


def profile_for_gpu(gpu_name: str, capability: tuple[int, int], reason_prefix: str = "") -> Profile:
    """Pick t4 (fp16) or a100 (bf16) from the compute capability alone."""
    major, minor = capability
    cc = f"{major}.{minor}"
    if major >= 8:
        reason = f"{reason_prefix}{gpu_name} has compute capability {cc} >= 8.0: native bf16"
        return _a100(reason, gpu_name, (major, minor))
    reason = f"{reason_prefix}{gpu_name} has compute capability {cc} < 8.0: fp16 (bf16 would be emulated)"
    return _t4(reason, gpu_name, (major, minor))


def detect_profile(env: Mapping[str, str] | None = None) -> Profile:
    """Choose the profile for this machine (see the module docstring)."""
    env = os.environ if env is None else env
    requested = env.get(PROFILE_ENV, "").strip().lower()
    if requested and requested not in PROFILE_NAMES:
        raise ValueError(
            f"{PROFILE_ENV}={requested!r} is not a profile; choose one of {', '.join(PROFILE_NAMES)}"
        )
    gpu = _cuda_info()
    if requested == "cpu":
        return _cpu(f"{PROFILE_ENV}=cpu was set: tiny local model on the CPU")
    if requested in ("t4", "a100"):
        if gpu is None:
            raise ValueError(
                f"{PROFILE_ENV}={requested} needs a CUDA GPU, but torch sees none; "
                f"unset {PROFILE_ENV} (or set it to cpu) to use the tiny local model"
            )
        name, cc = gpu
        maker = _t4 if requested == "t4" else _a100
        return maker(f"{PROFILE_ENV}={requested} was set ({name}, compute capability {cc[0]}.{cc[1]})", name, cc)
    if gpu is None:
        return _cpu("no CUDA GPU found: tiny local model on the CPU")
    return profile_for_gpu(*gpu)


def get_profile(name: str) -> Profile:
    """A profile by name, without looking at the hardware (for docs and tests)."""
    if name == "cpu":
        return _cpu("requested by name")
    if name == "t4":
        return _t4("requested by name", "Tesla T4", (7, 5))
    if name == "a100":
        return _a100("requested by name", "NVIDIA A100", (8, 0))
    raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")


def load_model_and_tokenizer(
    profile: Profile, load_in_4bit: bool = False, compute_dtype=None, fused_cpu_kernel: bool = False, **model_kwargs: Any
):
    """Load the profile's model and tokenizer with ``from_pretrained``.

    The same code serves every profile: on the CPU profile ``model_id`` is the
    local folder of the tiny model (built on first use), on GPU profiles it is
    a hub id downloaded by transformers. ``load_in_4bit`` applies the QLoRA
    recipe: NF4 weights, double quantization, compute in the profile's dtype
    (bf16 on the fp32 CPU profile, as in the seed's recipe) unless
    ``compute_dtype`` says otherwise.

    On the CPU, bitsandbytes' fused 4-bit kernel (CPUs with AVX-512 BF16) stays
    off unless ``fused_cpu_kernel=True``: with it, eval-mode forwards compute in
    bf16 on some CPUs and in ``compute_dtype`` on others, so stored outputs would
    differ between machines (``ftlab.quant.set_fused_cpu_kernel``; lab 07 measures it).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    source = resolve_model_path(profile)
    kwargs: dict[str, Any] = {"dtype": profile.torch_dtype}
    if load_in_4bit:
        default = torch.bfloat16 if profile.dtype == "float32" else profile.torch_dtype
        compute = compute_dtype if compute_dtype is not None else default
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        kwargs["device_map"] = "cpu" if profile.device == "cpu" else "auto"
    elif profile.device == "cuda":
        kwargs["device_map"] = "auto"
    kwargs.update(model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if load_in_4bit and profile.device == "cpu":
        from ftlab.quant import set_fused_cpu_kernel

        set_fused_cpu_kernel(model, fused_cpu_kernel)
    return model, tokenizer


def resolve_model_path(profile: Profile) -> str:
    """Hub id for GPU profiles; the local tiny-model folder (built if needed) on CPU."""
    if profile.is_tiny:
        from ftlab import tiny

        return str(tiny.ensure_built())
    return profile.model_id
