"""Rubrics of the graded assignments: one TOML file each (``rubrics/a0.toml`` ...), the single source.

A rubric has criteria (title, points), each made of items. An item is judged

- ``auto``: the grader computes ``measurement`` (see ``ftlab.grade.MEASUREMENTS``)
  and gives the points of the first band that matches: ``level = "significant"``
  for a categorical outcome, ``min = 0.4`` (value at least) or ``max = 0.1``
  (value at most) for a number, or no condition (the last, catch-all band);
- ``manual``: the instructor picks a band (each has a descriptor); ``evidence``
  names the recomputed figures shown next to it on the feedback sheet.

The Korean Markdown that students read (``rubrics/a1.md``) is generated from the
TOML and checked for drift, like ``labs/`` from ``solutions/``::

    python -m ftlab.rubric build     # write rubrics/*.md
    python -m ftlab.rubric check     # exit 1 if a .md differs from its .toml (CI)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ftlab.paths import REPO_ROOT

try:
    import tomllib  # Python 3.11+
except ImportError:  # Python 3.10: the same parser as a package (pinned in requirements.txt)
    import tomli as tomllib

RUBRICS_DIR = REPO_ROOT / "rubrics"
JUDGES = ("auto", "manual")


@dataclass(frozen=True)
class Band:
    points: float
    label: str
    level: str | None = None
    min: float | None = None
    max: float | None = None

    def matches(self, value) -> bool:
        """Does a measured value (a level string or a number; None = not measurable) fall in this band?"""
        if self.level is not None:
            return value == self.level
        if self.min is None and self.max is None:
            return True  # the catch-all band
        if not isinstance(value, (int, float)) or value != value:  # None, NaN
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    @property
    def condition(self) -> str:
        if self.level is not None:
            return self.level
        if self.min is not None:
            return f"≥ {self.min:g}"
        if self.max is not None:
            return f"≤ {self.max:g}"
        return "그 밖"


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    points: float
    judge: str
    bands: tuple[Band, ...]
    measurement: str | None = None
    explain: str = ""
    evidence: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()  # A0: the hidden-test cells (grade ids) this item depends on

    def band_for(self, value) -> Band | None:
        return next((b for b in self.bands if b.matches(value)), None)


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    points: float
    items: tuple[Item, ...]
    question: str = ""


@dataclass(frozen=True)
class Rubric:
    id: str
    title: str
    total: float
    criteria: tuple[Criterion, ...]
    intro: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def items(self) -> list[tuple[Criterion, Item]]:
        return [(c, i) for c in self.criteria for i in c.items]

    @property
    def auto_points(self) -> float:
        return sum(i.points for _, i in self.items if i.judge == "auto")

    @property
    def manual_points(self) -> float:
        return sum(i.points for _, i in self.items if i.judge == "manual")


class RubricError(ValueError):
    """A rubric file that does not add up or names an unknown judge; the message says where."""


def _band(raw: dict, where: str) -> Band:
    unknown = set(raw) - {"points", "label", "level", "min", "max"}
    if unknown:
        raise RubricError(f"{where}: unknown band keys {sorted(unknown)}")
    if "points" not in raw or "label" not in raw:
        raise RubricError(f"{where}: a band needs 'points' and 'label'")
    return Band(float(raw["points"]), raw["label"], raw.get("level"), raw.get("min"), raw.get("max"))


def parse(raw: dict, path: Path | None = None) -> Rubric:
    """Validate a rubric dict (as read from TOML): points add up, bands are ordered, judges are known."""
    name = path.name if path else raw.get("id", "rubric")
    criteria = []
    for ci, c in enumerate(raw.get("criteria", [])):
        items = []
        for ii, it in enumerate(c.get("items", [])):
            where = f"{name}: criteria[{ci}].items[{ii}] ({it.get('id', '?')})"
            if it.get("judge") not in JUDGES:
                raise RubricError(f"{where}: judge must be one of {JUDGES}, got {it.get('judge')!r}")
            if it["judge"] == "auto" and not (it.get("measurement") or it.get("tests")):
                raise RubricError(f"{where}: an auto item needs a 'measurement' or 'tests'")
            bands = tuple(_band(b, f"{where} band {bi}") for bi, b in enumerate(it.get("bands", [])))
            if not bands:
                raise RubricError(f"{where}: no bands")
            if max(b.points for b in bands) != float(it["points"]):
                raise RubricError(f"{where}: the best band gives {max(b.points for b in bands):g}, not the item's {it['points']}")
            if any(b.points > float(it["points"]) or b.points < 0 for b in bands):
                raise RubricError(f"{where}: band points must lie between 0 and {it['points']}")
            items.append(Item(it["id"], it["question"], float(it["points"]), it["judge"], bands, it.get("measurement"),
                              it.get("explain", ""), tuple(it.get("evidence", ())), tuple(it.get("tests", ()))))
        total = sum(i.points for i in items)
        if total != float(c["points"]):
            raise RubricError(f"{name}: criterion '{c['title']}' is worth {c['points']} but its items add up to {total:g}")
        criteria.append(Criterion(c["id"], c["title"], float(c["points"]), tuple(items), c.get("question", "")))
    rubric = Rubric(raw["id"], raw["title"], float(raw["total"]), tuple(criteria), raw.get("intro", ""), path)
    if sum(c.points for c in criteria) != rubric.total:
        raise RubricError(f"{name}: criteria add up to {sum(c.points for c in criteria):g}, total says {rubric.total:g}")
    ids = [i.id for _, i in rubric.items]
    if len(ids) != len(set(ids)):
        raise RubricError(f"{name}: item ids repeat")
    return rubric


def load(assignment: str, rubrics_dir: Path = RUBRICS_DIR) -> Rubric:
    """The rubric of ``assignment`` ("a0", "a1", "a2")."""
    path = Path(rubrics_dir) / f"{assignment}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no rubric {path}: the assignments are a0, a1 and a2")
    with open(path, "rb") as handle:
        return parse(tomllib.load(handle), path)


def _pts(x: float) -> str:
    return f"{x:g}"


def render_markdown(rubric: Rubric) -> str:
    """The Korean rubric students read, generated from the TOML (never edit the .md by hand)."""
    lines = [f"# 채점 기준: {rubric.title}", "",
             f"<!-- generated from rubrics/{rubric.id}.toml by `python -m ftlab.rubric build`; do not edit -->", ""]
    if rubric.intro:
        lines += [rubric.intro, ""]
    lines += [f"총점 {_pts(rubric.total)}점: 자동 채점 {_pts(rubric.auto_points)}점, 교수자 채점 {_pts(rubric.manual_points)}점.",
              "자동 채점 항목은 제출한 `predictions.jsonl`에서 채점기가 숫자를 **다시 계산**해 채점합니다. "
              "`results.json`에 적은 숫자와 다시 계산한 숫자가 다르면 피드백에 표시됩니다.", ""]
    for number, c in enumerate(rubric.criteria, start=1):
        lines += [f"## {number}. {c.title} ({_pts(c.points)}점)", ""]
        if c.question:
            lines += [f"- {c.question}", ""]
        for item in c.items:
            judge = "자동" if item.judge == "auto" else "교수자"
            lines += [f"### {item.question} ({_pts(item.points)}점, {judge})", ""]
            if item.explain:
                lines += [item.explain, ""]
            if item.judge == "auto":
                lines += ["| 점수 | 조건 | 뜻 |", "|---|---|---|"]
                lines += [f"| {_pts(b.points)} | {b.condition} | {b.label} |" for b in item.bands]
            else:
                lines += ["| 점수 | 기술 (descriptor) |", "|---|---|"]
                lines += [f"| {_pts(b.points)} | {b.label} |" for b in item.bands]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def markdown_path(rubric: Rubric, rubrics_dir: Path = RUBRICS_DIR) -> Path:
    return Path(rubrics_dir) / f"{rubric.id}.md"


def all_rubrics(rubrics_dir: Path = RUBRICS_DIR) -> list[Rubric]:
    return [load(p.stem, rubrics_dir) for p in sorted(Path(rubrics_dir).glob("*.toml"))]


def build(rubrics_dir: Path = RUBRICS_DIR) -> list[Path]:
    written = []
    for rubric in all_rubrics(rubrics_dir):
        path, text = markdown_path(rubric, rubrics_dir), render_markdown(rubric)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def check(rubrics_dir: Path = RUBRICS_DIR) -> list[str]:
    problems = []
    sources = {p.stem for p in Path(rubrics_dir).glob("*.toml")}
    for rubric in all_rubrics(rubrics_dir):
        path = markdown_path(rubric, rubrics_dir)
        if not path.exists():
            problems.append(f"rubrics/{path.name} is missing")
        elif path.read_text(encoding="utf-8") != render_markdown(rubric):
            problems.append(f"rubrics/{path.name} differs from what rubrics/{rubric.id}.toml generates")
    for md in Path(rubrics_dir).glob("*.md"):
        if md.stem not in sources and md.name != "README.md":
            problems.append(f"rubrics/{md.name} has no source .toml")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.rubric", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("build", "check"))
    args = parser.parse_args(argv)
    if args.command == "build":
        written = build()
        print(f"rubrics/: {len(written)} Markdown file(s) written")
        return 0
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("run `python -m ftlab.rubric build`", file=sys.stderr)
        return 1
    print("rubrics/*.md are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
