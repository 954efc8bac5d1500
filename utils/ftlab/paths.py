"""Where things live: the repository, the shipped data, and the build caches.

Every path can be overridden with an environment variable, so that a learner
on Colab (or a test) can point the course at another checkout or cache.
"""

from __future__ import annotations

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
