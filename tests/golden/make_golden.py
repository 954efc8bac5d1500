"""Rebuild the golden A0 submissions and the derived A1/A2 ones (the grader's test fixtures).

    python tests/golden/make_golden.py

A0 goldens are made from the instructor notebook (no training). The A1/A2
references (``a1/reference``, ``a1/weak``, ``a2/reference``) are bundles written by
the starter notebooks themselves on the CPU profile (see assignments/README.md,
"참조 제출물"); this script only derives the tampered and malformed copies from them.
Each golden's expected score and message are asserted in tests/test_grade_golden.py.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "utils"))

from ftlab import submission  # noqa: E402
from ftlab.assignments import ASSIGNMENTS_DIR  # noqa: E402

INSTRUCTOR_A0 = ASSIGNMENTS_DIR / "a0" / "instructor" / "A0_problem_set.ipynb"


def _without_hidden(nb):
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput

    nb = copy.deepcopy(nb)
    for step in (ClearHiddenTests(enforce_metadata=False), ClearOutput()):
        nb, _ = step.preprocess(nb, {})
    return nb


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("ftlab", {}).get("grade_id") == grade_id)


def _bundle(name: str, nb, results: dict | None = None) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "A0_problem_set.ipynb"
        nbformat.write(nb, path)
        return submission.write_bundle(HERE / "a0" / name, "a0", results or {"profile": "cpu"},
                                       report="A0", notebook=path)


def make_a0() -> None:
    solved = _without_hidden(nbformat.read(INSTRUCTOR_A0, as_version=4))  # what a student who solved everything hands in
    shutil.rmtree(HERE / "a0", ignore_errors=True)
    _bundle("solution", solved)
    from ftlab.notebooks import student_version

    _bundle("empty", student_version(nbformat.read(INSTRUCTOR_A0, as_version=4)))  # the starter, untouched

    broken = copy.deepcopy(solved)  # q1's function raises
    _cell(broken, "q1").source = 'def llama_param_count(config):\n    raise RuntimeError("broken on purpose")'
    _bundle("broken", broken)

    tampered = copy.deepcopy(solved)  # q2's test cell deleted, q3's test "passes" and its answer is wrong
    tampered.cells.remove(_cell(tampered, "q2_test"))
    _cell(tampered, "q3_test").source = "assert True  # edited by the student"
    _cell(tampered, "q3").source = "Q3_FULL_FT_GIB = 14.0  # wrong: weights only"
    _bundle("tampered", tampered)

    hang = copy.deepcopy(solved)  # q4's cell never ends (and swallows the timeout)
    _cell(hang, "q4").source = ("import time\nwhile True:\n    try:\n        time.sleep(0.2)\n"
                                "    except BaseException:\n        pass\n" + _cell(solved, "q4").source)
    _bundle("hang", hang)

    flood = copy.deepcopy(solved)  # prints 8 MB, then answers q1 correctly
    _cell(flood, "q1").source = "print('x' * 8_000_000)\n" + _cell(solved, "q1").source
    _bundle("flood", flood)

    memory = copy.deepcopy(solved)  # q5's cell allocates 8 GiB first
    _cell(memory, "q5").source = "_big = bytearray(8 * 1024**3)\n" + _cell(solved, "q5").source
    _bundle("memory", memory)

    network = copy.deepcopy(solved)  # q6's cell downloads something first
    _cell(network, "q6").source = ("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=3).read()\n"
                                   + _cell(solved, "q6").source)
    _bundle("network", network)

    malformed = _bundle("malformed", solved)  # damaged notebook JSON, manifest rewritten to match
    (malformed / "notebook.ipynb").write_text('{"cells": [ {"cell_type": "code", "source": ', encoding="utf-8")
    submission.write_manifest(malformed)

    with zipfile.ZipFile(HERE / "a0" / "escape.zip", "w") as archive:  # an entry that climbs out of its folder
        for path in sorted((HERE / "a0" / "solution").iterdir()):
            archive.write(path, f"escape/{path.name}")
        archive.writestr("escape/../../escaped.txt", "written outside the extraction folder")


def make_a1_derived() -> None:
    ref = HERE / "a1" / "reference"
    tampered = HERE / "a1" / "tampered"  # claims figures its predictions do not support, edited by hand
    shutil.rmtree(tampered, ignore_errors=True)
    shutil.copytree(ref, tampered)
    results = json.loads((tampered / "results.json").read_text(encoding="utf-8"))
    results["metrics"]["after"]["fact_accuracy"] = 0.95
    (tampered / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    malformed = HERE / "a1" / "malformed"  # line 3 of predictions.jsonl is not JSON
    shutil.rmtree(malformed, ignore_errors=True)
    shutil.copytree(ref, malformed)
    lines = (malformed / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:40]
    (malformed / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    submission.write_manifest(malformed)


def make_a2_synthetic() -> None:
    """A2 bundles whose answers are the test pairs' own texts (no model): they pin the A2 grader's bands.

    ``oracle``: before = the curt ``rejected`` answer, after = the warm ``chosen`` one (same facts; polite refusals
    out of the KB): everything the rubric measures improves, so it earns every automatic point.
    ``degraded``: after = the chosen answer with its fact cut out and repeated: warm but ignorant and looping.
    """
    from ftlab import data

    pairs = sorted(data.load_preference_pairs("test"), key=lambda p: p["id"])
    before = [submission.prediction_row(p, "before", p["rejected"]) for p in pairs]
    results = {"profile": "synthetic", "config": {"note": "answers copied from data/preference/pairs_test.jsonl"}}
    with tempfile.TemporaryDirectory() as tmp:
        nb = Path(tmp) / "A2_dpo_tone.ipynb"
        nbformat.write(nbformat.v4.new_notebook(), nb)
        after = [submission.prediction_row(p, "after", p["chosen"]) for p in pairs]
        metrics = {"before": _a2_scores(before), "after": _a2_scores(after)}
        submission.write_bundle(HERE / "a2" / "oracle", "a2", {**results, "metrics": metrics}, before + after, "oracle", nb)
        warm = "걱정되셨죠? 괜찮아요. "
        after = [submission.prediction_row(p, "after", warm * 4 + "도와드릴게요.") for p in pairs]
        metrics = {"before": _a2_scores(before), "after": _a2_scores(after)}
        submission.write_bundle(HERE / "a2" / "degraded", "a2", {**results, "metrics": metrics}, before + after, "degraded", nb)


def _a2_scores(rows):
    from ftlab import alignment

    return alignment.score_answers(rows)


if __name__ == "__main__":
    make_a0()
    make_a1_derived()
    make_a2_synthetic()
    print("golden submissions written under", HERE)
