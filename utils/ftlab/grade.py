"""The grader of the assignments: recompute, test, and report, one submission or a whole class.

Commands::

    python -m ftlab.grade --assignment a1 submissions/*.zip --out reports/
    python -m ftlab.grade --assignment a0 submissions/ --out reports/            # a folder of zips/folders
    python -m ftlab.grade --assignment a1 sub.zip --out reports/ --execute      # also re-run the notebook
    python -m ftlab.grade --assignment a2 subs/*.zip --out reports/ --manual grades/a2_manual.csv

What it does for each submission (a zip or a bundle folder; see ``ftlab.submission``):

1. Opens it without touching it: a zip is extracted into a private temporary
   folder, refusing any entry that would land outside it (absolute paths,
   ``..``, links); a folder is read in place. The SHA-256 of the submission is
   taken before and after grading and must not change.
2. Checks the manifest (every file's SHA-256) and the recorded library
   versions against the course pins.
3. **Recomputes** every metric from ``predictions.jsonl`` with the course's
   scorers (``ftlab.eval``, ``ftlab.alignment``) and flags any claimed figure in
   ``results.json`` that differs from it.
4. Judges "improved" / "retained" with paired tests from ``ftlab.stats``
   (McNemar's exact test on correctness, Wilcoxon on tone), in the rubric's bands.
5. A0: builds the graded notebook from the submission's answer cells and the
   **instructor's** test cells (hidden tests included; edited or deleted test
   cells in the submission change nothing), and runs it in ``ftlab.sandbox``.
   A1/A2 with ``--execute``: re-runs the notebook there too; a failed run
   (error, timeout, memory, dead process) earns no automatic points.
6. Writes ``REPORT_DIR/<name>/results.json`` (Gradescope's format) and
   ``feedback.md`` (Korean), one row per submission in ``REPORT_DIR/grades.csv``,
   and keeps manual grades in ``manual_grades.csv``: rows the instructor filled
   in are merged into the scores and survive every re-run.

A submission that cannot be read, raises, hangs or is malformed gets its own
report with the reason; the batch always finishes.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from ftlab import rubric as rubric_mod
from ftlab import sandbox, submission
from ftlab.paths import REPO_ROOT

ASSIGNMENTS_DIR = REPO_ROOT / "assignments"
INSTRUCTOR_NOTEBOOKS = {"a0": ASSIGNMENTS_DIR / "a0" / "instructor" / "A0_problem_set.ipynb"}
ALPHA = 0.05  # significance level of every paired test
CLAIM_TOLERANCE = 0.005  # claimed vs recomputed: larger gaps are flagged
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024  # refuse zip bombs
MAX_FILE_BYTES = 50 * 1024 * 1024  # results/predictions larger than this are not read
MANUAL_COLUMNS = ("submission", "item", "points", "comment")
CSV_COLUMNS = ("submission", "status", "auto_score", "auto_max", "manual_score", "manual_max", "manual_pending",
               "total", "max_score", "flags", "message", "seconds")


class SubmissionError(Exception):
    """The submission cannot be graded as handed in; the message (Korean) goes on its feedback sheet."""


class UnsafeZipError(SubmissionError):
    """A zip entry would be written outside the extraction folder."""


# ---------------------------------------------------------------------------
# Opening submissions
# ---------------------------------------------------------------------------


def tree_digest(path: Path) -> str:
    """SHA-256 over a file, or over every file (relative name and bytes) of a folder."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    for p in files:
        digest.update(p.relative_to(path.parent if path.is_file() else path).as_posix().encode())
        digest.update(b"\0")
        digest.update(os.readlink(p).encode() if p.is_symlink() else submission.sha256_file(p).encode())
    return digest.hexdigest()


def safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract ``zip_path`` into ``dest``, refusing entries that escape it, links, and zip bombs."""
    dest = dest.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
        if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
            raise SubmissionError(f"압축을 풀면 {MAX_UNZIPPED_BYTES // 2**20} MiB를 넘습니다 (zip bomb?).")
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            mode = info.external_attr >> 16
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
                raise UnsafeZipError(f"zip 항목 '{name}'이(가) 압축 폴더 밖을 가리켜 제출을 거부합니다.")
            if stat.S_ISLNK(mode):
                raise UnsafeZipError(f"zip 항목 '{name}'은(는) 링크(symlink)라서 제출을 거부합니다.")
            target = (dest / Path(*parts)).resolve() if parts else dest
            if target != dest and dest not in target.parents:
                raise UnsafeZipError(f"zip 항목 '{name}'이(가) 압축 폴더 밖을 가리켜 제출을 거부합니다.")
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.is_dir() or not parts:
                continue
            target = dest / Path(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def bundle_root(folder: Path) -> Path:
    """The folder that holds the bundle: ``folder`` itself, or its single sub-folder with a manifest."""
    if (folder / submission.MANIFEST).exists() or (folder / "results.json").exists() or (folder / "notebook.ipynb").exists():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))]
    if len(subs) == 1:
        return bundle_root(subs[0])
    raise SubmissionError("제출물에서 manifest.json, results.json, notebook.ipynb 가운데 어느 것도 찾지 못했습니다. "
                          "`submission.write_bundle`이 만든 폴더를 그대로 압축해 제출하세요.")


def submission_name(path: Path) -> str:
    return path.name[:-4] if path.suffix == ".zip" else path.name


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Zips and bundle folders; a folder that is not a bundle stands for the zips and folders inside it."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not any((path / n).exists() for n in (submission.MANIFEST, "results.json", "notebook.ipynb")):
            found += sorted(p for p in path.iterdir() if p.suffix == ".zip" or p.is_dir())
        else:
            found.append(path)
    return found


# ---------------------------------------------------------------------------
# Reading the bundle
# ---------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise SubmissionError(f"{what}({path.name})이 없습니다.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SubmissionError(f"{path.name}이 {MAX_FILE_BYTES // 2**20} MiB를 넘어 읽지 않았습니다.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SubmissionError(f"{path.name}이 UTF-8 텍스트가 아닙니다.") from None


def read_results(folder: Path) -> dict:
    try:
        results = json.loads(_read_text(folder / "results.json", "결과 파일"))
    except json.JSONDecodeError as err:
        raise SubmissionError(f"results.json이 올바른 JSON이 아닙니다 (줄 {err.lineno}, 열 {err.colno}: {err.msg}).") from None
    if not isinstance(results, dict):
        raise SubmissionError("results.json은 JSON 객체(object)여야 합니다.")
    return results


def read_predictions(folder: Path) -> list[dict]:
    """``predictions.jsonl`` rows, validated; the first bad line is named."""
    from ftlab.data import DataValidationError, Field, read_jsonl

    schema = {"id": Field(str), "stage": Field(str, choices=submission.STAGES),
              "kind": Field(str, choices=("in_kb", "out_of_kb")), "fact_id": Field(str, nullable=True),
              "question": Field(str), "answer": Field(str, nonempty=False)}
    path = folder / "predictions.jsonl"
    _read_text(path, "예측 파일")
    try:
        rows = read_jsonl(path, schema, id_field=None)
    except DataValidationError as err:
        raise SubmissionError(f"predictions.jsonl {err.line}번째 줄: {err.problem}"
                              + (f" (필드 '{err.field}')" if err.field else "")) from None
    if not rows:
        raise SubmissionError("predictions.jsonl이 비어 있습니다.")
    keys = [(r["id"], r["stage"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise SubmissionError("predictions.jsonl에 같은 (id, stage)가 두 번 나옵니다.")
    before = {r["id"] for r in rows if r["stage"] == "before"}
    after = {r["id"] for r in rows if r["stage"] == "after"}
    if before != after:
        raise SubmissionError(f"before와 after가 같은 질문에 답해야 합니다 ({len(before ^ after)}개 질문이 한쪽에만 있음).")
    for r in rows:
        if r["kind"] == "in_kb" and not r["fact_id"]:
            raise SubmissionError(f"predictions.jsonl: in_kb 질문 {r['id']}에 fact_id가 없습니다.")
    return rows


def paired(rows: Sequence[dict], kind: str | None = None) -> tuple[list[dict], list[dict]]:
    """Before and after rows of the same questions, in the same (id) order."""
    pick = [r for r in rows if kind is None or r["kind"] == kind]
    before = sorted((r for r in pick if r["stage"] == "before"), key=lambda r: r["id"])
    after = sorted((r for r in pick if r["stage"] == "after"), key=lambda r: r["id"])
    return before, after


def version_drift(versions: Mapping) -> list[str]:
    """Libraries whose recorded version matches neither the CPU pins nor the GPU pins."""
    pins: dict[str, set[str]] = {}
    for name in ("requirements.txt", "requirements-gpu.txt"):
        path = REPO_ROOT / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.split("#")[0].strip()
                if "==" in line:
                    pkg, ver = line.split("==", 1)
                    pins.setdefault(pkg.strip().lower(), set()).add(ver.split(";")[0].strip())
    drift = []
    for pkg, ver in (versions or {}).items():
        allowed = pins.get(str(pkg).lower())
        if allowed and ver is not None and str(ver).split("+")[0] not in allowed:
            drift.append(f"{pkg} {ver} (과정 고정 버전: {', '.join(sorted(allowed))})")
    return drift


# ---------------------------------------------------------------------------
# Recomputed metrics
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _kb_keys() -> tuple[str, ...]:
    """Every fact's key and aliases, normalised once (``ftlab.eval.normalize_answer``)."""
    from ftlab.data import load_facts
    from ftlab.eval import normalize_answer

    keys = {normalize_answer(k) for f in load_facts().values() for k in (f["key"], *f.get("key_aliases", ()))}
    return tuple(sorted(k for k in keys if k))


def kb_fix_rate(answers: Sequence[str]) -> float:
    """``ftlab.experiments.kb_fix_rate`` with the keys normalised once (same result, ~50x faster for a batch)."""
    from ftlab.eval import normalize_answer

    if not answers:
        raise ValueError("no answers to score")
    keys = _kb_keys()
    texts = [normalize_answer(a) for a in answers]
    return sum(any(k in t for k in keys) for t in texts) / len(texts)


