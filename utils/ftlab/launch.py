"""How ``bash run.sh lab`` starts JupyterLab: the one place that builds the command.

``run.sh lab`` sets up the course, builds the tiny model and then runs
``python -m ftlab.launch lab``, which prints what it does and replaces itself
with JupyterLab. ``bash run.sh lab --dry-run`` (or ``python -m ftlab.launch lab
--dry-run``) prints the same lines and the command without setting up or
starting anything.

Decisions, each printed as a ``[lab]`` line when it applies:

- **root** (``id -u`` is 0, as in most containers): JupyterLab refuses to start
  as root unless given ``--allow-root``, so it is added, and only then.
- **no browser** (root, or Linux without ``DISPLAY``/``WAYLAND_DISPLAY``):
  ``--no-browser``, so JupyterLab does not try to open one; the learner copies
  the tokenised URL JupyterLab prints into a browser.
- **listening address**: JupyterLab's default (localhost only). Inside Docker,
  publishing the port (``docker run -p 8888:8888``) also needs
  ``FTLAB_LAB_IP=0.0.0.0``, an explicit opt-in because it exposes the server
  (still behind its token) to every network the machine is on.
- **nbgrader**: learners do not see nbgrader's instructor tools (the Nbgrader
  menu, Create Assignment, Formgrader, Validate). ``FTLAB_INSTRUCTOR=1`` turns
  them on. Nothing in the virtual environment changes: each mode gets its own
  small Jupyter config folder under ``.cache/ftlab/`` that is put first on
  ``JUPYTER_CONFIG_PATH`` for this launch only. It enables or disables the four
  nbgrader server extensions (``jupyter_server_config.d``) and the
  ``@jupyter/nbgrader`` lab extension (``labconfig/page_config.json``).

Check a mode without starting a server::

    JUPYTER_CONFIG_PATH=.cache/ftlab/jupyter-learner .venv/bin/jupyter labextension list
    python -m ftlab.launch extensions            # the server extensions the server would load
    FTLAB_INSTRUCTOR=1 python -m ftlab.launch extensions
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ftlab.paths import CACHE_DIR, LABS_DIR

NBGRADER_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)
NBGRADER_LAB_EXTENSION = "@jupyter/nbgrader"
TRUE_VALUES = ("1", "true", "yes", "on")


def instructor_mode(env: Mapping[str, str]) -> bool:
    """True when ``FTLAB_INSTRUCTOR`` is set to 1/true/yes/on."""
    return env.get("FTLAB_INSTRUCTOR", "").strip().lower() in TRUE_VALUES


def jupyter_config_dir(instructor: bool, cache_dir: Path = CACHE_DIR) -> Path:
    """The per-mode Jupyter config folder (gitignored, under the ftlab cache)."""
    return Path(cache_dir) / ("jupyter-instructor" if instructor else "jupyter-learner")


def write_jupyter_config(instructor: bool, cache_dir: Path = CACHE_DIR) -> Path:
    """Write the mode's config folder (idempotent) and return it.

    ``jupyter_server_config.d/ftlab-nbgrader.json`` switches the nbgrader server
    extensions; ``labconfig/page_config.json`` switches the lab extension. Both
    files are read by Jupyter from every folder on ``JUPYTER_CONFIG_PATH``, which
    takes precedence over the user's and the virtual environment's config.
    """
    root = jupyter_config_dir(instructor, cache_dir)
    server = {"ServerApp": {"jpserver_extensions": {name: instructor for name in NBGRADER_SERVER_EXTENSIONS}}}
    page = {"disabledExtensions": {NBGRADER_LAB_EXTENSION: not instructor}}
    for path, data in ((root / "jupyter_server_config.d" / "ftlab-nbgrader.json", server),
                       (root / "labconfig" / "page_config.json", page)):
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return root


@dataclass
class LabLaunch:
    """Everything ``run.sh lab`` needs: the command, the extra environment and the log lines."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    config_dir: Path | None = None

    def shell(self) -> str:
        """The command as one copy-pasteable shell line."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join(assignments + [shlex.join(self.argv)])


def plan_lab(uid: int, env: Mapping[str, str], *, python: str = sys.executable,
             platform: str = sys.platform, labs_dir: Path = LABS_DIR,
             cache_dir: Path = CACHE_DIR) -> LabLaunch:
    """Build the JupyterLab command for user id ``uid`` and environment ``env`` (pure: writes nothing)."""
    argv = [python, "-m", "jupyter", "lab"]
    log: list[str] = []
    root = uid == 0
    if root:
        argv.append("--allow-root")
        log.append("[lab] running as root (container): starting JupyterLab with --allow-root")
    headless = platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    if root or headless:
        argv.append("--no-browser")
        why = "running as root" if root else "no DISPLAY"
        log.append(f"[lab] {why}: --no-browser (no browser is opened here; use one on your host)")
    ip = env.get("FTLAB_LAB_IP", "").strip()
    if ip:
        argv.append(f"--ServerApp.ip={ip}")
        log.append(f"[lab] FTLAB_LAB_IP={ip}: listening on {ip} (for Docker port publishing, e.g. "
                   "docker run -p 8888:8888); anyone who can reach the port still needs the token")

    instructor = instructor_mode(env)
    config_dir = jupyter_config_dir(instructor, cache_dir)
    existing = env.get("JUPYTER_CONFIG_PATH", "")
    extra_env = {"JUPYTER_CONFIG_PATH": str(config_dir) + (os.pathsep + existing if existing else "")}
    if instructor:
        log.append("[lab] FTLAB_INSTRUCTOR=1: nbgrader's instructor tools are ON "
                   "(Nbgrader menu, Formgrader, Create Assignment, Validate)")
    else:
        log.append("[lab] learner mode: nbgrader's instructor tools are off "
                   "(instructors: FTLAB_INSTRUCTOR=1 bash run.sh lab)")

    argv.append(str(Path(labs_dir)))
    log.append("[lab] open the URL with the token that JupyterLab prints below "
               "(http://localhost:8888/lab?token=...; another port if 8888 is taken)")
    return LabLaunch(argv=argv, env=extra_env, log=log, config_dir=config_dir)


def jupyter_lab_command(uid: int, env: Mapping[str, str], **kwargs) -> list[str]:
    """Just the argument list of :func:`plan_lab`."""
    return plan_lab(uid, env, **kwargs).argv


def effective_server_extensions(config_dir: Path) -> dict[str, bool]:
    """The server extensions (name -> enabled) a server would load with ``config_dir`` first on the config path.

    ``jupyter server extension list`` lists only the user, environment and system
    folders, not ``JUPYTER_CONFIG_PATH``; this merges them the way the server does.
    """
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    paths = [str(config_dir)] + [p for p in jupyter_config_path() if p != str(config_dir)]
    return dict(sorted(ExtensionConfigManager(read_config_path=paths).get_jpserver_extensions().items()))


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.launch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="start JupyterLab on labs/")
    lab.add_argument("--dry-run", action="store_true", help="print the command instead of starting it")
    sub.add_parser("extensions", help="print which nbgrader extensions this mode's server would load")
    args = parser.parse_args(argv)

    launch = plan_lab(_uid(), os.environ)
    write_jupyter_config(instructor_mode(os.environ))
    if args.command == "extensions":
        for name, enabled in effective_server_extensions(launch.config_dir).items():
            if name.startswith("nbgrader"):
                print(f"{name} {'enabled' if enabled else 'disabled'}")
        return 0
    for line in launch.log:
        print(line, flush=True)
    if args.dry_run:
        print(f"[lab] command: {launch.shell()}", flush=True)
        return 0
    os.execve(launch.argv[0], launch.argv, {**os.environ, **launch.env})
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
