"""Environment report and plotting helpers."""

import pytest

from ftlab import envcheck, plots


def test_requirements_parse_and_all_installed():
    packages = dict(envcheck.required_packages())
    assert packages["torch"] == "2.13.0" and packages["trl"] == "1.16.0"
    failures = [c.line() for c in envcheck.check_all() if not c.ok]
    assert failures == []


def test_version_mismatch_is_reported():
    check = envcheck.check_package("pytest", "0.0.1")
    assert not check.ok and "pinned" in check.detail
    assert not envcheck.check_package("no-such-package-xyz", None).ok


def test_loss_curves_accepts_all_run_shapes():
    fig = plots.loss_curves(
        {"a": [(1, 3.0), (2, 2.0)], "b": {"step": [1, 2], "loss": [3.5, 2.5]},
         "c": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.0}]},
        validation={"a": [(2, 2.2)]},
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_memory_bars_totals_and_unit_check():
    fig = plots.memory_bars({"full": {"weights": 2 * plots.GIB, "grads": 2 * plots.GIB},
                             "lora": {"weights": 2 * plots.GIB}})
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["4.00", "2.00"]
    with pytest.raises(ValueError, match="unit"):
        plots.memory_bars({"x": {"w": 1}}, unit="GB")


def test_before_after_table():
    table = plots.before_after_table({"acc": 0.1, "tone": 0.2}, {"acc": 0.7, "tone": 0.6})
    assert table.loc["acc", "change"] == pytest.approx(0.6)
    with pytest.raises(KeyError, match="tone"):
        plots.before_after_table({"tone": 0.1}, {"acc": 0.2})
