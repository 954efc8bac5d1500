"""The solutions -> labs pipeline."""

import re

import nbformat
import pytest

from ftlab import notebooks


def make_solution(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    code = nbformat.v4.new_code_cell(
        "def add_one(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n"
    )
    code.outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    code.execution_count = 3
    check = nbformat.v4.new_code_cell(
        '"""Check: add_one adds one."""\nassert add_one(1) == 2\n'
        "### BEGIN HIDDEN TESTS\nassert add_one(-1) == 0\n### END HIDDEN TESTS\n"
    )
    nb.cells = [nbformat.v4.new_markdown_cell("# 99. test"), code, check]
    nbformat.write(nb, path)


@pytest.fixture
def dirs(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    sol.mkdir()
    make_solution(sol / "99_test.ipynb")
    return sol, labs


def test_build_stubs_solutions_and_removes_hidden_tests(dirs):
    sol, labs = dirs
    notebooks.build(sol, labs)
    lab = nbformat.read(labs / "99_test.ipynb", as_version=4)
    assert "raise NotImplementedError()" in lab.cells[1].source
    assert "return x + 1" not in lab.cells[1].source
    assert "add_one(-1)" not in lab.cells[2].source
    assert "assert add_one(1) == 2" in lab.cells[2].source  # the visible check stays
    assert lab.cells[1].outputs == [] and lab.cells[1].execution_count is None
    # the source is untouched
    assert "return x + 1" in nbformat.read(sol / "99_test.ipynb", as_version=4).cells[1].source


def test_student_copies_carry_no_nbval_markers(dirs):
    sol, labs = dirs
    nb = nbformat.read(sol / "99_test.ipynb", as_version=4)
    nb.cells[2].source = "# NBVAL_CHECK_OUTPUT\n" + nb.cells[2].source
    nbformat.write(nb, sol / "99_test.ipynb")
    notebooks.build(sol, labs)
    lab = nbformat.read(labs / "99_test.ipynb", as_version=4)
    assert "NBVAL" not in lab.cells[2].source and lab.cells[2].source.startswith('"""Check')
    assert not any("NBVAL_" in c.source for p in notebooks.LABS_DIR.glob("*.ipynb")
                   for c in nbformat.read(p, as_version=4).cells)


def test_check_passes_after_build_and_build_is_idempotent(dirs):
    sol, labs = dirs
    notebooks.build(sol, labs)
    assert notebooks.check(sol, labs) == []
    assert notebooks.build(sol, labs) == []  # nothing rewritten


def test_check_fails_on_hand_edit(dirs):
    sol, labs = dirs
    notebooks.build(sol, labs)
    path = labs / "99_test.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source += "\nedited by hand"
    nbformat.write(nb, path)
    assert any("differs" in p for p in notebooks.check(sol, labs))


def test_check_reports_missing_extra_outputs_and_markers(dirs):
    sol, labs = dirs
    assert any("missing" in p for p in notebooks.check(sol, labs))
    notebooks.build(sol, labs)
    path = labs / "99_test.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source = "### BEGIN SOLUTION\nx = 1\n### END SOLUTION"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="x\n")]
    nbformat.write(nb, path)
    nbformat.write(nb, labs / "98_orphan.ipynb")
    problems = notebooks.check(sol, labs)
    assert any("BEGIN SOLUTION" in p for p in problems)
    assert any("has outputs" in p for p in problems)
    assert any("98_orphan" in p and "no source" in p for p in problems)


def test_repository_labs_are_generated_from_solutions():
    """labs/ in this repository is exactly what `python -m ftlab.notebooks build` writes."""
    assert notebooks.solution_paths(), "no solution notebooks found"
    assert notebooks.check() == []


def test_every_solution_has_exercises_with_visible_checks():
    """Every lab has >= 2 exercises, each followed by a check cell with a docstring and an assert."""
    for path in notebooks.solution_paths():
        cells = nbformat.read(path, as_version=4).cells
        exercises = [i for i, c in enumerate(cells) if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]
        assert len(exercises) >= 2, f"{path.name}: {len(exercises)} exercise(s)"
        for i in exercises:
            nxt = next(c for c in cells[i + 1 :] if c.cell_type == "code")
            assert nxt.source.lstrip().startswith('"""'), f"{path.name}: check after cell {i + 1} lacks a docstring"
            assert "assert" in nxt.source.split("### BEGIN HIDDEN TESTS")[0], f"{path.name}: no visible assert"


# --- stored outputs: current, and free of machine paths -------------------------------------


def test_ftlab_imports_follow_the_package_transitively():
    found = notebooks.ftlab_imports("from ftlab import quant, sft\nimport ftlab.lab\n%matplotlib inline\nfrom ftlab.x import y")
    assert found == {"quant", "sft", "lab"}  # ftlab.x does not exist
    closure = notebooks.module_closure({"lab"})
    assert {"lab", "profile", "paths", "tracking", "__init__"} <= closure and "curation" not in closure
    assert notebooks.module_closure({"paths"}) == {"paths", "__init__"}


def test_stale_check_fails_on_a_deliberately_stale_notebook(tmp_path, monkeypatch):
    """Outputs stored before a change to an imported ftlab module (or to the data) are reported."""
    import shutil

    package = tmp_path / "ftlab"
    shutil.copytree(notebooks.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(notebooks, "PACKAGE_DIR", package)
    sol = tmp_path / "solutions"
    sol.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from ftlab import quant\nprint(quant.int_qmax(8))")]
    nb.metadata["ftlab"] = {"inputs": notebooks.input_fingerprint(nb)}
    nbformat.write(nb, sol / "99_test.ipynb")
    assert notebooks.stale_outputs(sol) == []
    (package / "quant.py").write_text((package / "quant.py").read_text() + "\n# changed\n")
    problems = notebooks.stale_outputs(sol)
    assert len(problems) == 1 and "utils/ftlab/quant.py" in problems[0] and "99_test" in problems[0]
    (package / "sft.py").write_text((package / "sft.py").read_text() + "\n# not imported by the notebook\n")
    assert "sft.py" not in notebooks.stale_outputs(sol)[0]
    del nb.metadata["ftlab"]
    nbformat.write(nb, sol / "99_test.ipynb")
    assert "no input fingerprint" in notebooks.stale_outputs(sol)[0]


def test_repository_solutions_outputs_are_current():
    """Every solution was executed against the current ftlab code, data and tiny-model recipe."""
    assert notebooks.stale_outputs() == []


ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(=])/(?:[\w.-]+/){2,}|site-packages|[A-Z]:\\\\Users")


def stored_output_texts(path):
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells, start=1):
        for output in cell.get("outputs", []):
            text = output.get("text", "") + "".join(output.get("data", {}).get("text/plain", ""))
            text += "".join(output.get("data", {}).get("text/markdown", "")) + "".join(output.get("traceback", []))
            yield index, text


def test_no_stored_output_contains_an_absolute_path():
    """Reference outputs print names relative to the repo or cache, never this machine's paths."""
    leaks = [f"{path.name} cell {i}: {ABSOLUTE_PATH.search(t).group(0)!r}"
             for path in notebooks.solution_paths() for i, t in stored_output_texts(path) if ABSOLUTE_PATH.search(t)]
    assert leaks == []


def test_absolute_path_pattern_catches_leaks():
    assert ABSOLUTE_PATH.search("merged into /work/main/.cache/ftlab/runs/08/merged")
    assert ABSOLUTE_PATH.search("  /home/me/.venv/lib/python3.11/site-packages/peft/x.py:3: UserWarning")
    assert not ABSOLUTE_PATH.search("reloaded from merged/: files ['config.json'] and 3/4 tokens, 2/2 s")