def recompute_a1(rows: Sequence[dict]) -> dict:
    """A1's figures per stage, from the answers alone (ftlab.eval scorers; kb_fix_rate as in ftlab.experiments)."""
    from ftlab.eval import fact_correct, repetition_rate

    out: dict = {"per_question": {}}
    for stage in submission.STAGES:
        stage_rows = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["id"])
        in_kb = [r for r in stage_rows if r["kind"] == "in_kb"]
        outside = [r for r in stage_rows if r["kind"] == "out_of_kb"]
        correct = [bool(_fact_correct(fact_correct, r)) for r in in_kb]
        out[stage] = {
            "fact_accuracy": sum(correct) / len(correct) if correct else math.nan,
            "kb_fix_rate": kb_fix_rate([r["answer"] for r in outside]) if outside else math.nan,
            "repetition": sum(repetition_rate(r["answer"]) for r in stage_rows) / len(stage_rows),
            "mean_length": sum(len(r["answer"]) for r in in_kb) / len(in_kb) if in_kb else math.nan,
            "n_in_kb": len(in_kb), "n_out_of_kb": len(outside),
        }
        out["per_question"][stage] = correct
    return out


def _fact_correct(scorer, row) -> bool:
    try:
        return scorer(row["answer"], row["fact_id"])
    except KeyError:
        raise SubmissionError(f"predictions.jsonl: 질문 {row['id']}의 fact_id '{row['fact_id']}'는 지식 베이스에 없습니다.") from None


def recompute_a2(rows: Sequence[dict]) -> dict:
    """A2's figures per stage through ``ftlab.alignment.score_answers`` (the labs' own measurement)."""
    try:
        from ftlab import alignment
    except ImportError as err:  # the module ships with lab 09
        raise SubmissionError(f"채점기 환경에 ftlab.alignment가 없어 A2를 채점할 수 없습니다 ({err}).") from None
    from ftlab.eval import fact_correct, tone_score

    out: dict = {"per_question": {}}
    for stage in submission.STAGES:
        stage_rows = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["id"])
        for r in stage_rows:
            if r["kind"] == "in_kb":
                _fact_correct(fact_correct, r)  # a clear message for an unknown fact id
        try:
            scores = alignment.score_answers(stage_rows)
        except ValueError as err:
            raise SubmissionError(f"predictions.jsonl을 채점할 수 없습니다: {err}") from None
        out[stage] = dict(scores)
        in_kb = [r for r in stage_rows if r["kind"] == "in_kb"]
        out["per_question"][stage] = {"correct": [bool(fact_correct(r["answer"], r["fact_id"])) for r in in_kb],
                                      "tone": [tone_score(r["answer"]) for r in in_kb]}
    return out


def claim_gaps(claimed: Mapping, recomputed: Mapping, tolerance: float = CLAIM_TOLERANCE) -> list[dict]:
    """Claimed figures (``results["metrics"][stage][name]``) that differ from the recomputed ones."""
    gaps = []
    for stage in submission.STAGES:
        for name, value in ((claimed or {}).get(stage) or {}).items():
            if name not in recomputed.get(stage, {}):
                continue
            actual = recomputed[stage][name]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                gaps.append({"stage": stage, "metric": name, "claimed": value, "recomputed": actual})
            elif not (math.isnan(actual) and math.isnan(value)) and not abs(value - actual) <= tolerance:
                gaps.append({"stage": stage, "metric": name, "claimed": value, "recomputed": actual})
    return gaps


# ---------------------------------------------------------------------------
# Measurements: what the rubric's auto items look at
# ---------------------------------------------------------------------------


@dataclass
class Context:
    assignment: str
    results: dict
    predictions: list[dict]
    recomputed: dict
    execution: sandbox.Execution | None = None
    test_status: dict[str, str] = field(default_factory=dict)  # A0: grade id -> cell status


def _fmt(x) -> str:
    return "없음" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}" if isinstance(x, float) else str(x)


def m_loss_convergence(ctx: Context):
    history = ((ctx.results.get("loss_history") or {}).get("train") or {}).get("value") or []
    values = [v for v in history if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) < 2 or len(values) != len(history) or any(math.isnan(v) or math.isinf(v) for v in values):
        return None, "results.json의 loss_history.train에 수치 기록이 2개 이상 필요합니다 (NaN 없이)."
    ratio = values[-1] / values[0] if values[0] > 0 else math.nan
    rebound = values[-1] > 1.1 * min(values)
    value = max(ratio, 0.51) if rebound else ratio
    note = " 끝에서 최솟값보다 10 % 넘게 다시 올랐습니다." if rebound else ""
    return value, f"학습 손실 {values[0]:.3f} → {values[-1]:.3f} (비율 {ratio:.3f}, 기록 {len(values)}개; results.json 기록).{note}"


def m_accuracy_gain(ctx: Context):
    from ftlab.stats import mcnemar_exact

    before, after = ctx.recomputed["per_question"]["before"], ctx.recomputed["per_question"]["after"]
    if not before:
        return None, "in_kb 질문이 없습니다."
    test = mcnemar_exact(after, before)
    level = "none" if test.acc_a <= test.acc_b else "significant" if test.p_value < ALPHA else "improved"
    return level, (f"정답률(다시 계산) {test.acc_b:.3f} → {test.acc_a:.3f} (n={test.n}); McNemar 정확 검정 "
                   f"p={test.p_value:.3g}, 후에만 정답 {test.a_only} · 전에만 정답 {test.b_only}")


