"""Plots shared by every lab: one call, labelled axes, units and a title.

- ``loss_curves``: several runs' losses on one axis (training and validation)
- ``memory_bars``: stacked bars of memory components per configuration
- ``line_plot``: any measured y against x for several series (timings, sizes)
- ``before_after_table``: a small table comparing metrics before and after

Korean labels render with the NanumGothic font shipped by koreanize-matplotlib.
"""

from __future__ import annotations

from typing import Mapping, Sequence

GIB = 1024**3
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": GIB}


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    try:  # Korean glyphs; plots still work (with boxes) if the font package is missing
        import koreanize_matplotlib  # noqa: F401
    except ImportError:
        pass
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def _points(run) -> tuple[list[float], list[float]]:
    """Accept [(step, value), ...], {"step": [...], "loss": [...]} or [{"step":..,"loss":..}, ...]."""
    if isinstance(run, Mapping):
        ys = run.get("loss", run.get("value"))
        return list(run["step"]), list(ys)
    run = list(run)
    if run and isinstance(run[0], Mapping):
        key = "loss" if "loss" in run[0] else "value"
        return [r["step"] for r in run], [r[key] for r in run]
    return [p[0] for p in run], [p[1] for p in run]


def _finish(ax, title: str, xlabel: str, ylabel: str, logx: bool = False, logy: bool = False):
    """Title, axis labels and scales, grid and legend: the look every line plot shares."""
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def loss_curves(
    runs: Mapping[str, object],
    title: str = "Loss",
    xlabel: str = "optimizer step",
    ylabel: str = "loss (cross-entropy, nats/token)",
    validation: Mapping[str, object] | None = None,
    logy: bool = False,
    ax=None,
):
    """Plot training (solid) and optional validation (dashed) losses of several runs."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    colors = {}
    for name, run in runs.items():
        xs, ys = _points(run)
        (line,) = ax.plot(xs, ys, label=f"{name} (train)" if validation else name)
        colors[name] = line.get_color()
    for name, run in (validation or {}).items():
        xs, ys = _points(run)
        ax.plot(xs, ys, "--o", markersize=3, color=colors.get(name), label=f"{name} (validation)")
    return _finish(ax, title, xlabel, ylabel, logy=logy)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    ax=None,
):
    """Plot measured (x, y) series, e.g. generation time against length."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), "-o", markersize=3, label=name)
    return _finish(ax, title, xlabel, ylabel, logx=logx, logy=logy)


def memory_bars(
    configs: Mapping[str, Mapping[str, float]],
    title: str = "Memory per component",
    unit: str = "GiB",
    ax=None,
):
    """Stacked bars: one bar per configuration, one segment per component (bytes in)."""
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}: choose one of {', '.join(UNITS)}")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5, 1.3 * len(configs) + 2), 4))
    names = list(configs)
    components: list[str] = []
    for parts in configs.values():
        components += [c for c in parts if c not in components]
    bottoms = [0.0] * len(names)
    for component in components:
        heights = [configs[n].get(component, 0.0) / UNITS[unit] for n in names]
        ax.bar(names, heights, bottom=bottoms, label=component)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for x, total in enumerate(bottoms):
        ax.annotate(f"{total:.2f}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set(title=title, ylabel=f"memory ({unit})")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def before_after_table(before: Mapping[str, float], after: Mapping[str, float], digits: int = 3):
    """A pandas DataFrame with before, after and change for every metric in ``before``."""
    import pandas as pd

    missing = [k for k in before if k not in after]
    if missing:
        raise KeyError(f"metrics missing from 'after': {', '.join(missing)}")
    rows = [
        {"metric": k, "before": round(before[k], digits), "after": round(after[k], digits),
         "change": round(after[k] - before[k], digits)}
        for k in before
    ]
    return pd.DataFrame(rows).set_index("metric")
