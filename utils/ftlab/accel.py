"""One switch between unsloth and the plain transformers + PEFT path.

Set ``FTLAB_UNSLOTH=1`` (or ``auto``) to load LoRA/QLoRA and DPO models with
unsloth's ``FastLanguageModel`` on a supported GPU. Without a CUDA GPU of
compute capability >= 7.0 (T4, V100 and newer), or without the ``unsloth``
package (``requirements-gpu.txt``), the same calls take the plain
transformers + PEFT path, and ``choose_backend`` says why::

    from ftlab import accel, profile              # import nothing from transformers/trl/peft before this
    backend = accel.choose_backend(profile.detect_profile())
    accel.import_unsloth_first(backend)           # no-op on the plain path
    model, tokenizer = accel.load_model(prof, backend, load_in_4bit=True)
    model = accel.add_lora(model, lora_config, prof, backend)

unsloth patches transformers, trl and peft when it is imported, so it must be
imported before them (its README); ``import_unsloth_first`` warns when one of
them is already loaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

UNSLOTH_ENV = "FTLAB_UNSLOTH"
ON_VALUES = ("1", "true", "on", "yes", "auto")
OFF_VALUES = ("", "0", "false", "off", "no")
MIN_CAPABILITY = (7, 0)  # unsloth's Triton kernels need an NVIDIA GPU of compute capability 7.0+
PATCHED_BY_UNSLOTH = ("transformers", "trl", "peft")


@dataclass(frozen=True)
class Backend:
    """Which library loads and adapts the model, and why."""

    unsloth: bool
    reason: str

    @property
    def name(self) -> str:
        return "unsloth" if self.unsloth else "transformers+peft"


def unsloth_installed() -> bool:
    """True when the ``unsloth`` package can be imported (it is not installed on CPU machines)."""
    return "unsloth" in sys.modules or importlib.util.find_spec("unsloth") is not None


def _gpu_capability() -> tuple[int, int] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(0))


def choose_backend(profile, env: Mapping[str, str] | None = None) -> Backend:
    """unsloth when ``FTLAB_UNSLOTH`` asks for it and the GPU and package allow it, else transformers+peft."""
    env = os.environ if env is None else env
    value = env.get(UNSLOTH_ENV, "").strip().lower()
    if value in OFF_VALUES:
        return Backend(False, f"{UNSLOTH_ENV} is not set: transformers + PEFT")
    if value not in ON_VALUES:
        raise ValueError(f"{UNSLOTH_ENV}={value!r}: use 1 (or auto) to turn unsloth on, 0 to turn it off")
    capability = _gpu_capability() if profile.device == "cuda" else None
    if capability is None:
        return Backend(False, f"{UNSLOTH_ENV}={value}, but there is no CUDA GPU: transformers + PEFT")
    if capability < MIN_CAPABILITY:
        return Backend(False, f"{UNSLOTH_ENV}={value}, but compute capability {capability[0]}.{capability[1]} "
                              f"< {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}: transformers + PEFT")
    if not unsloth_installed():
        return Backend(False, f"{UNSLOTH_ENV}={value}, but unsloth is not installed "
                              "(pip install -r requirements-gpu.txt): transformers + PEFT")
    return Backend(True, f"{UNSLOTH_ENV}={value} on a GPU of compute capability {capability[0]}.{capability[1]}: unsloth")


def import_unsloth_first(backend: Backend):
    """Import unsloth (before transformers/trl/peft, so its patches apply); None on the plain path."""
    if not backend.unsloth:
        return None
    loaded = [name for name in PATCHED_BY_UNSLOTH if name in sys.modules]
    if loaded:
        warnings.warn(f"{', '.join(loaded)} imported before unsloth: some of unsloth's speed-ups will be missing; "
                      "import ftlab.accel and call import_unsloth_first() at the top of the notebook or script",
                      stacklevel=2)
    import unsloth

    return unsloth


def distributed_device_map(profile, env: Mapping[str, str] | None = None):
    """``device_map`` for a process of a multi-GPU run, or ``"profile"`` to keep the profile's choice.

    One process: the profile's (``"auto"`` on GPU). DDP (``WORLD_SIZE`` > 1): the whole
    model on this process's GPU, ``{"": LOCAL_RANK}`` ("auto" would spread it over every
    GPU). FSDP (``ACCELERATE_USE_FSDP=true``): None, load on the CPU and let FSDP shard it.
    """
    env = os.environ if env is None else env
    if profile.device != "cuda" or int(env.get("WORLD_SIZE", "1")) <= 1:
        return "profile"
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return None
    return {"": int(env.get("LOCAL_RANK", "0"))}


def load_model(profile, backend: Backend, load_in_4bit: bool = False, **model_kwargs: Any):
    """``(model, tokenizer)`` of ``profile``; in 4-bit NF4 (QLoRA) when ``load_in_4bit``, ready for adapters.

    The plain path is ``ftlab.profile.load_model_and_tokenizer`` followed, for
    4-bit models, by ``peft.prepare_model_for_kbit_training``; the unsloth path is
    ``FastLanguageModel.from_pretrained`` (which prepares 4-bit models itself).
    """
    from ftlab.profile import load_model_and_tokenizer, resolve_model_path

    device_map = distributed_device_map(profile)
    if device_map != "profile":
        model_kwargs.setdefault("device_map", device_map)
    if not backend.unsloth:
        model, tokenizer = load_model_and_tokenizer(profile, load_in_4bit=load_in_4bit, **model_kwargs)
        if load_in_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.gradient_checkpointing)
        return model, tokenizer
    unsloth = import_unsloth_first(backend)
    return unsloth.FastLanguageModel.from_pretrained(
        model_name=resolve_model_path(profile),
        max_seq_length=profile.max_seq_length,
        dtype=profile.torch_dtype,
        load_in_4bit=load_in_4bit,
        **model_kwargs,
    )


def lora_target_list(targets) -> list[str]:
    """``LoraConfig.target_modules`` as the list unsloth wants (``"all-linear"`` spelled out)."""
    from ftlab.memory import LINEAR_MODULES, resolve_lora_targets

    if isinstance(targets, str):
        return list(resolve_lora_targets(targets))
    return [name for name in LINEAR_MODULES if name in targets] + sorted(set(targets) - set(LINEAR_MODULES))


def add_lora(model, lora_config, profile, backend: Backend, seed: int = 0):
    """``model`` with the adapters of ``lora_config`` (a ``peft.LoraConfig``), by the chosen backend.

    On unsloth, gradient checkpointing follows the profile with unsloth's own
    offloading variant (``use_gradient_checkpointing="unsloth"``).
    """
    if not backend.unsloth:
        from peft import get_peft_model

        return get_peft_model(model, lora_config)
    unsloth = import_unsloth_first(backend)
    return unsloth.FastLanguageModel.get_peft_model(
        model,
        r=lora_config.r,
        lora_alpha=lora_config.lora_alpha,
        lora_dropout=lora_config.lora_dropout,
        target_modules=lora_target_list(lora_config.target_modules),
        bias=lora_config.bias,
        use_gradient_checkpointing="unsloth" if profile.gradient_checkpointing else False,
        random_state=seed,
        max_seq_length=profile.max_seq_length,
    )


def prepare_dpo(backend: Backend) -> None:
    """Patch trl's ``DPOTrainer`` for unsloth (``unsloth.PatchDPOTrainer``, where that version has it)."""
    if backend.unsloth:
        patch = getattr(import_unsloth_first(backend), "PatchDPOTrainer", None)
        if patch is not None:
            patch()
