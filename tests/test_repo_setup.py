"""The README's two set-up commands exist, and CI runs exactly the README's test command."""

import re

from ftlab.paths import REPO_ROOT


def readme_commands():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no set-up block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_lab_and_test_commands():
    assert readme_commands() == ["bash run.sh lab", "bash run.sh test"]


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    steps = [l.strip() for l in ci.splitlines() if l.strip() and not l.strip().startswith(("#", "set ", "cd "))]
    assert steps == [readme_commands()[1]]


def test_requirements_are_exact_pins_with_cpu_torch():
    lines = [l.split("#")[0].strip() for l in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    lines = [l for l in lines if l]
    assert "torch==2.13.0" in lines
    assert all("==" in l for l in lines), [l for l in lines if "==" not in l]


def test_gpu_requirements_pin_unsloth_compatible_versions():
    pins = dict(l.split("==") for l in (REPO_ROOT / "requirements-gpu.txt").read_text().splitlines()
                if "==" in l and not l.startswith("#"))
    from packaging.version import Version

    assert pins["unsloth"]
    assert Version(pins["trl"]) <= Version("1.15.0") and Version(pins["transformers"]) <= Version("5.17.0")
    assert "torch" not in pins  # Colab's CUDA torch stays
