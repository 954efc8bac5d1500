"""Benchmark: batch-grade N copies of a reference submission from its files (no re-execution).

    python assignments/bench_grading.py                      # 100 zipped copies of the A1 reference
    python assignments/bench_grading.py --assignment a2 --copies 100
    python assignments/bench_grading.py --folders            # bundle folders instead of zips

Prints the wall time of the whole batch (reports, grades.csv and the manual
sheet included) and the time per submission. Target: 100 submissions in under
60 s on 2 CPU cores. Measured figures are in assignments/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ftlab import grade, submission

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assignment", default="a1", choices=("a1", "a2"))
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--folders", action="store_true", help="grade bundle folders instead of zips")
    args = parser.parse_args()
    # A2: the synthetic "oracle" bundle (same size and scorers as a real run) until a CPU reference exists
    reference = GOLDEN / args.assignment / "reference"
    if not reference.exists():
        reference = GOLDEN / args.assignment / "oracle"
    with tempfile.TemporaryDirectory(prefix="ftlab-bench-") as tmp:
        inputs = Path(tmp) / "submissions"
        inputs.mkdir()
        for i in range(args.copies):
            if args.folders:
                shutil.copytree(reference, inputs / f"student{i:03d}")
            else:
                submission.pack(reference, inputs / f"student{i:03d}.zip")
        started = time.perf_counter()
        summary = grade.grade_batch([inputs], args.assignment, Path(tmp) / "reports", progress=False)
        seconds = time.perf_counter() - started
    scores = {r.total("auto") for r in summary.results}
    print(f"{args.assignment}: {args.copies} {'folders' if args.folders else 'zips'} graded in {seconds:.1f} s "
          f"({1000 * seconds / args.copies:.0f} ms each; {summary.line()}); automatic scores {sorted(scores)}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
