"""Notebook 05, thresholds: strategies compared per client, the precision/recall/cost trade-off
of a percentile, and how thresholds move over rounds.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure, plot_grouped_bars


def plot_threshold_comparison(table: pd.DataFrame, fpr_target: float | None = None) -> Figure:
    """False-positive rate and F1 on held-out rows per client, one bar per threshold strategy.

    ``table``: one row per (``strategy``, ``client``) with ``fpr`` and ``f1`` columns.
    """
    strategies, clients = list(dict.fromkeys(table["strategy"])), list(dict.fromkeys(table["client"]))
    fig, axes = new_figure(1, 2)
    for ax, metric, name in zip(axes, ("fpr", "f1"), ("false-positive rate", "F1"), strict=True):
        wide = table.pivot(index="strategy", columns="client", values=metric).loc[strategies, clients]
        plot_grouped_bars(wide, ax, xlabel="client", ylabel=name, title=f"{name} on held-out rows, per client")
    if fpr_target is not None:
        axes[0].axhline(fpr_target, color="black", ls=":", lw=1, label=f"{fpr_target:.0%} target")
    axes[1].set_ylim(0, 1.2)
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_threshold_sweep(sweep: pd.DataFrame, best_f1: float, cheapest: float, cost_label: str) -> Figure:
    """Precision, recall and F1, and the expected cost with the alarm load, against the threshold percentile.

    ``sweep``: one row per ``percentile`` with ``precision, recall, f1, cost per row, alarms per node-day``;
    ``best_f1`` and ``cheapest``: the percentiles to mark.
    """
    fig, (left, right) = new_figure(1, 2)
    for metric in ("precision", "recall", "f1"):
        left.plot(sweep["percentile"], sweep[metric], label=metric if metric != "f1" else "F1")
    left.axvline(best_f1, color="grey", ls=":", lw=1)
    left.set(xlabel="threshold percentile of training scores", ylabel="score on held-out rows",
             title="precision, recall and F1 vs threshold", ylim=(0, 1.02))
    left.legend(frameon=False, fontsize=8)
    right.plot(sweep["percentile"], sweep["cost per row"], color="tab:red", label="expected cost per row")
    right.axvline(cheapest, color="tab:red", ls=":", lw=1)
    right.set(xlabel="threshold percentile of training scores", ylabel=cost_label, title="the cost of a threshold")
    twin = right.twinx()
    twin.plot(sweep["percentile"], sweep["alarms per node-day"], color="tab:blue", ls="--",
              label="alarms per node-day")
    twin.set_ylabel("alarms per node and day (1 row/min)")
    right.legend(handles=right.lines[:1] + twin.lines, frameon=False, fontsize=8, loc="upper center")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return fig


def plot_thresholds_per_round(local: pd.DataFrame, global_per_round: pd.Series) -> Figure:
    """Each client's local 95th-percentile threshold per round (one column each) and the global one."""
    fig, ax = new_figure(width=8, height=4)
    for client in local.columns:
        ax.plot(local.index, local[client], lw=1.2, alpha=0.7, label=f"{client} (local p95)")
    ax.plot(global_per_round.index, global_per_round.to_numpy(), color="black", lw=2.5,
            label="global p95 (histograms)")
    ax.set_yscale("log")
    ax.set(xlabel="round", ylabel="threshold (reconstruction error, log scale)",
           title="95th-percentile threshold per round")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return fig