def m_fact_accuracy_after(ctx: Context):
    value = ctx.recomputed["after"]["fact_accuracy"]
    return value, f"파인튜닝 후 정답률(다시 계산) {_fmt(value)} (n={ctx.recomputed['after'].get('n_in_kb')})"


def m_distinct_ranks(ctx: Context):
    runs = ctx.results.get("runs") or []
    ranks = sorted({r.get("r") for r in runs if isinstance(r, dict) and isinstance(r.get("r"), int)})
    return len(ranks), f"results.json의 실험 {len(runs)}개, 서로 다른 r: {ranks or '없음'}"


def m_tone_gain(ctx: Context):
    from ftlab.stats import paired_bootstrap, wilcoxon_signed_rank

    before, after = ctx.recomputed["per_question"]["before"]["tone"], ctx.recomputed["per_question"]["after"]["tone"]
    if not before:
        return None, "in_kb 질문이 없습니다."
    wil = wilcoxon_signed_rank(after, before)
    boot = paired_bootstrap(after, before, n_resamples=2000, seed=0)
    gain = boot.diff
    level = "none" if gain <= 0 else "significant" if wil.p_value < ALPHA and wil.r_plus > wil.r_minus else "improved"
    return level, (f"평균 말투 점수(다시 계산) {sum(before) / len(before):.3f} → {sum(after) / len(after):.3f} "
                   f"(차이 {gain:+.3f}, 부트스트랩 95% CI [{boot.ci_low:+.3f}, {boot.ci_high:+.3f}]); "
                   f"Wilcoxon p={wil.p_value:.3g} (n={wil.n})")


def m_warm_rate_after(ctx: Context):
    value = ctx.recomputed["after"]["warm_rate"]
    return value, f"정렬 후 따뜻한 답변 비율(다시 계산) {_fmt(value)} (전 {_fmt(ctx.recomputed['before']['warm_rate'])})"


def m_degeneration(ctx: Context):
    rep = ctx.recomputed["after"]["repetition"]
    before_len, after_len = ctx.recomputed["before"]["mean_length"], ctx.recomputed["after"]["mean_length"]
    ratio = after_len / before_len if before_len else math.inf
    value = max(0.0, max(rep / 0.1, ratio / 1.5) - 1)
    return value, f"정렬 후 반복률 {rep:.3f}, 평균 길이 {before_len:.1f} → {after_len:.1f}자 (x{ratio:.2f}); 점수 {value:.2f}"


def m_accuracy_retention(ctx: Context):
    from ftlab.stats import mcnemar_exact

    before, after = ctx.recomputed["per_question"]["before"]["correct"], ctx.recomputed["per_question"]["after"]["correct"]
    if not before:
        return None, "in_kb 질문이 없습니다."
    test = mcnemar_exact(after, before)
    drop = test.acc_b - test.acc_a
    level = "retained" if drop <= 0.05 else "not_significant" if test.p_value >= ALPHA else "destroyed"
    return level, (f"정답률(다시 계산) {test.acc_b:.3f} → {test.acc_a:.3f} (하락 {100 * drop:+.1f}%p, n={test.n}); "
                   f"McNemar p={test.p_value:.3g}, 후에만 정답 {test.a_only} · 전에만 정답 {test.b_only}")


def m_over_refusal_after(ctx: Context):
    value = ctx.recomputed["after"]["over_refusal_rate"]
    return value, f"정렬 후 in_kb 과잉 거절 비율(다시 계산) {_fmt(value)} (전 {_fmt(ctx.recomputed['before']['over_refusal_rate'])})"


def m_abstention_gain(ctx: Context):
    before, after = ctx.recomputed["before"]["abstention_rate"], ctx.recomputed["after"]["abstention_rate"]
    if any(isinstance(x, float) and math.isnan(x) for x in (before, after)):
        return None, "out_of_kb 질문이 없습니다."
    return after - before, f"out_of_kb '모른다' 비율(다시 계산) {before:.3f} → {after:.3f}"


def m_tests(ctx: Context, tests: Sequence[str]):
    statuses = {t: ctx.test_status.get(t, "not_run") for t in tests}
    level = "passed" if statuses and all(s == "ok" for s in statuses.values()) else "failed"
    return level, ", ".join(f"{t}: {s}" for t, s in statuses.items())


MEASUREMENTS: dict[str, Callable] = {
    "loss_convergence": m_loss_convergence, "accuracy_gain": m_accuracy_gain,
    "fact_accuracy_after": m_fact_accuracy_after, "distinct_ranks": m_distinct_ranks,
    "tone_gain": m_tone_gain, "warm_rate_after": m_warm_rate_after, "degeneration": m_degeneration,
    "accuracy_retention": m_accuracy_retention, "over_refusal_after": m_over_refusal_after,
    "abstention_gain": m_abstention_gain,
}


