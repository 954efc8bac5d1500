"""Golden submissions: each is graded from its files and must earn exactly what its test says.

The fixtures live in tests/golden/ (``make_golden.py`` rebuilds the A0 ones and
the derived A1 ones; the A1/A2 references come from the starter notebooks' own CPU
runs). Nothing here trains a model; the A0 cases re-execute tiny notebooks in the
sandbox with short limits.
"""

import csv
import json
from pathlib import Path

import pytest

from ftlab import grade, rubric, sandbox

GOLDEN = Path(__file__).parent / "golden"
LIMITS = sandbox.Limits(cell_timeout=2, total_timeout=30, memory_mb=1024, max_output=5000)
OPTIONS = grade.Options(limits=LIMITS)

# name: (status, automatic points, words the report must contain)
A0_CASES = {
    "solution": ("graded", 60, []),
    "empty": ("graded", 0, ["NotImplementedError"]),
    "broken": ("graded", 50, ["q1_test: error", "broken on purpose"]),
    "tampered": ("graded", 50, ["q3_test: error"]),  # deleted q2 test re-injected (passes), edited q3 test ignored
    "hang": ("graded", 30, ["timeout", "q4_test: not_run"]),  # q1-q3 ran before the hang; nothing after it counts
    "flood": ("graded", 60, []),  # 8 MB printed, truncated, answers still right
    "memory": ("graded", 50, ["memory", "q5_test"]),
    "network": ("graded", 50, ["네트워크 접속 시도", "example.com"]),
    "malformed": ("failed", 0, ["손상된 노트북 JSON"]),
    "escape.zip": ("failed", 0, ["압축 폴더 밖"]),
}
A1_CASES = {
    "reference": ("graded", 50, []),
    "weak": ("graded", None, []),  # an honest short run: partial credit, checked below
    "tampered": ("graded", 50, ["manifest", "fact_accuracy(after) = 0.950", "0.600"]),
    "malformed": ("failed", 0, ["predictions.jsonl 3번째 줄"]),
}


def _grade(assignment, name):
    rub = rubric.load(assignment)
    path = GOLDEN / assignment / name
    before = grade.tree_digest(path)
    result = grade.grade_one(path, assignment, rub, OPTIONS)
    assert grade.tree_digest(path) == before == result.digest_before == result.digest_after, "the grader changed a submission"
    return result, rub


def _text(result, rub):
    return json.dumps(grade.gradescope_json(result), ensure_ascii=False) + grade.feedback_markdown(result, rub)


@pytest.mark.parametrize("name", sorted(A0_CASES))
def test_a0_golden(name):
    status, points, words = A0_CASES[name]
    result, rub = _grade("a0", name)
    assert (result.status, result.total("auto")) == (status, points), result.flags + [result.message]
    text = _text(result, rub)
    for word in words:
        assert word in text, word
    if name == "escape.zip":
        assert not (GOLDEN / "escaped.txt").exists() and not (GOLDEN.parent / "escaped.txt").exists()
    if name == "flood":
        assert all(len(c.output) <= LIMITS.max_output for c in result.execution.cells)


@pytest.mark.parametrize("name", sorted(A1_CASES))
def test_a1_golden(name):
    status, points, words = A1_CASES[name]
    result, rub = _grade("a1", name)
    assert result.status == status, result.message
    if points is not None:
        assert result.total("auto") == points, [(r.item.id, r.points, r.evidence) for r in result.items]
    text = _text(result, rub)
    for word in words:
        assert word in text, word


def test_a1_weak_run_earns_partial_credit():
    result, _ = _grade("a1", "weak")
    assert 0 < result.total("auto") < result.max_total("auto")
    assert not result.flags  # honest: its claims match its predictions


def test_a1_reference_recomputes_its_claims():
    result, _ = _grade("a1", "reference")
    claimed = json.loads((GOLDEN / "a1" / "reference" / "results.json").read_text(encoding="utf-8"))["metrics"]
    assert result.claims == [] and result.recomputed["after"]["fact_accuracy"] == pytest.approx(claimed["after"]["fact_accuracy"])


