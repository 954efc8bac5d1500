"""Experiment tracking mode and run names."""

import pytest

from ftlab import tracking


def test_ci_disables_tracking():
    assert tracking.tracking_mode({"CI": "true"}) == "none"
    env = {"CI": "true"}
    assert tracking.configure(env) == "none" and env["WANDB_MODE"] == "disabled"


def test_offline_by_default(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert tracking.configure(env) == "wandb"
    assert env["WANDB_MODE"] == "offline"


def test_online_once_logged_in(tmp_path):
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password x\n")
    assert tracking.tracking_mode({"HOME": str(tmp_path)}) == "wandb-online"
    assert tracking.tracking_mode({"HOME": str(tmp_path), "FTLAB_TRACKING": "offline"}) == "wandb-offline"


def test_bad_value():
    with pytest.raises(ValueError, match="FTLAB_TRACKING"):
        tracking.tracking_mode({"FTLAB_TRACKING": "tensorboard"})


def test_run_name_records_lab_and_config():
    name = tracking.run_name("08_lora", "cpu", r=8, a=16, targets=["q_proj", "v_proj"])
    assert name == "08_lora-cpu-r8-a16-targetsq_proj+v_proj"
