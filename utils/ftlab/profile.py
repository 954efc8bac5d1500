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

GPU profiles also choose, from the card itself:

- the attention kernel: FlashAttention 2 when ``flash_attn`` is importable and
  the card has compute capability >= 8.0, else PyTorch SDPA (``attention_implementation``);
- the per-device batch: the profile's default batch is halved (and gradient
  accumulation doubled, so the effective batch stays) until ``ftlab.memory``
  predicts that the sizing run (LoRA r=16 on all linear layers, the profile's
  sequence length, dtype, optimizer and gradient checkpointing) fits in
  ``MEMORY_FRACTION`` of the card's memory minus the CUDA context (``fit_batch_to_memory``).
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
# The shipped config.json (ftlab/model_configs) of each hub model, for the memory estimate.
MODEL_PRESETS = {T4_MODEL_ID: "qwen2.5-1.5b", A100_MODEL_ID: "qwen2.5-7b"}

GIB = 1024**3
# Card memory assumed when the real card is unknown (get_profile by name): a T4
# reports 15,642,329,088 bytes to torch, an A100 40 GB 42,505,273,344 bytes.
NOMINAL_MEMORY_BYTES = {"t4": 15_642_329_088, "a100": 42_505_273_344}
MEMORY_FRACTION = 0.85  # plan for 85% of the card: fragmentation, evaluation and generation need the rest
CUDA_CONTEXT_BYTES = 512 * 1024**2  # CUDA context and kernels, not seen by max_memory_allocated
# The run the batch is sized for: the labs' LoRA adapters (r 8-32) on every linear layer.
SIZING_RUN = {"method": "lora", "lora_r": 16, "lora_targets": "all-linear"}


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
        if self.device == "cuda" and self.gradient_checkpointing:
            # non-reentrant checkpointing works with frozen inputs (LoRA) and is what torch recommends
            kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
        kwargs.update(overrides)
        return kwargs

    def with_overrides(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)

    @property
    def estimator_precision(self) -> str:
        """The ``precision=`` of ``ftlab.memory.estimate_training_memory`` for this dtype."""
        return {"float16": "fp16", "bfloat16": "bf16"}.get(self.dtype, "fp32")

    @property
    def estimator_optimizer(self) -> str:
        """The ``optimizer=`` of ``ftlab.memory.estimate_training_memory`` for ``optim``."""
        return self.optim if self.optim in ("adamw_8bit", "paged_adamw_8bit") else "adamw"


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


def _t4(reason: str, gpu_name: str = "", cc: tuple[int, int] | None = None,
        total_memory: int | None = None) -> Profile:
    profile = Profile(
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
    return fit_batch_to_memory(profile, total_memory)


def _a100(reason: str, gpu_name: str = "", cc: tuple[int, int] | None = None,
        total_memory: int | None = None) -> Profile:
    profile = Profile(
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
    return fit_batch_to_memory(profile, total_memory)


PROFILE_NAMES = ("cpu", "t4", "a100")


def estimate_profile_peak(profile: Profile, batch_size: int | None = None):
    """``ftlab.memory`` estimate of one step of the sizing run (``SIZING_RUN``) under ``profile``."""
    from ftlab.memory import estimate_training_memory

    return estimate_training_memory(
        MODEL_PRESETS[profile.model_id],
        batch_size=batch_size or profile.per_device_train_batch_size,
        seq_len=profile.max_seq_length,
        gradient_checkpointing=profile.gradient_checkpointing,
        optimizer=profile.estimator_optimizer,
        precision=profile.estimator_precision,
        **SIZING_RUN,
    )


def memory_budget(total_memory: int) -> int:
    """Bytes a training step may use on a card with ``total_memory`` bytes."""
    return int(MEMORY_FRACTION * total_memory) - CUDA_CONTEXT_BYTES


def fit_batch_to_memory(profile: Profile, total_memory: int | None = None) -> Profile:
    """Halve the per-device batch (doubling accumulation) until the estimated peak fits the card.

    ``total_memory`` is the card's memory in bytes (``torch.cuda.get_device_properties(0).total_memory``);
    None means the profile's nominal card. The effective batch never changes; a
    model unknown to ``ftlab.memory`` is left as it is.
    """
    if profile.model_id not in MODEL_PRESETS:
        return profile
    total = total_memory or NOMINAL_MEMORY_BYTES[profile.name]
    budget = memory_budget(total)
    batch, target = profile.per_device_train_batch_size, profile.effective_batch_size
    while True:
        peak = estimate_profile_peak(profile, batch).peak_bytes
        if peak <= budget or batch == 1:
            break
        batch //= 2
    fits = "fits" if peak <= budget else "does NOT fit (use load_in_4bit or a shorter max_seq_length)"
    note = (f"; batch {batch} x {target // batch} accumulation: estimated peak {peak / GIB:.1f} GiB {fits} "
            f"in {budget / GIB:.1f} GiB ({MEMORY_FRACTION:.0%} of {total / GIB:.1f} GiB minus the CUDA context)")
    return dataclasses.replace(profile, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=target // batch, reason=profile.reason + note)


def attention_implementation(profile: Profile) -> str:
    """``attn_implementation`` for ``from_pretrained``: flash_attention_2 where it can run, else sdpa.

    FlashAttention 2 needs the ``flash_attn`` package and compute capability >= 8.0
    (Ampere or newer); the T4 (7.5) and the CPU get PyTorch's SDPA, whose
    memory-efficient kernel also avoids the seq x seq attention matrix.
    """
    import importlib.util

    cc = profile.compute_capability
    if profile.device == "cuda" and cc is not None and cc[0] >= 8 and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def _cuda_info() -> tuple[str, tuple[int, int]] | None:
    """Name and compute capability of GPU 0, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))


def _cuda_total_memory() -> int | None:
    """Total memory of GPU 0 in bytes, or None when torch cannot tell."""
    import torch

    try:
        return int(torch.cuda.get_device_properties(0).total_memory)
    except (AssertionError, RuntimeError, AttributeError):
        return None


def profile_for_gpu(gpu_name: str, capability: tuple[int, int], reason_prefix: str = "",
                    total_memory: int | None = None) -> Profile:
    """Pick t4 (fp16) or a100 (bf16) from the compute capability; size the batch for ``total_memory`` bytes."""
    major, minor = capability
    cc = f"{major}.{minor}"
    if major >= 8:
        reason = f"{reason_prefix}{gpu_name} has compute capability {cc} >= 8.0: native bf16"
        return _a100(reason, gpu_name, (major, minor), total_memory)
    reason = f"{reason_prefix}{gpu_name} has compute capability {cc} < 8.0: fp16 (bf16 would be emulated)"
    return _t4(reason, gpu_name, (major, minor), total_memory)


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
        return maker(f"{PROFILE_ENV}={requested} was set ({name}, compute capability {cc[0]}.{cc[1]})", name, cc,
                     _cuda_total_memory())
    if gpu is None:
        return _cpu("no CUDA GPU found: tiny local model on the CPU")
    return profile_for_gpu(*gpu, total_memory=_cuda_total_memory())


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
    if profile.device == "cuda":
        kwargs["attn_implementation"] = attention_implementation(profile)
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
