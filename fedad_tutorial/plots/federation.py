"""Federated runs over rounds: a metric per client and round, runs compared, training modes
compared per client, two implementations of one run, and what crosses the network (:func:`plot_protocol`).
:func:`plot_f1_per_round` is also the command line's ``figures/f1_per_round.png``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_axes, new_figure, plot_curves, plot_grouped_bars

_METRIC_LABELS = {"f1": "F1", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "fpr": "false-positive rate"}


def plot_metric_per_round(history: pd.DataFrame, metric: str = "f1", ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """One thin line per client and a bold mean line: how ``metric`` evolves over rounds."""
    fig, ax = new_axes() if ax is None else (ax.figure, ax)
    for client, rows in history.groupby("client", sort=False):
        ax.plot(rows["round"], rows[metric], lw=1, alpha=0.45, label=str(client))
    mean = history.groupby("round")[metric].mean()
    ax.plot(mean.index, mean.values, color="black", lw=2.5, label="mean")
    ax.set_xlabel("round")
    ax.set_ylabel(metric.replace("_", "-").upper() if len(metric) <= 3 else metric.replace("_", " "))
    if metric in {"f1", "precision", "recall", "roc_auc", "pr_auc"}:
        ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{metric.replace('_', ' ')} per round on held-out rows")
    ax.grid(alpha=0.3)
    ncol = 2 if history["client"].nunique() > 6 else 1
    ax.legend(fontsize=7, ncol=ncol, loc="lower right", frameon=False)
    return fig


def plot_f1_per_round(history: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Figure:
    """F1 per round, one line per client plus the mean (the course's headline plot)."""
    return plot_metric_per_round(history, "f1", ax=ax, title=title or "F1 per round on held-out rows")


def mean_per_round(history: pd.DataFrame, metric: str = "f1") -> pd.Series:
    """A run history's mean over clients of ``metric``, per round."""
    return history.groupby("round")[metric].mean()


def plot_mean_per_round(runs: dict[str, pd.DataFrame], metric: str = "f1", ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """The mean over clients of ``metric`` per round, one line per run history in ``runs``."""
    fig, ax = new_axes() if ax is None else (ax.figure, ax)
    name = f"mean {_METRIC_LABELS.get(metric, metric)}"
    plot_curves({label: mean_per_round(history, metric) for label, history in runs.items()}, ax, xlabel="round",
                ylabel=f"{name} on held-out rows", title=title or f"{name} per round on held-out rows")
    if metric == "f1":
        ax.set_ylim(0, 1.02)
    return fig


def plot_modes_per_client(final: pd.DataFrame) -> Figure:
    """Final ROC-AUC and F1 per client for each training mode, the client with the fewest rows first.

    ``final``: one row per client; columns ``(mode, metric)`` holding at least ``n_train``, ``roc_auc``
    and ``f1`` (each mode's ``final_round()``).
    """
    modes = list(dict.fromkeys(final.columns.get_level_values(0)))
    rows = final[(modes[0], "n_train")].sort_values()
    fig, axes = new_figure(1, 2)
    for ax, metric, ylim in zip(axes, ("roc_auc", "f1"), ((0.5, 1.12), (0, 1.2)), strict=True):
        table = pd.DataFrame({client: [final.loc[client, (mode, metric)] for mode in modes] for client in rows.index},
                             index=modes)
        name = _METRIC_LABELS[metric]
        plot_grouped_bars(table, ax, tick_labels=[f"{client}\n({n} rows)" for client, n in rows.items()],
                          ylabel=name, ylim=ylim, title=f"final {name} per client (smallest first)")
        ax.tick_params(axis="x", labelsize=8)
    axes[1].legend(frameon=False, fontsize=8, loc="upper center", ncol=3)
    return fig


def plot_runs_coincide(runs: dict[str, pd.DataFrame], metric: str = "f1", title: str | None = None) -> Figure:
    """``metric`` per round of runs that should give the same numbers (e.g. Flower and the from-scratch loop).

    ``runs``: one table per run, indexed by round, with a ``metric`` column (the mean over clients). The first
    run is solid with circles, the next dashed with crosses, dotted with squares: identical runs draw on top
    of each other and both stay visible, so agreement reads as one line with two markers.
    """
    fig, ax = new_axes()
    for (name, per_round), style in zip(runs.items(), ("-o", "--x", ":s"), strict=False):
        ax.plot(per_round.index, per_round[metric].to_numpy(), style, label=f"{name} (mean over clients)",
                markersize=8)
    ax.set_xlabel("round")
    ax.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} on held-out rows")
    ax.set_title(title or f"{_METRIC_LABELS.get(metric, metric)} per round")
    ax.set_xticks(list(next(iter(runs.values())).index))
    ax.legend()
    return fig


def plot_protocol(clients: int = 3) -> Figure:
    """What crosses the network in this course: the server box, the client boxes (raw rows and labels stay
    there), and arrows up (weights, counts, sums, histograms) and down (global weights, scaler, threshold).

    A diagram rather than data: it fixes the course's privacy boundary before any code runs (notebook 00).
    """
    from matplotlib.patches import FancyBboxPatch

    fig, ax = new_axes(9, 4.6)
    ax.set(xlim=(0, 10), ylim=(0, 6.2))
    ax.axis("off")

    def box(x: float, y: float, w: float, h: float, text: str, color: str) -> None:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.08", fc=color, ec="black", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    box(3.4, 4.6, 3.2, 1.2, "server (honest but curious)\naverages weights, adds up\nstatistics and histograms",
        "#dbe8f5")
    for k, x in enumerate(np.linspace(0.3, 6.9, clients)):
        box(x, 0.3, 2.8, 1.6, f"client {k + 1}\nraw rows + labels\nstay here", "#f3e3d3")
        ax.annotate("", xy=(4.4 + 0.6 * k, 4.5), xytext=(x + 0.9, 2.0),
                    arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 1.5})
        ax.annotate("", xy=(x + 1.9, 2.0), xytext=(4.6 + 0.6 * k, 4.5),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1.5})
    ax.text(0.2, 3.6, "up: weights, row count,\nfeature sums, score histogram", color="tab:red", fontsize=9)
    ax.text(7.2, 3.6, "down: global weights,\nglobal scaler, threshold", color="tab:blue", fontsize=9)
    ax.set_title("What crosses the network in this course")
    return fig
