"""Experiment tracking, set by the environment.

- In CI (``CI`` is set) or with ``FTLAB_TRACKING=none``: no tracking at all.
- Otherwise wandb, in **offline** mode unless the learner has logged in
  (``WANDB_API_KEY`` set, or ``wandb login`` wrote ``~/.netrc``): runs are
  written under ``./wandb`` and can be uploaded later with ``wandb sync``.

The run name records the lab and the configuration that distinguishes runs,
for example ``08_lora_qlora_experiments-cpu-r8-a16-qv``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

TRACKING_ENV = "FTLAB_TRACKING"


def _logged_in(env: Mapping[str, str]) -> bool:
    if env.get("WANDB_API_KEY"):
        return True
    netrc = Path(env.get("HOME", str(Path.home()))) / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def tracking_mode(env: Mapping[str, str] | None = None) -> str:
    """'none', 'wandb-offline' or 'wandb-online'."""
    env = os.environ if env is None else env
    choice = env.get(TRACKING_ENV, "").strip().lower()
    if choice not in ("", "none", "wandb", "offline", "online"):
        raise ValueError(f"{TRACKING_ENV}={choice!r}: use none, offline or online")
    if choice == "none" or (env.get("CI") and choice == ""):
        return "none"
    if choice == "online" or (choice in ("", "wandb") and _logged_in(env)):
        return "wandb-online"
    return "wandb-offline"


def configure(env: dict[str, str] | None = None) -> str:
    """Apply the tracking mode to the process environment; return ``report_to``."""
    env = os.environ if env is None else env
    mode = tracking_mode(env)
    if mode == "none":
        env["WANDB_MODE"] = "disabled"
        return "none"
    env["WANDB_MODE"] = "offline" if mode == "wandb-offline" else "online"
    env.setdefault("WANDB_PROJECT", "ftlab-llm-finetuning")
    env.setdefault("WANDB_SILENT", "true")
    return "wandb"


def run_name(lab: str, profile: str, **config: Any) -> str:
    """A readable, stable run name: lab, profile, then key=value pairs in order."""
    parts = [lab, profile]
    for key, value in config.items():
        if isinstance(value, (list, tuple)):
            value = "+".join(str(v) for v in value)
        parts.append(f"{key}{value}")
    return "-".join(str(p).replace(" ", "") for p in parts)
