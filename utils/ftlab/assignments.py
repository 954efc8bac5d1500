"""Student copies of the graded assignments, generated from the instructor notebooks (like labs/ from solutions/).

Layout: ``assignments/<a0|a1|a2>/instructor/<NAME>.ipynb`` is the source (solutions
and ``### BEGIN HIDDEN TESTS`` blocks); ``assignments/<a>/<NAME>.ipynb`` is the
starter notebook students get, written by ``ftlab.notebooks.student_version``
(solution blocks become ``raise NotImplementedError()``, hidden tests removed,
outputs cleared). Commands::

    python -m ftlab.assignments build              # write the starter notebooks
    python -m ftlab.assignments check              # exit 1 if a starter differs from its source (CI)
    python -m ftlab.assignments release OUT_DIR    # copy what students get: no instructor/ folder

The instructor folders never leave the instructor's copy of the course: ``release``
skips them, and the grader reads the hidden tests from them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

import nbformat

from ftlab.notebooks import MARKERS, render, student_version
from ftlab.paths import REPO_ROOT

ASSIGNMENTS_DIR = REPO_ROOT / "assignments"
INSTRUCTOR = "instructor"


def sources(root: Path = ASSIGNMENTS_DIR) -> list[Path]:
    return sorted(root.glob(f"a*/{INSTRUCTOR}/*.ipynb"))


def starter_path(source: Path) -> Path:
    return source.parent.parent / source.name


def build(root: Path = ASSIGNMENTS_DIR) -> list[Path]:
    written = []
    for source in sources(root):
        target, text = starter_path(source), render(student_version(nbformat.read(source, as_version=4)))
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def check(root: Path = ASSIGNMENTS_DIR) -> list[str]:
    problems = []
    for source in sources(root):
        target = starter_path(source)
        rel = target.relative_to(root.parent)
        if not target.exists():
            problems.append(f"{rel} is missing")
            continue
        text = target.read_text(encoding="utf-8")
        if text != render(student_version(nbformat.read(source, as_version=4))):
            problems.append(f"{rel} differs from what {source.relative_to(root.parent)} generates")
        if any(marker in text for marker in MARKERS[2:]):
            problems.append(f"{rel} contains hidden tests")
    return problems


def release(out_dir: Path, root: Path = ASSIGNMENTS_DIR) -> list[Path]:
    """Copy the student-facing files (briefs, starters, rubrics) to ``out_dir``; never an instructor folder."""
    out_dir = Path(out_dir)
    copied = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() or INSTRUCTOR in rel.parts or path.suffix == ".py" or rel.name == "README.md" and len(rel.parts) == 1:
            continue
        target = out_dir / "assignments" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(target)
    for md in sorted((root.parent / "rubrics").glob("*.md")):
        target = out_dir / "rubrics" / md.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(md, target)
        copied.append(target)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.assignments", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("build", "check", "release"))
    parser.add_argument("out", nargs="?", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"assignments/: {len(build())} starter notebook(s) written")
        return 0
    if args.command == "release":
        if args.out is None:
            parser.error("release needs OUT_DIR")
        print(f"{len(release(args.out))} files copied to {args.out} (no instructor folders)")
        return 0
    problems = check()
    print("\n".join(problems) if problems else "assignment starters are up to date", file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