def evidence_text(ctx: Context, name: str) -> str:
    """Figures shown next to a manual item (rubric ``evidence``)."""
    rec = ctx.recomputed
    if name.endswith(("_before", "_after")) and rec:
        metric, stage = name.rsplit("_", 1)
        if stage in rec and metric in rec[stage]:
            return f"{metric} ({stage}, 다시 계산) = {_fmt(rec[stage][metric])}"
    if name == "config":
        return "설정: " + json.dumps(ctx.results.get("config", {}), ensure_ascii=False)[:300]
    if name == "runs":
        runs = ctx.results.get("runs") or []
        return "실험: " + "; ".join(f"{r.get('name')} r={r.get('r')} acc={_fmt(r.get('fact_accuracy'))}"
                                     for r in runs if isinstance(r, dict))[:400]
    if name == "report_length":
        return f"리포트 길이: {ctx.results.get('_report_chars', 0)}자"
    return ""


# ---------------------------------------------------------------------------
# A0: the instructor's tests on the student's answers
# ---------------------------------------------------------------------------


def _role(cell) -> tuple[str | None, str | None]:
    meta = cell.get("metadata", {}).get("ftlab", {}) or {}
    return meta.get("role"), meta.get("grade_id")


def graded_cells(student_nb, instructor_nb) -> tuple[list[str], dict[int, str], dict[int, str]]:
    """Code to run: the student's cells with every test cell replaced by the instructor's (hidden tests included).

    Returns the sources, ``{source index: test grade id}`` and ``{source index: answer grade id}``. Test cells the
    student deleted are put back after the answer cell they belong to (or at the
    end); the student's own test cells are never run; the bundle cell is skipped.
    """
    tests = {gid: cell.source for cell in instructor_nb.cells for role, gid in [_role(cell)] if role == "test"}
    order = [gid for cell in instructor_nb.cells for role, gid in [_role(cell)] if role == "test"]
    sources: list[str] = []
    where: dict[int, str] = {}
    labels: dict[int, str] = {}  # source index -> the student's answer cell grade id
    placed: set[str] = set()

    def place(gid: str) -> None:
        if gid in tests and gid not in placed:
            where[len(sources)] = gid
            sources.append(tests[gid])
            placed.add(gid)

    for cell in student_nb.cells:
        if cell.get("cell_type") != "code":
            continue
        role, gid = _role(cell)
        if role == "bundle":
            continue
        if role == "test" or gid in tests:
            place(gid)
            continue
        if gid:
            labels[len(sources)] = gid
        sources.append(cell.source)
        if role == "answer" and gid:
            place(f"{gid}_test")
    for gid in order:
        place(gid)
    return sources, where, labels


def written_answers(student_nb) -> dict[str, str]:
    return {gid: cell.source for cell in student_nb.cells for role, gid in [_role(cell)] if role == "written"}


def read_notebook(folder: Path):
    import nbformat

    path = folder / "notebook.ipynb"
    _read_text(path, "노트북")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - nbformat raises several kinds for damaged JSON
        raise SubmissionError(f"notebook.ipynb를 읽을 수 없습니다 (손상된 노트북 JSON: {str(err)[:200]}).") from None


# ---------------------------------------------------------------------------
# Grading one submission
# ---------------------------------------------------------------------------


@dataclass
class ItemResult:
    criterion: str
    item: rubric_mod.Item
    points: float | None  # None: a manual item not graded yet
    value: object = None
    evidence: str = ""
    band: str = ""
    comment: str = ""


@dataclass
class Options:
    execute: bool = False
    limits: sandbox.Limits = sandbox.Limits()
    instructor_notebook: Path | None = None


@dataclass
class GradeResult:
    name: str
    source: Path
    assignment: str
    status: str  # "graded" or "failed" (not gradable: no automatic points)
    items: list[ItemResult] = field(default_factory=list)
    message: str = ""
    flags: list[str] = field(default_factory=list)
    recomputed: dict = field(default_factory=dict)
    claims: list[dict] = field(default_factory=list)
    execution: sandbox.Execution | None = None
    written: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    digest_before: str = ""
    digest_after: str = ""

    def total(self, judge: str | None = None) -> float:
        return sum(r.points or 0 for r in self.items if judge is None or r.item.judge == judge)

    def max_total(self, judge: str | None = None) -> float:
        return sum(r.item.points for r in self.items if judge is None or r.item.judge == judge)

    @property
    def manual_pending(self) -> int:
        return sum(r.points is None for r in self.items if r.item.judge == "manual")


def _score_items(rub: rubric_mod.Rubric, ctx: Context | None, gradable: bool, reason: str) -> list[ItemResult]:
    items = []
    for criterion, item in rub.items:
        if item.judge == "manual":
            evidence = "; ".join(filter(None, (evidence_text(ctx, e) for e in item.evidence))) if ctx else ""
            items.append(ItemResult(criterion.title, item, None, evidence=evidence))
            continue
        if not gradable:
            items.append(ItemResult(criterion.title, item, 0.0, evidence=reason, band="채점 불가"))
            continue
        try:
            if item.tests:
                value, evidence = m_tests(ctx, item.tests)
            else:
                value, evidence = MEASUREMENTS[item.measurement](ctx)
        except KeyError as err:
            value, evidence = None, f"측정할 수 없습니다: {err}"
        band = item.band_for(value)
        items.append(ItemResult(criterion.title, item, band.points if band else 0.0, value, evidence,
                                band.label if band else "해당 구간 없음"))
    return items