@pytest.mark.parametrize("name, points, evidence", [
    ("oracle", 65, ["Wilcoxon p=", "McNemar p=1"]),  # curt -> warm texts of the same facts: every automatic point
    ("degraded", 30, ["반복률 0.571", "하락 +100.0%p"]),  # warm but ignorant and looping: tone points only
    # a real CPU run that trains on the given pairs only (an earlier starter: beta 0.1/0.5, lr 2e-3, trainable
    # embeddings, sigmoid+sft): warmer, but the tiny model forgets its facts (0.94 -> 0.03); weak, honest, partial credit
    ("cpu_run", 35, ["Wilcoxon p=9.31e-14", "0.941 → 0.030"]),
])
def test_a2_synthetic_golden(name, points, evidence):
    result, rub = _grade("a2", name)
    assert (result.status, result.total("auto")) == ("graded", points), [(r.item.id, r.points) for r in result.items]
    assert result.claims == []
    text = _text(result, rub)
    for word in evidence:
        assert word in text, word


def test_a2_reference_earns_full_automatic_points():
    # the instructor notebook's own CPU run (designed pairs, section 2): warm 0.01 -> 0.98, facts 0.960 -> 0.941
    result, rub = _grade("a2", "reference")
    assert result.status == "graded" and result.total("auto") == rub.auto_points, \
        [(r.item.id, r.points, r.evidence) for r in result.items if r.item.judge == "auto"]
    assert result.claims == []
    text = _text(result, rub)
    for word in ("0.960 → 0.941", "0.083 → 0.333", "x1.35"):
        assert word in text, word


def test_batch_grades_every_golden_and_keeps_manual_grades(tmp_path):
    inputs = [GOLDEN / "a0" / n for n in sorted(A0_CASES)]
    summary = grade.grade_batch(inputs, "a0", tmp_path, OPTIONS, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "grades.csv", encoding="utf-8")))
    assert [r["submission"] for r in rows] == [n.removesuffix(".zip") for n in sorted(A0_CASES)]
    assert (summary.graded, summary.failed) == (8, 2)
    for name in rows:
        report = json.loads((tmp_path / name["submission"] / "results.json").read_text(encoding="utf-8"))
        assert {"score", "output", "tests"} <= set(report) and all(
            {"name", "score", "max_score", "status", "output"} <= set(t) for t in report["tests"])
    sheet = tmp_path / "manual_grades.csv"
    manual = list(csv.DictReader(open(sheet, encoding="utf-8")))
    for row in manual:
        if row["submission"] == "solution" and row["item"] == "i1":
            row["points"], row["comment"] = "8", "근거가 좋습니다"
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=grade.MANUAL_COLUMNS)
        writer.writeheader()
        writer.writerows(manual)
    grade.grade_batch([GOLDEN / "a0" / "solution"], "a0", tmp_path, OPTIONS, progress=False)  # a re-run
    row = next(r for r in csv.DictReader(open(tmp_path / "grades.csv", encoding="utf-8")))
    assert (row["auto_score"], row["manual_score"], row["total"]) == ("60", "8", "68")
    assert any(r["points"] == "8" for r in csv.DictReader(open(sheet, encoding="utf-8")))
    assert "근거가 좋습니다" in (tmp_path / "solution" / "feedback.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("cells, status, points", [(["x = 1", "print(x)"], "graded", 50),
                                                    (["x = 1", "raise RuntimeError('died')"], "failed", 0),
                                                    (["import time\ntime.sleep(30)"], "failed", 0)])
def test_a1_reexecution_failure_earns_no_automatic_points(tmp_path, cells, status, points):
    """--execute on a copy of the reference whose notebook is replaced by a tiny one (no training in CI)."""
    import shutil

    import nbformat

    from ftlab import submission

    bundle = tmp_path / "sub"
    shutil.copytree(GOLDEN / "a1" / "reference", bundle)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, bundle / "notebook.ipynb")
    submission.write_manifest(bundle)
    result = grade.grade_one(bundle, "a1", rubric.load("a1"), grade.Options(execute=True, limits=LIMITS))
    assert (result.status, result.total("auto")) == (status, points), result.message
    if status == "failed":
        assert "재실행 실패" in result.message


def test_command_line_grades_a_batch_and_prints_a_summary(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ftlab.grade", "--assignment", "a1", str(GOLDEN / "a1" / "reference"),
                          str(GOLDEN / "a0" / "escape.zip"), "--out", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "graded 1, failed 1" in out.stdout
    assert len(list(csv.DictReader(open(tmp_path / "grades.csv", encoding="utf-8")))) == 2
