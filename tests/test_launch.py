"""``bash run.sh lab``: the JupyterLab command (root, browser, nbgrader switch), without starting a server."""

import json
import os
import subprocess
import sys

import pytest

from ftlab import launch
from ftlab.paths import LABS_DIR, REPO_ROOT

HEADLESS = {"PATH": "/usr/bin"}  # Linux without DISPLAY
DESKTOP = {"DISPLAY": ":0"}


def plan(uid, env, **kwargs):
    kwargs.setdefault("platform", "linux")
    return launch.plan_lab(uid, env, python="python", **kwargs)


def test_root_gets_allow_root_and_says_so():
    launch_ = plan(0, DESKTOP)
    assert "--allow-root" in launch_.argv and "--no-browser" in launch_.argv
    assert any("running as root" in line and "--allow-root" in line for line in launch_.log)


def test_non_root_has_no_allow_root():
    launch_ = plan(1000, DESKTOP)
    assert "--allow-root" not in launch_.argv and "--no-browser" not in launch_.argv
    assert not any("root" in line for line in launch_.log)
    assert launch.jupyter_lab_command(1000, DESKTOP, python="python", platform="linux") == launch_.argv


def test_browser_only_where_there_is_one():
    assert "--no-browser" in plan(1000, HEADLESS).argv
    assert "--no-browser" not in plan(1000, {"WAYLAND_DISPLAY": "wayland-0"}).argv
    assert "--no-browser" not in plan(1000, {}, platform="darwin").argv  # macOS has no DISPLAY


def test_notebook_directory_is_labs_and_the_url_is_announced():
    launch_ = plan(1000, DESKTOP)
    assert launch_.argv[:4] == ["python", "-m", "jupyter", "lab"]
    assert launch_.argv[-1] == str(LABS_DIR) and LABS_DIR == REPO_ROOT / "labs"
    assert any("lab?token=" in line for line in launch_.log)


def test_listening_address_is_an_explicit_opt_in():
    assert not any(a.startswith("--ServerApp.ip") for a in plan(0, HEADLESS).argv)
    launch_ = plan(0, {"FTLAB_LAB_IP": "0.0.0.0"})
    assert "--ServerApp.ip=0.0.0.0" in launch_.argv
    assert any("FTLAB_LAB_IP=0.0.0.0" in line for line in launch_.log)


@pytest.mark.parametrize("value, instructor", [(None, False), ("0", False), ("", False),
                                               ("1", True), ("true", True), ("YES", True)])
def test_instructor_switch(tmp_path, value, instructor):
    env = dict(DESKTOP) if value is None else {**DESKTOP, "FTLAB_INSTRUCTOR": value}
    launch_ = plan(1000, env, cache_dir=tmp_path)
    assert launch.instructor_mode(env) is instructor
    expected = tmp_path / ("jupyter-instructor" if instructor else "jupyter-learner")
    assert launch_.config_dir == expected
    assert launch_.env["JUPYTER_CONFIG_PATH"] == str(expected)
    mode_line = next(line for line in launch_.log if "nbgrader" in line)
    assert ("are ON" in mode_line) is instructor and ("are off" in mode_line) is not instructor


def test_existing_config_path_is_kept_after_ours(tmp_path):
    launch_ = plan(1000, {"JUPYTER_CONFIG_PATH": "/etc/mine"}, cache_dir=tmp_path)
    assert launch_.env["JUPYTER_CONFIG_PATH"] == os.pathsep.join([str(tmp_path / "jupyter-learner"), "/etc/mine"])


@pytest.mark.parametrize("instructor", [False, True])
def test_config_files_switch_every_nbgrader_extension(tmp_path, instructor):
    root = launch.write_jupyter_config(instructor, tmp_path)
    server = json.loads((root / "jupyter_server_config.d" / "ftlab-nbgrader.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"] == {name: instructor
                                                          for name in launch.NBGRADER_SERVER_EXTENSIONS}
    page = json.loads((root / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {"@jupyter/nbgrader": not instructor}
    # the server would load exactly this (the venv's nbgrader.json enables all four)
    effective = launch.effective_server_extensions(root)
    assert {n: effective[n] for n in launch.NBGRADER_SERVER_EXTENSIONS} == server["ServerApp"]["jpserver_extensions"]
    assert effective["jupyterlab"] is True
    assert launch.write_jupyter_config(instructor, tmp_path) == root  # idempotent


def test_learner_lab_extension_list_shows_nbgrader_disabled(tmp_path):
    root = launch.write_jupyter_config(False, tmp_path)
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(root), "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], env=env,
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    line = next(l for l in text.splitlines() if "@jupyter/nbgrader v" in l)
    assert "disabled" in line, text


def test_run_sh_dry_run_prints_the_command_without_setup():
    env = {k: v for k, v in os.environ.items() if k not in ("FTLAB_INSTRUCTOR", "FTLAB_LAB_IP")}
    out = subprocess.run(["bash", "run.sh", "lab", "--dry-run"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "[setup]" not in out.stdout and "ftlab.tiny" not in out.stdout
    command = next(l for l in out.stdout.splitlines() if l.startswith("[lab] command:"))
    assert "-m jupyter lab" in command and command.endswith(str(LABS_DIR))
    assert "jupyter-learner" in command
    assert ("--allow-root" in command) == (os.getuid() == 0)
