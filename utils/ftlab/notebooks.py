"""Solutions are the source; student labs are generated from them.

Commands::

    python -m ftlab.notebooks build              # write labs/ from solutions/
    python -m ftlab.notebooks check              # fail if labs/ is stale or hand-edited, or outputs are old
    python -m ftlab.notebooks execute [NB ...]   # re-run solutions in place (stored reference outputs)
    python -m ftlab.notebooks stale              # list solutions whose outputs predate their inputs
    python -m ftlab.notebooks sync-colab         # regenerate Colab badges/install cells, then build labs/

The conversion uses nbgrader's own preprocessors (without its database):

- code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes a stub
  that raises ``NotImplementedError``; in Markdown it becomes "YOUR ANSWER HERE";
- ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` blocks are removed;
- outputs and execution counts are cleared.

Stored outputs must come from the current code. ``execute`` writes an input
fingerprint into the notebook's metadata: a hash of every ``ftlab`` module the
notebook imports (directly or through other ``ftlab`` modules), of the shipped
data, and of the tiny model's build recipe. ``stale`` (and ``check``) compares
it with the files as they are now and names what changed.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import nbformat

from ftlab.paths import DATA_DIR, LABS_DIR, SOLUTIONS_DIR

MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
NBVAL_MARKER = re.compile(r"^\s*# NBVAL_[A-Z_]+\s*$")
# Cell metadata that records how a run went, not what the cell is.
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled")


def student_version(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student copy of a solution notebook (a new object; the input is unchanged)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    nb = copy.deepcopy(notebook)
    steps = (
        ClearSolutions(enforce_metadata=False, code_stub={"python": CODE_STUB}),
        ClearHiddenTests(enforce_metadata=False),
        ClearOutput(),
    )
    for step in steps:
        nb, _ = step.preprocess(nb, {})
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":  # nbval's markers are for the reference run, not for learners
            cell.source = "\n".join(line for line in cell.source.split("\n") if not NBVAL_MARKER.match(line))
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("ftlab", None)  # the input fingerprint belongs to the executed solution
    return nb


def render(notebook: nbformat.NotebookNode) -> str:
    """Serialise exactly as written to disk, so check can compare text."""
    return nbformat.writes(notebook) + "\n"


def solution_paths(solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    return sorted(solutions_dir.glob("[0-9A]*.ipynb"))


def build(solutions_dir: Path = SOLUTIONS_DIR, labs_dir: Path = LABS_DIR) -> list[Path]:
    """Write one lab per solution notebook; return the paths written."""
    labs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in solution_paths(solutions_dir):
        target = labs_dir / source.name
        text = render(student_version(nbformat.read(source, as_version=4)))
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def problems_in_lab(path: Path) -> list[str]:
    """What must never appear in a student lab: outputs, counts, solution markers."""
    found = []
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells, start=1):
        for marker in MARKERS:
            if marker in cell.source:
                found.append(f"{path.name} cell {index}: contains '{marker}'")
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            found.append(f"{path.name} cell {index}: has outputs (labs are committed without outputs)")
    return found


def check(solutions_dir: Path = SOLUTIONS_DIR, labs_dir: Path = LABS_DIR) -> list[str]:
    """Every difference between labs/ and what build would write, as messages."""
    problems: list[str] = []
    expected_names = set()
    for source in solution_paths(solutions_dir):
        expected_names.add(source.name)
        target = labs_dir / source.name
        if not target.exists():
            problems.append(f"labs/{source.name} is missing")
            continue
        problems += problems_in_lab(target)
        text = render(student_version(nbformat.read(source, as_version=4)))
        if target.read_text(encoding="utf-8") != text:
            problems.append(f"labs/{source.name} differs from what solutions/{source.name} generates")
    for extra in sorted(labs_dir.glob("*.ipynb")):
        if extra.name not in expected_names:
            problems.append(f"labs/{extra.name} has no source in solutions/")
    return problems


# ---------------------------------------------------------------------------
# Input fingerprints: are the stored outputs older than the code and data?
# ---------------------------------------------------------------------------

PACKAGE_DIR = Path(__file__).resolve().parent


def _code(source: str) -> str:
    """Cell source without IPython magics and shell escapes, so ``ast`` can parse it."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _module_file(parts: list[str], package_dir: Path) -> str | None:
    """``"quant"`` or ``"checks/lab01"`` when ``ftlab.<parts>`` is a module file, or the package's ``__init__``."""
    name = "/".join(parts)
    if (package_dir / f"{name}.py").exists():
        return name
    if (package_dir / name / "__init__.py").exists():
        return f"{name}/__init__"
    return None


