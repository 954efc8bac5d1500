"""The submission bundle of the graded assignments (A0, A1, A2): write it, pack it, verify it.

The last cell of every starter notebook makes one call::

    from ftlab import submission
    bundle = submission.write_bundle("submission", "a1", notebook="A1_domain_lora.ipynb",
                                     results=results, predictions=predictions, report=report_md)
    submission.pack(bundle)          # -> submission.zip, the file to hand in

A bundle is a folder with exactly these files:

- ``notebook.ipynb``: a copy of the notebook as last saved (save before the call);
- ``results.json``: claimed metrics (``metrics.before`` / ``metrics.after``), configs,
  loss history, seeds, the profile, library versions (filled in here);
- ``predictions.jsonl``: one row per held-out question and stage (``before`` / ``after``):
  ``{"id", "stage", "kind", "fact_id", "question", "answer"}``;
- ``report.md``: the written report (Korean);
- ``manifest.json``: the SHA-256 of every other file.

The grader (``python -m ftlab.grade``) recomputes every metric from
``predictions.jsonl`` and checks the manifest. Commands::

    python -m ftlab.submission pack submission/      # -> submission.zip
    python -m ftlab.submission verify submission/    # manifest check, exit 1 on a mismatch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

BUNDLE_FILES = ("notebook.ipynb", "results.json", "predictions.jsonl", "report.md")
MANIFEST = "manifest.json"
ASSIGNMENTS = ("a0", "a1", "a2")
STAGES = ("before", "after")
VERSION_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "scipy", "ftlab")
PREDICTION_FIELDS = ("id", "stage", "kind", "fact_id", "question", "answer")


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(names: Iterable[str] = VERSION_PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when missing), plus Python's: the grader compares them with the pins."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def prediction_row(row: Mapping, stage: str, answer: str) -> dict:
    """One ``predictions.jsonl`` row from a data row (SFT row or preference-pair row) and an answer."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    question = row.get("instruction") or row.get("prompt") or row.get("question")
    if not question:
        raise ValueError(f"row {row.get('id')!r} has no 'instruction', 'prompt' or 'question'")
    return {"id": row["id"], "stage": stage, "kind": row.get("kind", "in_kb"), "fact_id": row.get("fact_id"),
            "question": question, "answer": answer}


def _check_predictions(predictions: Sequence[Mapping]) -> None:
    if not predictions:
        raise ValueError("predictions is empty: give the answer to every held-out question, before and after")
    seen = set()
    for i, row in enumerate(predictions):
        missing = [f for f in PREDICTION_FIELDS if f not in row]
        if missing:
            raise ValueError(f"predictions[{i}] lacks {', '.join(missing)} (use submission.prediction_row)")
        if row["stage"] not in STAGES:
            raise ValueError(f"predictions[{i}]: stage {row['stage']!r} is not one of {STAGES}")
        key = (row["id"], row["stage"])
        if key in seen:
            raise ValueError(f"predictions[{i}]: ({row['id']!r}, {row['stage']!r}) appears twice")
        seen.add(key)
    for stage in STAGES:
        ids = {r["id"] for r in predictions if r["stage"] == stage}
        other = {r["id"] for r in predictions if r["stage"] != stage}
        if ids != other:
            raise ValueError(f"'before' and 'after' must answer the same questions ({len(ids ^ other)} differ)")


def _json_default(value):
    """numpy numbers, paths and sets in results: written as plain JSON."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (Path, set, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"results contains a {type(value).__name__}, which JSON cannot store: convert it first")


def write_manifest(folder: Path | str) -> dict:
    """Hash every file of the bundle (except the manifest) into ``manifest.json``."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): sha256_file(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": 1, "algorithm": "sha256", "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def write_bundle(
    out_dir: Path | str,
    assignment: str,
    results: Mapping,
    predictions: Sequence[Mapping] = (),
    report: str | Path = "",
    notebook: Path | str | None = None,
) -> Path:
    """Write the submission folder ``out_dir`` (replaced if it exists) and return its path.

    ``results`` is the notebook's dict of claimed metrics, configs, loss history
    and seeds; library versions, the assignment id and the time are added.
    ``report`` is Markdown text or the path of a Markdown file. ``notebook`` is
    the notebook file to copy (default: the only ``*.ipynb`` in the working folder).
    A0 has no predictions; A1 and A2 must give them.
    """
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    predictions = [dict(r) for r in predictions]
    if assignment != "a0":
        _check_predictions(predictions)
    if notebook is None:
        found = sorted(Path.cwd().glob("*.ipynb"))
        if len(found) != 1:
            raise ValueError(f"{len(found)} notebooks in {Path.cwd()}: pass notebook='<your notebook>.ipynb'")
        notebook = found[0]
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook} not found: pass the path of the notebook you are submitting")
    out = Path(out_dir)
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(notebook, staging / "notebook.ipynb")
    payload = {"assignment": assignment, **dict(results), "versions": library_versions(),
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (staging / "results.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False, default=_json_default) + "\n",
                                          encoding="utf-8")
    lines = [json.dumps(r, ensure_ascii=False, default=_json_default) for r in predictions]
    (staging / "predictions.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    text = Path(report).read_text(encoding="utf-8") if isinstance(report, Path) else str(report)
    (staging / "report.md").write_text(text, encoding="utf-8")
    write_manifest(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def pack(folder: Path | str, zip_path: Path | str | None = None) -> Path:
    """Zip the bundle folder (entries under one top folder, named after it); return the zip's path."""
    folder = Path(folder)
    zip_path = Path(zip_path) if zip_path is not None else folder.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return zip_path


def verify_manifest(folder: Path | str) -> list[str]:
    """Problems with the manifest of a bundle folder, in English (empty when every hash matches)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return [f"{MANIFEST} is missing"]
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["files"]
        if not isinstance(listed, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return [f"{MANIFEST} is not a valid manifest (expected {{\"files\": {{name: sha256}}}})"]
    problems = []
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    for name, digest in sorted(listed.items()):
        if name not in present:
            problems.append(f"{name} is listed in the manifest but missing")
        elif sha256_file(folder / name) != digest:
            problems.append(f"{name} changed after the bundle was written (SHA-256 differs)")
    for name in sorted(present - set(listed)):
        problems.append(f"{name} is not in the manifest (added after the bundle was written)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.submission", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="zip a bundle folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, default=None)
    v = sub.add_parser("verify", help="check a bundle folder against its manifest")
    v.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        problems = verify_manifest(args.folder)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        print(pack(args.folder, args.out))
        return 0
    problems = verify_manifest(args.folder)
    print("\n".join(problems) if problems else "manifest OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
