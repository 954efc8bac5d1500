"""The grader's parts: rubrics, bundles, zips, the sandbox, manual grades (fast, no models)."""

import csv
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from ftlab import assignments, grade, rubric, sandbox, submission

FAST = sandbox.Limits(cell_timeout=2, total_timeout=20, memory_mb=1024, max_output=2000)


# --- rubrics ---------------------------------------------------------------


def test_rubric_markdown_is_generated_from_toml():
    assert rubric.check() == [], "run `python -m ftlab.rubric build`"


@pytest.mark.parametrize("name, weights", [("a1", [40, 40, 20]), ("a2", [40, 40, 20]), ("a0", [60, 40])])
def test_rubric_weights_follow_the_criteria(name, weights):
    rub = rubric.load(name)
    assert [c.points for c in rub.criteria] == weights and rub.total == 100


def test_rubric_titles_keep_the_criteria_wording():
    a1, a2 = rubric.load("a1"), rubric.load("a2")
    assert [c.title for c in a1.criteria] == ["파인튜닝 성능", "정렬 효과 및 도메인 적응도 분석", "기술 리포트 및 코드 품질"]
    assert [c.title for c in a2.criteria] == ["정렬 효과성", "지식 유지 능력", "분석의 깊이"]
    assert "검증 데이터셋에서의 성능 향상이 통계적으로 유의미한가?" in [i.question for _, i in a1.items]


def test_every_auto_measurement_exists():
    for name in ("a0", "a1", "a2"):
        for _, item in rubric.load(name).items:
            if item.judge == "auto" and not item.tests:
                assert item.measurement in grade.MEASUREMENTS, (name, item.id)


def test_rubric_that_does_not_add_up_is_rejected():
    raw = {"id": "x", "title": "t", "total": 10, "criteria": [{"id": "c", "title": "c", "points": 10, "items": [
        {"id": "i", "question": "q", "points": 5, "judge": "manual", "bands": [{"points": 5, "label": "ok"}]}]}]}
    with pytest.raises(rubric.RubricError, match="add up to 5"):
        rubric.parse(raw)


def test_bands_match_levels_numbers_and_catch_all():
    item = next(i for _, i in rubric.load("a1").items if i.id == "accuracy_after")
    assert [item.band_for(v).points for v in (0.6, 0.4, 0.2, 0.0, None)] == [15, 15, 8, 0, 0]


# --- starters and bundles --------------------------------------------------


def test_starter_notebooks_are_generated_without_hidden_tests():
    assert assignments.check() == [], "run `python -m ftlab.assignments build`"


def test_release_leaves_out_instructor_copies(tmp_path):
    copied = assignments.release(tmp_path)
    assert copied and not any("instructor" in p.parts for p in copied)
    assert all("HIDDEN TESTS" not in p.read_text(encoding="utf-8", errors="ignore") for p in copied)


def _bundle(tmp_path, predictions):
    nb = tmp_path / "x.ipynb"
    nb.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', encoding="utf-8")
    return submission.write_bundle(tmp_path / "sub", "a1", {"metrics": {}}, predictions, "# r", notebook=nb)


ROWS = [{"id": "q1", "stage": s, "kind": "in_kb", "fact_id": "F001", "question": "?", "answer": "a"} for s in ("before", "after")]


def test_bundle_manifest_detects_edits_and_pack_zips(tmp_path):
    bundle = _bundle(tmp_path, ROWS)
    assert sorted(p.name for p in bundle.iterdir()) == sorted(submission.BUNDLE_FILES + (submission.MANIFEST,))
    assert submission.verify_manifest(bundle) == []
    assert json.loads((bundle / "results.json").read_text())["versions"]["python"]
    zipped = submission.pack(bundle)
    assert zipfile.ZipFile(zipped).namelist()[0].startswith("sub/")
    (bundle / "report.md").write_text("changed", encoding="utf-8")
    assert any("report.md changed" in p for p in submission.verify_manifest(bundle))


def test_bundle_refuses_unpaired_predictions(tmp_path):
    with pytest.raises(ValueError, match="same questions"):
        _bundle(tmp_path, ROWS[:1])


# --- zips ------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_zip_entries_that_escape_are_refused(tmp_path, entry):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("s/ok.txt", "fine")
        archive.writestr(entry, "bad")
    dest = tmp_path / "out" / "x"
    dest.mkdir(parents=True)
    with pytest.raises(grade.UnsafeZipError):
        grade.safe_extract(path, dest)
    assert not list((tmp_path / "out").rglob("evil.txt")) and not (tmp_path / "evil.txt").exists()


def test_zip_symlink_entry_is_refused(tmp_path):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("s/link")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(grade.UnsafeZipError, match="symlink"):
        grade.safe_extract(path, tmp_path / "out")


# --- claims ------------------------------------------------------------------


