"""Run a notebook's code cells in a separate, confined process: the grader's re-execution.

``run_cells(sources, workdir, limits)`` starts a fresh Python process (never a
kernel shared with anything else) in ``workdir`` (a copy made by the grader) and
executes the cells one after another in one namespace. What confines it:

- **no network**: the process runs in its own Linux network namespace
  (``unshare --net --map-root-user``), which has no interface but a loopback
  that is down, so every connection fails with "Network is unreachable", even
  to the grading machine's own 127.0.0.1. Where user namespaces are not
  allowed (some containers), a socket guard installed before the first cell
  refuses ``connect`` instead (``Execution.network_block`` says which). In both
  cases an audit hook records every attempted connection (``network_attempts``).
- **offline environment**: a fresh environment with ``HF_HUB_OFFLINE=1``,
  ``TRANSFORMERS_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``, ``WANDB_MODE=disabled``,
  ``FTLAB_TRACKING=none``; nothing else is inherited but PATH, locale and the
  ``FTLAB_*`` paths.
- **time**: a per-cell timeout (SIGALRM inside the child; a cell stuck in C code
  is killed from outside after the timeout plus a grace period) and a total
  timeout (the whole process group is killed).
- **memory**: ``RLIMIT_AS`` (address space) in MiB; an allocation past it raises
  ``MemoryError`` in the cell, or the process dies: either way the cell fails.
- **output**: each cell keeps at most ``max_output`` characters of stdout and
  stderr (the rest is counted and dropped); files it writes are capped by
  ``RLIMIT_FSIZE``.

A cell that did not finish with status ``ok`` never counts as passed: a dead
process leaves its remaining cells ``not_run``. Stderr output alone (a library
warning) never fails a cell; only an exception does.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

CELL_STATUSES = ("ok", "error", "timeout", "memory", "died", "not_run")


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 60.0  # seconds per cell
    total_timeout: float = 600.0  # seconds for the whole notebook
    memory_mb: int = 4096  # address-space limit of the process
    max_output: int = 20_000  # characters of output kept per cell
    max_file_mb: int = 256  # largest file the notebook may write
    block_network: bool = True


@dataclass
class CellRun:
    index: int  # position in the list of sources
    status: str  # one of CELL_STATUSES
    output: str = ""  # stdout + stderr, truncated
    error: str = ""  # exception type and message (last line of the traceback)
    seconds: float = 0.0
    truncated: int = 0  # characters dropped

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Execution:
    status: str  # "completed" (every cell ran; some may have raised), "timeout", "died"
    cells: list[CellRun] = field(default_factory=list)
    seconds: float = 0.0
    network_block: str = "none"  # "netns", "socket-guard" or "none"
    network_attempts: list[str] = field(default_factory=list)
    message: str = ""
    returncode: int | None = None

    def summary_ko(self) -> str:
        counts = {s: sum(c.status == s for c in self.cells) for s in CELL_STATUSES}
        parts = ", ".join(f"{s} {n}" for s, n in counts.items() if n)
        text = f"재실행 {self.status} ({self.seconds:.1f}초; 셀 {parts}; 네트워크 차단: {self.network_block})"
        if self.network_attempts:
            text += f"; 차단된 네트워크 접속 시도: {', '.join(self.network_attempts[:5])}"
        return text + (f"; {self.message}" if self.message else "")


@lru_cache(maxsize=1)
def netns_available() -> bool:
    """Can this machine start a process in a fresh network namespace without root (``unshare -rn``)?"""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "--net", "--map-root-user", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def sandbox_env(workdir: Path) -> dict[str, str]:
    """The child's environment: offline, no tracking, nothing secret inherited."""
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV") or k.startswith("FTLAB_") and k != "FTLAB_TRACKING"}
    keep.update({
        "HOME": str(workdir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled", "FTLAB_TRACKING": "none", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"), "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    })
    cache = Path(os.environ.get("FTLAB_CACHE", Path(__file__).resolve().parents[2] / ".cache" / "ftlab"))
    keep["FTLAB_CACHE"] = str(cache)
    return keep


def _limit(memory_mb: int, max_file_mb: int):
    def apply():
        os.setsid()
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        size = max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_cells(sources: Sequence[str], workdir: Path | str, limits: Limits = Limits()) -> Execution:
    """Execute ``sources`` (code cells, in order) in a confined child process in ``workdir``; see the module doc."""
    workdir = Path(workdir)
    control = Path(tempfile.mkdtemp(prefix="ftlab-sandbox-"))
    try:
        spec = {"sources": list(sources), "cell_timeout": limits.cell_timeout, "max_output": limits.max_output,
                "socket_guard": False}
        command = [sys.executable, "-I", "-X", "utf8", str(Path(__file__).resolve()), "child",
                   str(control / "spec.json"), str(control / "cells.jsonl")]
        block = "none"
        if limits.block_network:
            if netns_available():
                command = [shutil.which("unshare"), "--net", "--map-root-user"] + command
                block = "netns"
            else:
                spec["socket_guard"] = True
                block = "socket-guard"
        (control / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        started = time.monotonic()
        with open(control / "stdout.txt", "wb") as sink:
            proc = subprocess.Popen(command, cwd=workdir, env=sandbox_env(workdir), stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT,
                                    preexec_fn=_limit(limits.memory_mb, limits.max_file_mb))
            status, message, seen, last_progress = "completed", "", 0, started
            while proc.poll() is None:
                time.sleep(0.02)
                now = time.monotonic()
                count = _count_lines(control / "cells.jsonl")
                if count != seen:
                    seen, last_progress = count, now
                if now - started > limits.total_timeout:
                    _kill(proc)
                    status, message = "timeout", f"total timeout of {limits.total_timeout:g} s"
                elif now - last_progress > limits.cell_timeout + max(1.0, min(5.0, limits.cell_timeout)):
                    _kill(proc)
                    status, message = "timeout", f"cell {seen} ignored its {limits.cell_timeout:g} s timeout and was killed"
        seconds = time.monotonic() - started
        records = _read_records(control / "cells.jsonl")
        cells = [CellRun(**{k: r[k] for k in ("index", "status", "output", "error", "seconds", "truncated")})
                 for r in records if r.get("type") == "cell"]
        attempts = [a for r in records if r.get("type") == "network" for a in r["attempts"]]
        rc = proc.returncode
        if status == "completed" and len(cells) < len(sources):
            status = "died"
            killed = -rc if rc is not None and rc < 0 else None
            name = signal.Signals(killed).name if killed else f"exit code {rc}"
            message = f"the process ended during cell {len(cells)} ({name}; memory limit {limits.memory_mb} MiB?)"
            if killed == signal.SIGXFSZ:
                message = f"a file grew past {limits.max_file_mb} MiB"
        if len(cells) < len(sources):
            current = len(cells)
            cells.append(CellRun(current, "timeout" if status == "timeout" else "died", error=message))
            cells += [CellRun(i, "not_run") for i in range(current + 1, len(sources))]
        tail = (control / "stdout.txt").read_bytes()[-2000:].decode("utf-8", "replace")
        if status != "completed" and tail.strip():
            message += f" | process output: {tail.strip()[-500:]}"
        return Execution(status, cells, seconds, block, attempts, message, rc)
    finally:
        shutil.rmtree(control, ignore_errors=True)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n") and b'"type": "cell"' in line)
    except FileNotFoundError:
        return 0


def _read_records(path: Path) -> list[dict]:
    records = []
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut short by a kill
    except FileNotFoundError:
        pass
    return records


# ---------------------------------------------------------------------------
# The child process (runs this file as a script: no ftlab import needed)
# ---------------------------------------------------------------------------


class CellTimeout(BaseException):
    """Raised by SIGALRM in the child; a BaseException so ``except Exception`` in a cell cannot swallow it."""


class _CappedStream:
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def write(self, text) -> int:
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"

    def getvalue(self) -> str:
        return "".join(self.parts)


def _strip_magics(source: str) -> str:
    """IPython magics and shell escapes (``%pip``, ``!ls``) become no-ops: the child is plain Python."""
    return "\n".join(f"pass  # {line.strip()}" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def _child(spec_path: str, out_path: str) -> int:
    import socket
    import traceback

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = open(out_path, "a", encoding="utf-8")
    attempts: list[str] = []

    def audit(event, args):
        if event == "socket.connect":
            address = args[1]
            attempts.append(":".join(str(a) for a in address[:2]) if isinstance(address, tuple) else str(address))
        elif event == "socket.getaddrinfo" and args[0] not in (None, "localhost"):
            attempts.append(f"{args[0]}:{args[1]} (DNS)")

    sys.addaudithook(audit)
    if spec["socket_guard"]:
        def refuse(self, address=None, *args, **kwargs):
            attempts.append(":".join(str(a) for a in address[:2]) if isinstance(address, tuple) else str(address))
            raise OSError(101, "Network is unreachable (blocked by the grader's sandbox)")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse

    def on_alarm(signum, frame):
        raise CellTimeout(f"cell timed out after {spec['cell_timeout']:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    namespace = {"__name__": "__main__"}
    real_out, real_err = sys.stdout, sys.stderr
    for index, source in enumerate(spec["sources"]):
        stream = _CappedStream(spec["max_output"])
        status, error, started = "ok", "", time.monotonic()
        sys.stdout = sys.stderr = stream
        signal.setitimer(signal.ITIMER_REAL, spec["cell_timeout"])
        try:
            exec(compile(_strip_magics(source), f"<cell {index}>", "exec"), namespace)
        except CellTimeout as err:
            status, error = "timeout", str(err)
        except MemoryError:
            status, error = "memory", "MemoryError: the cell allocated past the memory limit"
        except BaseException as err:  # noqa: BLE001 - a student's cell may raise anything, SystemExit included
            status = "error"
            error = "".join(traceback.format_exception_only(type(err), err)).strip()[-1000:]
            stream.write(traceback.format_exc(limit=5)[-3000:])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = real_out, real_err
        record = {"type": "cell", "index": index, "status": status, "output": stream.getvalue(), "error": error,
                  "seconds": round(time.monotonic() - started, 3), "truncated": stream.dropped}
        if attempts:  # before the cell's record: the parent may kill the process as soon as it sees it
            out.write(json.dumps({"type": "network", "attempts": attempts}) + "\n")
            attempts.clear()
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        sys.exit(_child(sys.argv[2], sys.argv[3]))
    print("internal entry point of ftlab.sandbox; use ftlab.sandbox.run_cells", file=sys.stderr)
    sys.exit(2)
