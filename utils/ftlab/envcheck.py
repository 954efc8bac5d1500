"""The environment report of lab 00: every package the course needs, with [OK]/[FAIL].

Run it from a shell too: ``python -m ftlab.envcheck``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ftlab.paths import REPO_ROOT

# import name -> distribution name, for packages whose names differ
IMPORT_NAMES = {"koreanize-matplotlib": "koreanize_matplotlib", "pyyaml": "yaml", "pytest-xdist": "xdist"}
OPTIONAL_GPU = ("unsloth",)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name:<22} {self.detail}"


def required_packages(requirements: Path = REPO_ROOT / "requirements.txt") -> list[tuple[str, str | None]]:
    """(name, pinned version or None) for every line of requirements.txt that applies here.

    Lines whose environment marker does not hold on this interpreter (``; python_version < "3.11"``)
    are skipped, as pip skips them.
    """
    from packaging.markers import Marker

    packages = []
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
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


# CPU instruction sets the course cares about: name -> the /proc/cpuinfo flags (any one suffices)
CPU_FEATURES = {
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_tile"),
}
# macOS (Intel) spells flags in upper case and without some underscores (``sysctl machdep.cpu.*features``)
_MACOS_FLAGS = {"avx512bf16": "avx512_bf16", "amxbf16": "amx_bf16", "amxtile": "amx_tile"}


def _cpu_flags(cpuinfo_text: str | None) -> set[str] | None:
    """The CPU's feature flags (lower case), or None when they cannot be read here."""
    if cpuinfo_text is None:
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            try:
                cpuinfo_text = cpuinfo.read_text(errors="replace")
            except OSError:
                return None
        elif sys.platform == "darwin":
            import subprocess

            try:
                out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                     capture_output=True, text=True, timeout=5)
            except (OSError, subprocess.SubprocessError):
                return None
            if out.returncode != 0 or not out.stdout.strip():
                return None  # Apple silicon has no x86 flags
            return {_MACOS_FLAGS.get(w, w) for w in out.stdout.lower().split()}
        else:
            return None
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.lower().split())
    return None


def cpu_features(cpuinfo_text: str | None = None) -> dict[str, bool | None]:
    """AVX2, AVX-512, AVX-512 BF16 and AMX support: True/False, or None when unknown.

    ``cpuinfo_text`` is the text of ``/proc/cpuinfo`` (read from the machine when
    None; on macOS ``sysctl machdep.cpu.features`` is asked instead; elsewhere
    every feature is unknown). AMX counts when ``amx_bf16`` or ``amx_tile`` is listed.
    The extra key ``x86`` says whether the flags are an x86 CPU's (``sse2`` listed).
    """
    flags = _cpu_flags(cpuinfo_text)
    features = {name: None if flags is None else any(f in flags for f in names)
                for name, names in CPU_FEATURES.items()}
    features["x86"] = None if flags is None else "sse2" in flags
    return features


def bitsandbytes_avx512bf16() -> bool | None:
    """Whether bitsandbytes itself detects AVX-512 BF16 (its fused 4-bit CPU kernel); None if it cannot say."""
    try:
        from bitsandbytes.functional import has_avx512bf16

        return bool(has_avx512bf16())
    except Exception:  # noqa: BLE001 - a missing or broken bitsandbytes only makes this unknown
        return None


def cpu_report(features: dict[str, bool | None] | None = None, bnb_bf16: bool | None = None,
               *, ask_bitsandbytes: bool = True) -> str:
    """One line: the instruction sets found and what they mean for the course.

    ``features`` defaults to :func:`cpu_features` of this machine; ``bnb_bf16`` to
    :func:`bitsandbytes_avx512bf16` unless ``ask_bitsandbytes`` is False.
    """
    features = cpu_features() if features is None else features
    if bnb_bf16 is None and ask_bitsandbytes:
        bnb_bf16 = bitsandbytes_avx512bf16()

    def mark(name: str) -> str:
        return {True: "yes", False: "no", None: "?"}[features.get(name)]

    found = (f"AVX2 {mark('avx2')}, AVX-512 {mark('avx512f')}, AVX-512 BF16 {mark('avx512_bf16')}, "
             f"AMX {mark('amx')}")
    if features.get("avx512_bf16") is None:
        meaning = "instruction sets unknown on this system: the CPU profile computes in fp32 either way"
    elif features.get("x86") is False:
        meaning = ("not an x86 CPU: bitsandbytes' fused 4-bit CPU kernel (AVX-512 BF16) does not apply; "
                   "the CPU profile computes in fp32")
    elif features["avx512_bf16"]:
        meaning = ("bitsandbytes can use its fused 4-bit CPU kernel (bf16) for inference; the course turns it "
                   "off (ftlab.quant.set_fused_cpu_kernel) so every CPU computes the same numbers")
    else:
        meaning = "bf16 matmuls are emulated (slow): the CPU profile computes in fp32"
    if features.get("amx"):
        meaning += "; AMX tiles can speed up bf16 matmuls in torch (oneDNN)"
    if features.get("avx2") is False:
        meaning += "; no AVX2: torch falls back to its slower generic CPU kernels"
    if bnb_bf16 is None:
        bnb = "could not be asked" if ask_bitsandbytes else "not asked"
    else:
        bnb = "detects AVX-512 BF16" if bnb_bf16 else "does not detect AVX-512 BF16"
    return f"{found}: {meaning} (bitsandbytes {bnb})"


def offline_report() -> str:
    flags = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    active = [k for k, v in flags.items() if v == "1"]
    return "offline (" + ", ".join(active) + ")" if active else "online: GPU profiles download models from the hub"


def main() -> int:
    from ftlab.lab import quiet_libraries

    quiet_libraries()  # e.g. bitsandbytes' notice about the optional `kernels` package
    checks = check_all()
    for check in checks:
        print(check.line())
    print(f"GPU: {gpu_report()}")
    print(f"CPU: {cpu_report()}")
    print(f"Hub: {offline_report()}")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
