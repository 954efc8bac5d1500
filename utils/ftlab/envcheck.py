"""The environment report of lab 00: every package the course needs, with [OK]/[FAIL].

Run it from a shell too: ``python -m ftlab.envcheck``.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ftlab.paths import REPO_ROOT

# import name -> distribution name, for packages whose names differ
IMPORT_NAMES = {"koreanize-matplotlib": "koreanize_matplotlib", "pyyaml": "yaml"}
OPTIONAL_GPU = ("unsloth",)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name:<22} {self.detail}"


def required_packages(requirements: Path = REPO_ROOT / "requirements.txt") -> list[tuple[str, str | None]]:
    """(name, pinned version or None) for every line of requirements.txt."""
    packages = []
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:==\s*([^\s;]+))?", line)
        if match:
            packages.append((match.group(1), match.group(2)))
    return packages


def check_package(name: str, pinned: str | None) -> Check:
    """Import the package and compare its version with the pin (+local tags ignored)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version(name)
    except PackageNotFoundError:
        return Check(name, False, "not installed: run the README set-up command")
    module = IMPORT_NAMES.get(name, name.replace("-", "_"))
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - report any import failure
        return Check(name, False, f"{installed}: import failed: {type(error).__name__}: {error}")
    if pinned and installed.split("+")[0] != pinned:
        return Check(name, False, f"{installed} installed, {pinned} pinned")
    return Check(name, True, installed)


def check_all(requirements: Path = REPO_ROOT / "requirements.txt") -> list[Check]:
    return [check_package(name, pin) for name, pin in required_packages(requirements)]


def gpu_report() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU (the cpu profile uses the tiny local model)"
    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability(0)
    return (
        f"{props.name}, {props.total_memory / 1024**3:.1f} GiB, compute capability {major}.{minor}, "
        f"CUDA {torch.version.cuda}"
    )


def offline_report() -> str:
    flags = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    active = [k for k, v in flags.items() if v == "1"]
    return "offline (" + ", ".join(active) + ")" if active else "online: GPU profiles download models from the hub"


def main() -> int:
    checks = check_all()
    for check in checks:
        print(check.line())
    print(f"GPU: {gpu_report()}")
    print(f"Hub: {offline_report()}")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
