"""Colab badges and install cells come from [tool.ftlab] in pyproject.toml."""

import copy
import subprocess
import sys

import nbformat
import pytest

from ftlab import colab
from ftlab.course import Course, load_course
from ftlab.paths import LABS_DIR, SOLUTIONS_DIR

OLD_REPO = "https://github.com/someone/old-course"


def test_course_url_is_configured_once():
    course = load_course()
    assert course.repository.startswith("https://github.com/") and course.slug.count("/") == 1
    assert course.colab_url("labs/00_setup.ipynb") == (
        f"https://colab.research.google.com/github/{course.slug}/blob/{course.branch}/labs/00_setup.ipynb")


def test_bad_repository_names_the_fix(tmp_path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[tool.ftlab]\nrepository = "github.com/x"\n')
    with pytest.raises(ValueError, match=r"\[tool.ftlab\] repository"):
        load_course(bad)


def make_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# 99. 제목\n\n한 문장.\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            "(https://colab.research.google.com/github/someone/old-course/blob/main/labs/99_x.ipynb)\n\n| a |"),
        nbformat.v4.new_markdown_cell("## 학습 목표"),
        nbformat.v4.new_markdown_cell("**Colab에서 열었다면** old note"),
        nbformat.v4.new_code_cell(f'# Colab only: old\nCOURSE_REPO = "{OLD_REPO}"\n'),
        nbformat.v4.new_code_cell("x = 1"),
    ]
    return nb


def test_sync_rewrites_badge_note_and_install_cell():
    course = Course("https://github.com/me/course", "dev")
    nb = make_notebook()
    assert colab.sync_notebook(nb, "99_x.ipynb", course)
    assert "https://colab.research.google.com/github/me/course/blob/dev/labs/99_x.ipynb" in nb.cells[0].source
    assert nb.cells[0].source.endswith("| a |") and "old-course" not in nb.cells[0].source
    assert nb.cells[2].source == colab.INSTALL_NOTE and "다시 시작" in nb.cells[2].source
    assert nb.cells[3].source == colab.install_cell_source(course) and nb.cells[4].source == "x = 1"
    assert not colab.sync_notebook(nb, "99_x.ipynb", course)  # idempotent
    assert colab.notebook_urls(nb) and all(url in (course.repository, course.colab_url("labs/99_x.ipynb"))
                                           for _, url in colab.notebook_urls(nb))


def test_badge_is_added_when_missing():
    course = Course("https://github.com/me/course", "main")
    nb = make_notebook()
    nb.cells[0].source = "# 99. 제목\n\n한 문장.\n\n| a |"
    colab.sync_notebook(nb, "99_x.ipynb", course)
    assert nb.cells[0].source.split("\n\n")[2] == colab.badge_markdown(course, "99_x.ipynb")


def test_check_reports_a_stale_url(tmp_path):
    path = tmp_path / "99_x.ipynb"
    nbformat.write(make_notebook(), path)
    problems = colab.check_notebook_urls([path], Course("https://github.com/me/course", "main"))
    assert any(OLD_REPO in p for p in problems) and "sync-colab" in problems[-1]


def test_install_cell_does_nothing_outside_colab(tmp_path):
    """The generated cell runs on this machine (not Colab): no output, no clone, no install."""
    source = colab.install_cell_source(load_course())
    compile(source, "install_cell", "exec")
    result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    # the steps a Colab run needs, in order: clone, install, record, restart; a rerun skips them
    for needle in ("git", "requirements-gpu.txt", "INSTALLED", "os.kill", "os.path.exists(INSTALLED)"):
        assert needle in source


def test_versions_report_lists_pinned_packages(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("# comment\nnbformat==5.11.1  # why\nno-such-package-xyz==1.0\n")
    report = colab.installed_versions(req)
    assert "nbformat " in report and "no-such-package-xyz (not installed)" in report and "numpy" in report


def test_every_badge_and_clone_url_matches_the_configured_repository():
    """Fails until `python -m ftlab.notebooks sync-colab` has been run after a change of [tool.ftlab]."""
    paths = sorted(SOLUTIONS_DIR.glob("*.ipynb")) + sorted(LABS_DIR.glob("*.ipynb"))
    assert paths
    problems = colab.check_notebook_urls(paths)
    assert not problems, "\n".join(problems)


def test_sync_colab_command_fixes_a_copy_of_the_course(tmp_path):
    """`python -m ftlab.notebooks sync-colab` on a copy (FTLAB_REPO): afterwards every URL agrees."""
    import os
    import shutil

    from ftlab.paths import REPO_ROOT

    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(SOLUTIONS_DIR, tmp_path / "solutions", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (tmp_path / "labs").mkdir()
    env = dict(os.environ, FTLAB_REPO=str(tmp_path), PYTHONPATH=str(REPO_ROOT / "utils"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "ftlab.notebooks", "sync-colab"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    paths = sorted((tmp_path / "solutions").glob("*.ipynb")) + sorted((tmp_path / "labs").glob("*.ipynb"))
    assert len(paths) == 2 * len(list(SOLUTIONS_DIR.glob("*.ipynb")))
    assert colab.check_notebook_urls(paths, load_course(tmp_path / "pyproject.toml")) == []
    for path in sorted(SOLUTIONS_DIR.glob("*.ipynb")):  # only the Colab cells changed
        before, after = nbformat.read(path, 4), nbformat.read(tmp_path / "solutions" / path.name, 4)
        changed = [i for i, (a, b) in enumerate(zip(before.cells, after.cells)) if a.source != b.source]
        assert len(before.cells) == len(after.cells) and set(changed) <= {0, 2, 3}, (path.name, changed)
        assert [c.get("outputs") for c in before.cells] == [c.get("outputs") for c in after.cells]
