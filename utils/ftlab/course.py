"""Course-wide settings read from ``[tool.ftlab]`` in the repository's ``pyproject.toml``.

The course repository URL lives there and nowhere else; the Colab badges and
the Colab install cell are generated from it (``ftlab.colab``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ftlab.paths import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"
GITHUB_URL = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[\w.-]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Course:
    """Where the course lives on GitHub."""

    repository: str  # https://github.com/<owner>/<name>
    branch: str  # branch the Colab badges open

    @property
    def slug(self) -> str:
        """``owner/name`` of the GitHub repository."""
        match = GITHUB_URL.match(self.repository)
        return f"{match['owner']}/{match['name']}"

    def colab_url(self, notebook_path: str) -> str:
        """Colab URL that opens ``notebook_path`` (relative to the repository root) from GitHub."""
        return f"https://colab.research.google.com/github/{self.slug}/blob/{self.branch}/{notebook_path}"


def _ftlab_table(pyproject: Path) -> dict:
    """``[tool.ftlab]`` of ``pyproject``; on Python 3.10 (no ``tomllib``) its ``key = "value"`` lines."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        section = re.search(r"^\[tool\.ftlab\]\s*$(.*?)(?=^\[|\Z)", pyproject.read_text(encoding="utf-8"), re.M | re.S)
        return dict(re.findall(r'^(\w+)\s*=\s*"([^"]*)"', section.group(1), re.M)) if section else {}
    with open(pyproject, "rb") as handle:
        return tomllib.load(handle).get("tool", {}).get("ftlab", {})


def load_course(pyproject: Path = PYPROJECT) -> Course:
    """The ``[tool.ftlab]`` table of ``pyproject.toml`` as a :class:`Course`."""
    table = _ftlab_table(Path(pyproject))
    repository = table.get("repository", "")
    if not GITHUB_URL.match(repository):
        raise ValueError(
            f"{pyproject}: [tool.ftlab] repository = {repository!r} is not a https://github.com/<owner>/<name> URL"
        )
    return Course(repository=repository.rstrip("/").removesuffix(".git"), branch=table.get("branch", "main"))