def ftlab_imports(source: str, package_dir: Path | None = None) -> set[str]:
    """The ``ftlab`` modules a piece of Python code imports, as paths: ``{"sft", "lab", "checks/lab01"}``."""
    package_dir = package_dir or PACKAGE_DIR
    try:
        tree = ast.parse(_code(source))
    except SyntaxError:
        return set()
    candidates: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates += [a.name.split(".")[1:] for a in node.names if a.name.startswith("ftlab.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ftlab" or node.module.startswith("ftlab."):
                base = node.module.split(".")[1:]
                for alias in node.names:  # `from ftlab.checks import lab01` names a module; `import y` a function
                    candidates.append(base + [alias.name] if _module_file(base + [alias.name], package_dir) else base)
    found = {_module_file(parts, package_dir) for parts in candidates if parts}
    return {name for name in found if name}


def module_closure(names: set[str], package_dir: Path | None = None) -> set[str]:
    """``names`` and every ``ftlab`` module they import, transitively (function-level imports too)."""
    package_dir = package_dir or PACKAGE_DIR
    todo, done = list(names), set()
    while todo:
        name = todo.pop()
        if name in done or not (package_dir / f"{name}.py").exists():
            continue
        done.add(name)
        todo += ftlab_imports((package_dir / f"{name}.py").read_text(encoding="utf-8"), package_dir)
    return done | {"__init__"}


def _digest(paths, base: Path) -> str:
    """Hash of the files' names (relative to ``base``, so equal on every machine) and bytes."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(base).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def input_fingerprint(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """``{input: hash}`` for what the notebook's outputs depend on: its ftlab modules, data, tiny model."""
    from ftlab import tiny

    source = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    modules = module_closure(ftlab_imports(source))
    inputs = {f"utils/ftlab/{m}.py": _digest([PACKAGE_DIR / f"{m}.py"], PACKAGE_DIR) for m in sorted(modules)}
    # the shipped data files; the generator scripts (data/scripts) and the data card do not reach the notebooks
    data_files = [p for p in DATA_DIR.rglob("*") if p.is_file() and p.suffix != ".md"
                  and not {"__pycache__", "scripts"} & set(p.relative_to(DATA_DIR).parts)]
    inputs["data/"] = _digest(data_files, DATA_DIR)
    inputs["tiny model recipe"] = tiny.fingerprint(tiny.TinyConfig(), tiny.corpus_files())
    return inputs


def stale_inputs(path: Path) -> list[str]:
    """What changed since ``path`` was executed (empty when its outputs are current)."""
    nb = nbformat.read(path, as_version=4)
    stored = nb.metadata.get("ftlab", {}).get("inputs")
    if stored is None:
        return ["no input fingerprint (executed before fingerprints existed)"]
    current = input_fingerprint(nb)
    changed = [name for name in current if stored.get(name) != current[name]]
    return changed + [f"{name} (no longer imported)" for name in stored if name not in current]


def stale_outputs(solutions_dir: Path = SOLUTIONS_DIR) -> list[str]:
    """One message per solution notebook whose stored outputs predate a change to its inputs."""
    problems = []
    for path in solution_paths(solutions_dir):
        changed = stale_inputs(path)
        if changed:
            problems.append(
                f"solutions/{path.name}: outputs predate a change to {', '.join(changed)}; "
                f"re-run `python -m ftlab.notebooks execute solutions/{path.name}`"
            )
    return problems


def execute(path: Path, timeout: int = 900) -> float:
    """Run a solution notebook top to bottom and store its outputs; return seconds."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_backup = os.environ.get("FTLAB_TRACKING")
    os.environ["FTLAB_TRACKING"] = "none"  # reference outputs never depend on a wandb account
    started = time.perf_counter()
    try:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    finally:
        if env_backup is None:
            os.environ.pop("FTLAB_TRACKING", None)
        else:
            os.environ["FTLAB_TRACKING"] = env_backup
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata["ftlab"] = {"inputs": input_fingerprint(nb)}
    nbformat.write(nb, path)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="write labs/ from solutions/")
    sub.add_parser("check", help="exit 1 if labs/ differs from what build would write or outputs are stale")
    sub.add_parser("stale", help="list solution notebooks whose outputs predate their code or data")
    sub.add_parser("sync-colab", help="regenerate Colab badges and install cells from [tool.ftlab], then build labs/")
    p_exec = sub.add_parser("execute", help="execute solution notebooks in place")
    p_exec.add_argument("notebooks", nargs="*", type=Path, help="default: every solution notebook")
    args = parser.parse_args(argv)

    if args.command == "build":
        written = build()
        print(f"labs/: {len(written)} notebook(s) written, {len(solution_paths()) - len(written)} unchanged")
        return 0
    if args.command == "sync-colab":
        from ftlab import colab

        synced = colab.sync()
        print(f"solutions/: Colab cells regenerated in {len(synced)} notebook(s)")
        print(f"labs/: {len(build())} notebook(s) written")
        return 0
    if args.command == "stale":
        problems = stale_outputs()
        print("\n".join(problems) if problems else "every solution's outputs are current")
        return 1 if problems else 0
    if args.command == "check":
        problems = check() + stale_outputs()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m ftlab.notebooks build` to regenerate labs/ from solutions/", file=sys.stderr)
            return 1
        print(f"labs/ is up to date with solutions/ ({len(solution_paths())} notebooks)")
        return 0
    for path in args.notebooks or solution_paths():
        seconds = execute(Path(path))
        print(f"executed {path} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