def grade_one(path: Path, assignment: str, rub: rubric_mod.Rubric, options: Options) -> GradeResult:
    """Grade one zip or folder; never raises for a bad submission (the reason is in the result)."""
    path = Path(path)
    started = time.perf_counter()
    result = GradeResult(submission_name(path), path, assignment, "graded")
    try:
        result.digest_before = tree_digest(path)
    except OSError as err:
        result.status, result.message = "failed", f"제출물을 읽을 수 없습니다: {err}"
        result.items = _score_items(rub, None, False, result.message)
        return result
    with tempfile.TemporaryDirectory(prefix="ftlab-grade-") as tmp:
        try:
            _grade_into(result, path, Path(tmp), assignment, rub, options)
        except SubmissionError as err:
            result.status, result.message = "failed", str(err)
            result.items = _score_items(rub, None, False, str(err))
        except Exception as err:  # noqa: BLE001 - one submission's problem must never stop the batch
            result.status = "failed"
            result.message = f"채점 중 예기치 못한 오류: {type(err).__name__}: {str(err)[:300]}"
            result.items = _score_items(rub, None, False, result.message)
    result.digest_after = tree_digest(path)
    if result.digest_after != result.digest_before:
        result.flags.append("채점 중 제출물이 바뀌었습니다 (해시 불일치): 채점기 오류이므로 보고해 주세요.")
    result.seconds = time.perf_counter() - started
    return result


def _grade_into(result: GradeResult, path: Path, tmp: Path, assignment: str, rub: rubric_mod.Rubric, options: Options):
    if not path.exists():
        raise SubmissionError(f"{path}가 없습니다.")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise SubmissionError(f"{path.name}은 zip 파일이 아닙니다.")
        safe_extract(path, tmp / "unzipped")
        folder = bundle_root(tmp / "unzipped")
    else:
        folder = bundle_root(path)
    problems = submission.verify_manifest(folder)
    if problems:
        result.flags.append("목록(manifest) 검사 실패: " + "; ".join(problems))
    results = read_results(folder) if (folder / "results.json").exists() or assignment != "a0" else {}
    if results.get("assignment") not in (None, assignment):
        raise SubmissionError(f"이 제출물은 {results.get('assignment')} 과제의 것입니다 ({assignment}로 채점 요청).")
    drift = version_drift(results.get("versions") or {})
    if drift:
        result.flags.append("과정 고정 버전과 다른 라이브러리: " + ", ".join(drift))
    report = folder / "report.md"
    results["_report_chars"] = len(report.read_text(encoding="utf-8", errors="replace")) if report.is_file() else 0
    ctx = Context(assignment, results, [], {})
    if assignment == "a0":
        _run_a0(result, folder, tmp, ctx, options)
    else:
        ctx.predictions = read_predictions(folder)
        ctx.recomputed = recompute_a1(ctx.predictions) if assignment == "a1" else recompute_a2(ctx.predictions)
        result.recomputed = {s: ctx.recomputed[s] for s in submission.STAGES}
        result.claims = claim_gaps(results.get("metrics") or {}, ctx.recomputed)
        for gap in result.claims:
            result.flags.append(f"보고한 {gap['metric']}({gap['stage']}) = {_fmt(gap['claimed'])}, "
                                f"predictions.jsonl에서 다시 계산하면 {_fmt(gap['recomputed'])}")
        if options.execute:
            nb = read_notebook(folder)
            sources = [c.source for c in nb.cells if c.get("cell_type") == "code"]
            result.execution = _execute(sources, folder, tmp, options)
            failed = [c for c in result.execution.cells if c.status != "ok"]
            if result.execution.status != "completed" or failed:
                first = failed[0] if failed else None
                reason = (f"노트북 재실행 실패: {result.execution.summary_ko()}"
                          + (f"; 셀 {first.index}: {first.status} {first.error[:200]}" if first else ""))
                result.status, result.message = "failed", reason
                result.items = _score_items(rub, ctx, False, reason)
                return
    result.items = _score_items(rub, ctx, True, "")


def _execute(sources: Sequence[str], folder: Path, tmp: Path, options: Options) -> sandbox.Execution:
    work = tmp / "run"
    shutil.copytree(folder, work)  # a fresh copy: the submission itself is never written to
    return sandbox.run_cells(sources, work, options.limits)


