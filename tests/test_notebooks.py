"""The solutions -> labs pipeline."""

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