def test_claim_gaps_flag_only_real_differences():
    recomputed = {"before": {"fact_accuracy": 0.0}, "after": {"fact_accuracy": 0.6}}
    assert grade.claim_gaps({"after": {"fact_accuracy": 0.6001}}, recomputed) == []
    gaps = grade.claim_gaps({"after": {"fact_accuracy": 0.9, "unknown": 1}}, recomputed)
    assert gaps == [{"stage": "after", "metric": "fact_accuracy", "claimed": 0.9, "recomputed": 0.6}]


def test_version_drift_names_unpinned_versions():
    assert grade.version_drift({"transformers": "5.23.0", "torch": "2.13.0+cpu"}) == []
    assert "peft 0.1.0" in grade.version_drift({"peft": "0.1.0"})[0]


# --- sandbox ---------------------------------------------------------------


def _listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(6)
    hits = []

    def accept():
        try:
            server.accept()
            hits.append(1)
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1], hits


@pytest.mark.parametrize("guard", [False, True], ids=["netns", "socket-guard"])
def test_sandbox_blocks_the_network(tmp_path, monkeypatch, guard):
    """Even the grading machine's own 127.0.0.1 is unreachable from a submission."""
    if guard:
        monkeypatch.setattr(sandbox, "netns_available", lambda: False)
    elif not sandbox.netns_available():
        pytest.skip("user namespaces are not available here; the socket guard is tested instead")
    port, hits = _listener()
    run = sandbox.run_cells([f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"], tmp_path, FAST)
    assert run.cells[0].status == "error" and "unreachable" in run.cells[0].error.lower()
    assert run.network_block == ("socket-guard" if guard else "netns")
    assert f"127.0.0.1:{port}" in run.network_attempts and hits == []


def test_sandbox_limits_time_memory_output_and_survives_errors(tmp_path):
    cells = ["x = 1", "print('y' * 100_000)", "import time\ntime.sleep(30)", "b = bytearray(4 * 1024**3)",
             "import sys\nprint('warning', file=sys.stderr)\nassert x == 1", "raise SystemExit(3)", "z = x + 1"]
    run = sandbox.run_cells(cells, tmp_path, FAST)
    assert [c.status for c in run.cells] == ["ok", "ok", "timeout", "memory", "ok", "error", "ok"]
    assert len(run.cells[1].output) == FAST.max_output and run.cells[1].truncated > 0
    assert run.status == "completed"


def test_sandbox_kills_a_cell_that_swallows_its_timeout(tmp_path):
    cells = ["import time\nwhile True:\n    try:\n        time.sleep(0.1)\n    except BaseException:\n        pass", "y = 1"]
    run = sandbox.run_cells(cells, tmp_path, FAST)
    assert run.status == "timeout" and [c.status for c in run.cells] == ["timeout", "not_run"]


def test_sandbox_environment_is_offline(tmp_path):
    run = sandbox.run_cells(["import os\nprint(os.environ['HF_HUB_OFFLINE'], os.environ['WANDB_MODE'], "
                             "'WANDB_API_KEY' in os.environ)"], tmp_path, FAST)
    assert run.cells[0].output.split() == ["1", "disabled", "False"]


# --- manual grades -----------------------------------------------------------


def test_manual_sheet_rows_survive_and_merge():
    rub = rubric.load("a1")
    res = grade.GradeResult("alice", None, "a1", "graded", grade._score_items(rub, None, False, "x"))
    grade.merge_manual(res, {("alice", "code"): {"points": "6", "comment": "좋아요"},
                             ("alice", "process"): {"points": "99", "comment": ""}})
    item = {r.item.id: r for r in res.items}
    assert item["code"].points == 6 and item["code"].comment == "좋아요"
    assert item["process"].points is None and any("0–7" in f for f in res.flags)


def test_update_manual_sheet_never_overwrites(tmp_path):
    rub = rubric.load("a0")
    res = grade.GradeResult("bob", None, "a0", "graded", grade._score_items(rub, None, False, "x"))
    sheet = tmp_path / "manual.csv"
    grade.update_manual_sheet(sheet, [res])
    rows = list(csv.DictReader(open(sheet, encoding="utf-8")))
    assert {r["item"] for r in rows} == {"i1", "i2", "i3", "i4"}
    rows[0]["points"] = "7"
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=grade.MANUAL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    grade.update_manual_sheet(sheet, [res])
    assert list(csv.DictReader(open(sheet, encoding="utf-8")))[0]["points"] == "7"


def test_fast_kb_fix_rate_equals_the_labs_scorer():
    from ftlab.data import load_facts
    from ftlab.experiments import kb_fix_rate

    rows = [json.loads(line) for line in open(Path(__file__).parent / "golden" / "a1" / "reference" / "predictions.jsonl", encoding="utf-8")]
    for stage in ("before", "after"):
        answers = [r["answer"] for r in rows if r["stage"] == stage and r["kind"] == "out_of_kb"]
        answers += ["공유기 전원을 30초 동안 뽑았다가 다시 꽂으세요.", "", "모르겠어요"]
        assert grade.kb_fix_rate(answers) == kb_fix_rate(answers, load_facts())