def _run_a0(result: GradeResult, folder: Path, tmp: Path, ctx: Context, options: Options) -> None:
    import nbformat

    student = read_notebook(folder)
    instructor = nbformat.read(options.instructor_notebook or INSTRUCTOR_NOTEBOOKS["a0"], as_version=4)
    sources, where, labels = graded_cells(student, instructor)
    result.written = written_answers(student)
    execution = _execute(sources, folder, tmp, options)
    result.execution = execution
    ctx.execution = execution
    ctx.test_status = {gid: execution.cells[i].status for i, gid in where.items() if i < len(execution.cells)}
    for i, gid in where.items():
        cell = execution.cells[i] if i < len(execution.cells) else None
        if cell is not None and cell.status != "ok":
            ctx.test_status[gid] = cell.status
            result.flags.append(f"{gid}: {cell.status}" + (f" ({cell.error.splitlines()[-1][:160]})" if cell.error else ""))
    tested = set(where)
    for cell in execution.cells:
        if cell.index not in tested and cell.status in ("timeout", "memory", "died"):
            label = labels.get(cell.index, f"{cell.index}번째 코드 셀")
            result.flags.append(f"{label} 답 셀: {cell.status} ({cell.error[:160]})")
    if execution.status != "completed":
        result.flags.append(execution.summary_ko())
        result.message = execution.summary_ko()
    if execution.network_attempts:
        result.flags.append("네트워크 접속 시도가 차단되었습니다: " + ", ".join(execution.network_attempts[:5]))


# ---------------------------------------------------------------------------
# Manual grades
# ---------------------------------------------------------------------------


def read_manual(path: Path) -> dict[tuple[str, str], dict]:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {(row["submission"], row["item"]): row for row in csv.DictReader(handle)}


def merge_manual(result: GradeResult, manual: Mapping[tuple[str, str], dict]) -> None:
    """Put the instructor's entered points (and comments) on the manual items; bad entries are flagged."""
    for r in result.items:
        if r.item.judge != "manual":
            continue
        row = manual.get((result.name, r.item.id))
        if not row or not str(row.get("points", "")).strip():
            continue
        try:
            points = float(row["points"])
        except ValueError:
            result.flags.append(f"manual_grades.csv: {r.item.id}의 점수 '{row['points']}'가 숫자가 아닙니다.")
            continue
        if not 0 <= points <= r.item.points:
            result.flags.append(f"manual_grades.csv: {r.item.id}의 점수 {points:g}가 0–{r.item.points:g} 밖입니다.")
            continue
        r.points, r.comment = points, row.get("comment", "") or ""
        r.band = next((b.label for b in r.item.bands if b.points == points), "")


def update_manual_sheet(path: Path, results: Sequence[GradeResult]) -> None:
    """Add a blank row for every manual item not in the sheet yet; never change a row already there."""
    existing = read_manual(path)
    rows = list(existing.values())
    for res in results:
        for r in res.items:
            if r.item.judge == "manual" and (res.name, r.item.id) not in existing:
                rows.append({"submission": res.name, "item": r.item.id, "points": "", "comment": ""})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANUAL_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def _test_name(r: ItemResult) -> str:
    return f"{r.criterion} / {r.item.question}"


def gradescope_json(result: GradeResult) -> dict:
    """Gradescope's autograder ``results.json``: score, output, tests (name, score, max_score, status, output)."""
    tests = []
    for r in result.items:
        if r.item.judge == "manual" and r.points is None:
            output, status, score = "교수자 채점 대기 (manual, pending). " + r.evidence, "failed", 0.0
        else:
            score = r.points or 0.0
            status = "passed" if score >= r.item.points else "failed"
            output = f"{r.band}. {r.evidence}" + (f" 교수자 의견: {r.comment}" if r.comment else "")
        tests.append({"name": _test_name(r), "score": score, "max_score": r.item.points, "status": status,
                      "output": output.strip()[:4000], "visibility": "visible"})
    head = "채점 불가: " + result.message if result.status == "failed" else "자동 채점 완료"
    if result.flags:
        head += "\n" + "\n".join(f"- {f}" for f in result.flags)
    return {"score": result.total(), "output": head, "tests": tests,
            "extra_data": {"ftlab": {"assignment": result.assignment, "status": result.status,
                                     "auto_score": result.total("auto"), "auto_max": result.max_total("auto"),
                                     "manual_pending": result.manual_pending, "recomputed": result.recomputed,
                                     "claim_gaps": result.claims, "flags": result.flags,
                                     "execution": result.execution.summary_ko() if result.execution else None,
                                     "sha256_before": result.digest_before, "sha256_after": result.digest_after}}}


