"""Where things live: the repository, the shipped data, and the build caches.

Every path can be overridden with an environment variable, so that a learner
on Colab (or a test) can point the course at another checkout or cache.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _repo_root() -> Path:
    override = os.environ.get("FTLAB_REPO")
    if override:
        return Path(override).resolve()
    # utils/ftlab/paths.py -> repository root is two levels above utils/
    return Path(__file__).resolve().parents[2]


REPO_ROOT: Path = _repo_root()
DATA_DIR: Path = REPO_ROOT / "data"
SOLUTIONS_DIR: Path = REPO_ROOT / "solutions"
LABS_DIR: Path = REPO_ROOT / "labs"

# Built artefacts (the tiny model, tokenizer, training outputs) are gitignored.
CACHE_DIR: Path = Path(os.environ.get("FTLAB_CACHE", REPO_ROOT / ".cache" / "ftlab")).resolve()


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder inside the ftlab cache."""
    path = CACHE_DIR.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def build_lock(path: Path):
    """Hold an exclusive lock (``<name>.lock`` beside ``path``) while the artefact at ``path`` is checked or
    built: a second process (a notebook, ``run.sh test``'s background build) waits instead of building it too."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
