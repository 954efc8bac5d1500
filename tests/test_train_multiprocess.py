"""ftlab.train under `accelerate launch`: two CPU processes (gloo) equal one process with the doubled batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from ftlab.paths import REPO_ROOT

STEPS, BATCH, ROWS = 3, 4, 64
TRAIN_ARGS = ["lora", "--max-steps", str(STEPS), "--train-rows", str(ROWS), "--lora-r", "8"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", FTLAB_PROFILE="cpu", FTLAB_TRACKING="none",
               WANDB_MODE="disabled", PYTHONPATH=str(REPO_ROOT / "utils"))
    env.pop("FTLAB_UNSLOTH", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd):
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_doubled_batch(tmp_path):
    from ftlab import tiny

    tiny.ensure_built()  # build (or wait for) the tiny model once, not in each process
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "ftlab.train", *TRAIN_ARGS, "--batch-size", str(2 * BATCH), "--output-dir", str(one)])
    # --multi_gpu selects accelerate's torchrun launcher; with the CPU profile (use_cpu=True) the
    # processes join a gloo process group. (--cpu alone would need mpirun for several processes.)
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "--main_process_port", str(_free_port()),
          "-m", "ftlab.train", *TRAIN_ARGS, "--batch-size", str(BATCH), "--output-dir", str(two)])

    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    assert ranks[0]["effective_batch_size"] == single["effective_batch_size"] == 2 * BATCH
    assert ranks[0]["steps"] == single["steps"] == STEPS
    assert ranks[0]["loss"] == ranks[1]["loss"]  # the logged loss is the mean over both ranks
    assert ranks[0]["loss"] == pytest.approx(single["loss"], rel=1e-5)

    w0, w1, w = (torch.load(path) for path in (two / "rank0.pt", two / "rank1.pt", one / "rank0.pt"))
    assert w0.keys() == w1.keys() == w.keys() and len(w) > 0
    for name in w:
        assert torch.equal(w0[name], w1[name]), f"{name} differs between the ranks"
        torch.testing.assert_close(w0[name], w[name], rtol=1e-4, atol=1e-5, msg=f"{name}: 2 x {BATCH} vs 1 x {2 * BATCH}")


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_shipped_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type == ("MULTI_GPU" if name == "ddp" else "FSDP")
    assert config.num_machines == 1 and not config.use_cpu
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2


def test_training_kwargs_follow_the_command_line():
    from ftlab import profile, train

    args = train.build_parser().parse_args(["dpo", "--batch-size", "3", "--max-steps", "5"])
    kwargs = train.training_kwargs(profile.get_profile("cpu"), args)
    assert (kwargs["per_device_train_batch_size"], kwargs["max_steps"], kwargs["learning_rate"]) == (3, 5, 5e-4)
    assert kwargs["use_cpu"] and kwargs["lr_scheduler_type"] == "constant" and kwargs["dataloader_drop_last"]
    args = train.build_parser().parse_args(["sft"])
    assert train.training_kwargs(profile.get_profile("cpu"), args)["learning_rate"] == 2e-3
