"""Notebook 10, differential privacy: privacy loss over rounds and the utility it costs.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_axes


def plot_epsilon_curves(curves: pd.DataFrame, q: float, delta: float) -> Figure:
    """Privacy loss epsilon over rounds (log scale), one line per column of ``curves`` (index: rounds)."""
    fig, ax = new_axes(7, 4)
    for name in curves.columns:
        ax.plot(curves.index, curves[name], label=str(name))
    ax.set(xlabel="rounds", ylabel="epsilon", yscale="log",
           title=f"privacy loss over rounds (q = {q}, delta = {delta})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_utility_vs_epsilon(utility: pd.DataFrame, xlabel: str, title: str, no_dp: str = "FedAvg (no DP)",
                            clipping_only: str = "clipping only") -> Figure:
    """ROC-AUC against epsilon (log) of the noisy runs, each labelled with its sigma, and two reference lines.

    ``utility``: one row per run (index: its name) with ``sigma, epsilon, ROC-AUC``; the noisy runs are
    those with ``sigma > 0``, the rows ``no_dp`` and ``clipping_only`` give the reference lines.
    """
    fig, ax = new_axes(7, 4)
    dp = utility.dropna(subset=["sigma"]).query("sigma > 0")
    ax.plot(dp["epsilon"], dp["ROC-AUC"], marker="o", label="DP-FedAvg (C = 1)")
    for eps, auc, sigma in zip(dp["epsilon"], dp["ROC-AUC"], dp["sigma"], strict=True):
        ax.annotate(f"sigma {sigma}", (eps, auc), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.axhline(utility.loc[no_dp, "ROC-AUC"], color="grey", lw=4, alpha=0.5, label="FedAvg, no DP")
    ax.axhline(utility.loc[clipping_only, "ROC-AUC"], color="tab:green", ls="--", label="clipping only (no noise)")
    ax.set(xscale="log", xlabel=xlabel, ylabel="mean ROC-AUC (held-out rows)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig
