"""The report's figures as PNG bytes (matplotlib, Agg): embedded in the HTML as base64, so the
report needs no network and no script to show them."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from dlas.report.cells import DENSE, best, pareto
from dlas.report.observations.base import geomean
from dlas.report.observations.tuning import tuning_pairs

MARKERS = {"untuned": "o", "metaschedule": "^"}


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: bytes | None  # None: the runs cannot draw it; ``caption`` says why


def _grid(n: int, width: float = 4.2, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _plain_log(ax, axes: str = "x") -> None:
    """Log scale with plain tick labels (0.5, 1, 2) and no crowded minor labels."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())


def _colors(values: list[str]) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    return {v: palette[i % 10] for i, v in enumerate(values)}


def pareto_figure(c: pd.DataFrame) -> Figure:
    title = "Latency vs accuracy, with the Pareto front"
    data = c[c["accuracy"].notna()]
    if data.empty:
        return Figure("pareto", title, "No run logged an accuracy (latency-only runs).", None)
    groups = list(data.groupby(["model_id", "device"]))
    fig, axes = _grid(len(groups))
    colors = _colors(sorted(data["compression"].unique()))
    for ax, ((model, device), g) in zip(axes, groups, strict=True):
        for (comp, tuning), h in g.groupby(["compression", "tuning"]):
            ax.scatter(
                h["latency_ms"],
                100 * h["accuracy"],
                c=colors[comp],
                marker=MARKERS.get(tuning, "s"),
                label=f"{comp} / {tuning}",
                alpha=0.8,
            )
        points = list(zip(g["latency_ms"], g["accuracy"], strict=True))
        front = [points[i] for i in pareto(points)]
        ax.step(
            [p[0] for p in front],
            [100 * p[1] for p in front],
            where="post",
            c="k",
            lw=1,
            label="Pareto front",
        )
        _plain_log(ax, "x")
        ax.set(title=f"{model} on {device}", xlabel="latency (ms, log)", ylabel="top-1 (%)")
        ax.legend(fontsize=6)
    caption = (
        "Each point is one cell (fastest run of a model × compression × algorithm × tuning); "
        "colour = compression, marker = tuning (o untuned, ^ metaschedule, s other). The black "
        "step line links the cells no other cell beats on both latency and accuracy."
    )
    return Figure("pareto", title, caption, _png(fig))


def speedup_figure(c: pd.DataFrame) -> Figure:
    title = "Speedup per compression and algorithm"
    data = c[c["speedup"].notna() & c["tvm"]]
    if data.empty:
        return Figure("speedup", title, "No dense/direct/untuned reference run: no speedups.", None)
    groups = list(data.groupby(["model_id", "device"]))
    fig, axes = _grid(len(groups), width=5.0)
    algos = sorted(data["algorithm"].unique())
    colors = _colors(algos)
    for ax, ((model, device), g) in zip(axes, groups, strict=True):
        top = best(g, ["compression", "algorithm"])
        comps = [
            x
            for x in [DENSE, "weight_pruning", "channel_pruning", "fp16", "int8"]
            if x in set(top["compression"])
        ]
        comps += sorted(set(top["compression"]) - set(comps))
        width = 0.8 / max(len(algos), 1)
        for j, algo in enumerate(algos):
            vals = [
                top[(top["compression"] == comp) & (top["algorithm"] == algo)]["speedup"].max()
                for comp in comps
            ]
            xs = [i + (j - (len(algos) - 1) / 2) * width for i in range(len(comps))]
            ax.bar(
                xs, [0 if pd.isna(v) else v for v in vals], width, color=colors[algo], label=algo
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(comps)), comps, rotation=20, fontsize=7)
        ax.set(title=f"{model} on {device}", ylabel="speedup vs dense/direct/untuned")
        ax.legend(fontsize=6)
    caption = (
        "Speedup of the fastest tuning of each (compression, algorithm) over the model's "
        "dense / direct / untuned cell (1.0 = the reference; no bar = not run)."
    )
    return Figure("speedup", title, caption, _png(fig))


def expected_figure(c: pd.DataFrame) -> Figure:
    title = "Expected (MACs-proportional) vs achieved speedup"
    tvm = c[c["tvm"]]
    dense = best(tvm[tvm["compression"] == DENSE], ["model_id", "device", "tuning"])
    comp = tvm[(tvm["compression"] != DENSE) & tvm["expected_speedup"].notna()]
    pairs = comp.merge(
        dense[["model_id", "device", "tuning", "latency_ms"]],
        on=["model_id", "device", "tuning"],
        suffixes=("", "_dense"),
    )
    if pairs.empty:
        return Figure("expected", title, "Needs compressed and dense runs of one model.", None)
    pairs["achieved"] = pairs["latency_ms_dense"] / pairs["latency_ms"]
    fig, (ax,) = _grid(1, width=6.0, height=4.5)
    colors = _colors(sorted(pairs["compression"].unique()))
    for comp_name, g in pairs.groupby("compression"):
        ax.scatter(
            g["expected_speedup"], g["achieved"], c=colors[comp_name], label=comp_name, alpha=0.8
        )
    hi = max(pairs["expected_speedup"].max(), pairs["achieved"].max()) * 1.1
    lo = min(pairs["expected_speedup"].min(), pairs["achieved"].min()) * 0.9
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="achieved = expected")
    ax.set(
        xlabel="expected speedup (dense MACs / effective MACs)",
        ylabel="achieved speedup (fastest dense, same tuning)",
    )
    _plain_log(ax, "xy")
    ax.legend(fontsize=7)
    caption = (
        "Every compressed cell against the fastest dense cell of its model, device and tuning. "
        "Points below the diagonal fall short of the MACs-proportional speedup; quantized "
        "models expect 1x by MACs, so their gains come from the data type."
    )
    return Figure("expected", title, caption, _png(fig))


def tuning_figure(table: pd.DataFrame) -> Figure:
    title = "Tuned vs untuned, per algorithm"
    pairs = tuning_pairs(table)
    if pairs.empty:
        return Figure(
            "tuning", title, "Needs untuned and tuned runs of the same configuration.", None
        )
    algos = sorted(pairs["algorithm"].unique())
    fig, (ax,) = _grid(1, width=max(5.0, 1.2 * len(algos)), height=4.0)
    colors = _colors(sorted(pairs["compression"].unique()))
    for i, algo in enumerate(algos):
        g = pairs[pairs["algorithm"] == algo]
        ax.bar(i, geomean(g["gain"]), 0.6, color="0.85", edgecolor="k")
        for comp_name, h in g.groupby("compression"):
            ax.scatter([i] * len(h), h["gain"], c=colors[comp_name], s=18, zorder=3)
    for comp_name, color in colors.items():
        ax.scatter([], [], c=color, label=comp_name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(algos)), algos, rotation=20, fontsize=8)
    ax.set(ylabel="untuned / tuned latency")
    ax.legend(fontsize=7)
    caption = "Bars: geometric-mean gain from tuning per algorithm; points: each configuration."
    return Figure("tuning", title, caption, _png(fig))


FIGURES: list[Callable[[pd.DataFrame, pd.DataFrame], Figure]] = [
    lambda c, t: pareto_figure(c),
    lambda c, t: speedup_figure(c),
    lambda c, t: expected_figure(c),
    lambda c, t: tuning_figure(t),
]


def all_figures(cells_: pd.DataFrame, table: pd.DataFrame) -> list[Figure]:
    out = []
    for i, make in enumerate(FIGURES):
        try:
            out.append(make(cells_, table))
        except Exception as exc:  # noqa: BLE001 - one broken figure must not sink the report
            out.append(
                Figure(f"figure{i}", "(figure failed)", f"{type(exc).__name__}: {exc}", None)
            )
    return out
