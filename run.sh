#!/usr/bin/env bash
# One entry point for the whole course. Both commands are idempotent.
#
#   bash run.sh lab    # set up, build the tiny model, open JupyterLab on labs/
#                      # (as root, e.g. in a container: adds --allow-root; FTLAB_INSTRUCTOR=1
#                      #  shows nbgrader's instructor tools; --dry-run only prints the command)
#   bash run.sh test   # set up, run the whole test suite (unit tests + every solution notebook)
#
# Set-up creates .venv, installs the CPU build of torch (torch==2.13.0), the pinned
# requirements and ftlab (editable), and re-installs only when requirements change.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.ftlab-installed"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local want
  want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing torch (CPU build), requirements.txt and ftlab"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first and alone, so nothing later can pull a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -r requirements.txt
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    echo "$want" > "$STAMP"
  fi
}

offline_env() {
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONHASHSEED=0
}

case "${1:-}" in
  lab)
    # The JupyterLab command is built in one place, ftlab/launch.py (tested in tests/test_launch.py).
    if [ "${2:-}" = "--dry-run" ]; then  # print the command; no set-up, no model build, no server
      [ -x "$VENV/bin/python" ] || { echo "[lab] --dry-run needs $VENV: run bash run.sh lab once" >&2; exit 2; }
      exec "$VENV/bin/python" -m ftlab.launch lab --dry-run
    fi
    setup
    offline_env
    "$VENV/bin/python" -m ftlab.tiny build
    exec "$VENV/bin/python" -m ftlab.launch lab
    ;;
  test)
    setup
    offline_env
    export FTLAB_TRACKING=none WANDB_MODE=disabled MPLBACKEND=Agg
    # Two pytest workers with one torch thread each (the reference outputs are executed that way too):
    # a notebook stays on one worker (--dist loadfile); on 2 cores this beats one worker with 2 threads.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
    workers=${FTLAB_TEST_WORKERS:-2}
    start=$(date +%s)
    "$VENV/bin/python" -m ftlab.tiny build
    # The shared SFT model of labs 09-11 and A2 builds in the background on one thread while the
    # first notebooks, which do not need it, run; a lab that loads it waits on its build lock.
    mkdir -p .cache/ftlab
    sft_log=.cache/ftlab/sft-build.log
    "$VENV/bin/python" -m ftlab.checkpoints build > "$sft_log" 2>&1 &
    sft_pid=$!
    trap 'kill "$sft_pid" 2>/dev/null || true' EXIT
    # Longest notebooks first (times in their headers), the SFT-free ones before those that need
    # the SFT model, then the rest: neither worker is left alone with a long notebook at the end.
    first="08_lora_qlora_experiments 05_sft_and_prompt_templates 10_rlhf_and_variants 11_distillation_and_evaluation 09_dpo_tone_alignment"
    paths=()
    for name in $first; do paths+=("solutions/$name.ipynb"); done
    for nb in solutions/*.ipynb; do
      case " $first " in *" $(basename "$nb" .ipynb) "*) ;; *) paths+=("$nb") ;; esac
    done
    "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=20 -n "$workers" --dist loadfile \
      --no-loadscope-reorder --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg \
      "${paths[@]}" tests "${@:2}"
    wait "$sft_pid" || { echo "[test] the SFT model build failed:" >&2; cat "$sft_log" >&2; exit 1; }
    trap - EXIT
    echo "[test] SFT model: $(tail -n 1 "$sft_log")"
    echo "[test] total $(( $(date +%s) - start )) s after set-up"
    ;;
  *)
    echo "usage: bash run.sh lab | bash run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