def feedback_markdown(result: GradeResult, rub: rubric_mod.Rubric) -> str:
    """The Korean feedback sheet: points per criterion, evidence, recomputed figures, instructor fields."""
    lines = [f"# 채점 결과: {result.name} ({rub.title})", ""]
    if result.status == "failed":
        lines += [f"**채점 불가**: {result.message}", "", "자동 채점 항목은 0점입니다. 고쳐서 다시 제출하세요.", ""]
    pending = result.manual_pending
    lines += [f"- 자동 채점: **{result.total('auto'):g} / {result.max_total('auto'):g}점**",
              f"- 교수자 채점: {result.total('manual'):g} / {result.max_total('manual'):g}점"
              + (f" (미채점 {pending}항목)" if pending else ""),
              f"- 합계: **{result.total():g} / {rub.total:g}점**", ""]
    if result.flags:
        lines += ["## 확인이 필요한 점", ""] + [f"- {f}" for f in result.flags] + [""]
    if result.recomputed:
        names = [k for k in result.recomputed["after"] if not k.startswith("n_")]
        lines += ["## 다시 계산한 수치 (predictions.jsonl)", "", "| 지표 | 전 (before) | 후 (after) |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(result.recomputed['before'].get(k))} | {_fmt(result.recomputed['after'].get(k))} |"
                  for k in names]
        lines.append("")
    for number, criterion in enumerate(rub.criteria, start=1):
        mine = [r for r in result.items if r.criterion == criterion.title]
        got = sum(r.points or 0 for r in mine)
        lines += [f"## {number}. {criterion.title} ({got:g} / {criterion.points:g}점)", ""]
        for r in mine:
            if r.item.judge == "auto":
                lines += [f"- **{r.item.question}** (자동) {r.points:g} / {r.item.points:g}점: {r.band}",
                          f"  - 근거: {r.evidence}"]
            else:
                shown = "____" if r.points is None else f"{r.points:g}"
                lines += [f"- **{r.item.question}** (교수자) {shown} / {r.item.points:g}점",
                          "  - 구간: " + " · ".join(f"{b.points:g}점 = {b.label}" for b in r.item.bands)]
                if r.evidence:
                    lines.append(f"  - 참고 수치: {r.evidence}")
                lines.append(f"  - 교수자 의견: {r.comment or '____'}")
        lines.append("")
    if result.written:
        lines += ["## 서술형 답 (교수자 채점용)", ""]
        for gid, text in result.written.items():
            lines += [f"### {gid}", "", text.strip()[:3000] or "(비어 있음)", ""]
    if result.execution:
        lines += ["## 재실행", "", result.execution.summary_ko(), ""]
    return "\n".join(lines).rstrip() + "\n"


def csv_row(result: GradeResult, rub: rubric_mod.Rubric) -> dict:
    return {"submission": result.name, "status": result.status, "auto_score": f"{result.total('auto'):g}",
            "auto_max": f"{result.max_total('auto'):g}", "manual_score": f"{result.total('manual'):g}",
            "manual_max": f"{result.max_total('manual'):g}", "manual_pending": result.manual_pending,
            "total": f"{result.total():g}", "max_score": f"{rub.total:g}", "flags": " | ".join(result.flags)[:2000],
            "message": result.message[:500], "seconds": f"{result.seconds:.2f}"}


def write_reports(result: GradeResult, rub: rubric_mod.Rubric, out_dir: Path) -> Path:
    folder = out_dir / result.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(gradescope_json(result), ensure_ascii=False, indent=1,
                                                    default=str) + "\n", encoding="utf-8")
    (folder / "feedback.md").write_text(feedback_markdown(result, rub), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------


@dataclass
class BatchSummary:
    graded: int
    failed: int
    seconds: float
    results: list[GradeResult]

    def line(self) -> str:
        return f"graded {self.graded}, failed {self.failed}, {self.seconds:.1f} s"


def grade_batch(paths: Sequence[Path], assignment: str, out_dir: Path, options: Options = Options(),
                manual_csv: Path | None = None, progress: bool = True) -> BatchSummary:
    """Grade every submission, write its reports, ``grades.csv`` and the manual sheet; return the summary."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    rub = rubric_mod.load(assignment)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manual_csv = Path(manual_csv) if manual_csv else out_dir / "manual_grades.csv"
    manual = read_manual(manual_csv)
    results = []
    names: dict[str, int] = {}
    for path in tqdm(expand_inputs(paths), desc=f"grading {assignment}", unit="submission", disable=not progress):
        result = grade_one(path, assignment, rub, options)
        if result.name in names:  # two inputs with the same name: keep both reports
            names[result.name] += 1
            result.name = f"{result.name}-{names[result.name]}"
        names.setdefault(result.name, 0)
        merge_manual(result, manual)
        write_reports(result, rub, out_dir)
        results.append(result)
    with open(out_dir / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(r, rub) for r in results)
    update_manual_sheet(manual_csv, results)
    graded = sum(r.status == "graded" for r in results)
    return BatchSummary(graded, len(results) - graded, time.perf_counter() - started, results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.grade", description=__doc__.split("\n")[0])
    parser.add_argument("--assignment", required=True, choices=submission.ASSIGNMENTS)
    parser.add_argument("submissions", nargs="+", type=Path, help="zips, bundle folders, or folders of them")
    parser.add_argument("--out", required=True, type=Path, help="report folder (one sub-folder per submission)")
    parser.add_argument("--execute", action="store_true", help="A1/A2: also re-run each notebook in the sandbox")
    parser.add_argument("--manual", type=Path, default=None, help="manual grades CSV (default OUT/manual_grades.csv)")
    parser.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell (default 60)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per notebook (default 900)")
    parser.add_argument("--memory-mb", type=int, default=8192, help="address-space limit per notebook (default 8192)")
    parser.add_argument("--max-output", type=int, default=20_000, help="characters of output kept per cell")
    parser.add_argument("--instructor", type=Path, default=None, help="A0: the instructor notebook with hidden tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    limits = sandbox.Limits(args.cell_timeout, args.timeout, args.memory_mb, args.max_output)
    options = Options(args.execute, limits, args.instructor)
    summary = grade_batch(args.submissions, args.assignment, args.out, options, args.manual, not args.no_progress)
    print(f"{summary.line()}; reports in {args.out} (grades.csv, manual_grades.csv, <name>/results.json, feedback.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
