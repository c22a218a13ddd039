"""The figures of chapter 14 (one-class classification with Deep SVDD).

They use Matplotlib's object API and return the figure, which a notebook shows inline; nothing is written.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from fedad_tutorial.plots._style import new_figure

_NORMAL = "tab:blue"
_ANOMALY = "tab:red"


def plot_hypersphere(embeddings: np.ndarray, labels: np.ndarray, center: np.ndarray, radius: float) -> Figure:
    """Held-out rows in a 2-dimensional embedding, the centre and the circle a threshold draws around it.

    Left: the whole picture; right: a zoom on the circle. Rows outside the circle are flagged.
    """
    fig, axes = new_figure(1, 2, width=11, height=4.6)
    z, y, c = np.asarray(embeddings), np.asarray(labels).astype(bool), np.asarray(center)
    for ax, zoom in zip(axes, (False, True), strict=True):
        ax.scatter(*z[~y].T, s=8, color=_NORMAL, alpha=0.4, label="normal (held out)")
        ax.scatter(*z[y].T, s=14, color=_ANOMALY, marker="^", alpha=0.8, label="anomaly (held out)")
        ax.add_patch(Circle(c, radius, fill=False, color="black", lw=1.5, label="threshold: the hypersphere"))
        ax.plot(*c, marker="+", color="black", ms=12, mew=2, ls="none", label="centre c")
        if zoom:
            ax.set(xlim=(c[0] - 3 * radius, c[0] + 3 * radius), ylim=(c[1] - 3 * radius, c[1] + 3 * radius),
                   title="zoom on the centre")
        else:
            ax.set(title="held-out rows in the embedding")
            ax.legend(frameon=False, fontsize=8, loc="best")
        ax.set(xlabel="embedding coordinate 1", ylabel="embedding coordinate 2", aspect="equal")
        ax.grid(alpha=0.3)
    return fig


def plot_collapse(losses: pd.DataFrame, scores: dict[str, np.ndarray], labels: np.ndarray) -> Figure:
    """Left: the training loss per epoch of every variant (log scale). Then one panel per variant:
    its held-out scores divided by their median (logarithmic axis), normal and anomalous rows apart.
    ``losses``: one column per variant, indexed by epoch; ``scores``: each variant's held-out scores;
    ``labels``: the held-out labels (1 = anomaly), as :class:`fedad_tutorial.chapters.oneclass.CollapseRun` holds them.

    A collapsed model's loss falls to its floor and its scores pile up at one value (1 after the
    division); a working model's scores spread over decades, the anomalies on the right.
    """
    names = list(scores)
    # two columns, so that each panel keeps legible tick labels when a notebook shrinks the figure to its width
    rows = (len(names) + 2) // 2
    fig, grid = new_figure(rows, 2, width=10.0, height=3.6 * rows, squeeze=False)
    axes = grid.ravel()
    for ax in axes[1 + len(names):]:
        ax.set_visible(False)
    for name in names:
        axes[0].plot(losses.index, losses[name], marker="o", ms=3, label=name)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="mean training loss (squared distance)",
                title="training loss")
    axes[0].legend(frameon=False, fontsize=8)
    axes[0].grid(alpha=0.3)
    y = np.asarray(labels).astype(bool)
    for ax, name in zip(axes[1:1 + len(names)], names, strict=True):
        s = np.asarray(scores[name], dtype=np.float64)
        relative = np.log10(np.maximum(s / max(float(np.median(s)), np.finfo(float).tiny), 1e-3))
        bins = np.linspace(-3, 4, 57)
        ax.hist(relative[~y], bins=bins, color=_NORMAL, alpha=0.6, label="normal")
        ax.hist(relative[y], bins=bins, color=_ANOMALY, alpha=0.7, label="anomaly")
        ax.set_xticks(range(-3, 5), [f"$10^{{{k}}}$" for k in range(-3, 5)])
        ax.set(xlabel="held-out score / median score", ylabel="rows", title=name)
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def plot_client_centres(client_means: np.ndarray, counts: np.ndarray, pooled: np.ndarray,
                        unweighted: np.ndarray) -> Figure:
    """Each client's mean embedding (first two coordinates, marker area by row count), the federated
    centre (count-weighted) and the plain mean of the client means."""
    fig, ax = new_figure(width=8.5, height=4.4)
    means, n = np.asarray(client_means), np.asarray(counts, dtype=float)
    ax.scatter(means[:, 0], means[:, 1], s=400 * n / n.max(), color="tab:blue", alpha=0.5,
               label="a client's mean embedding (area: its rows)")
    for k, (x, y) in enumerate(means[:, :2]):
        ax.annotate(f"{k + 1}", (x, y), ha="center", va="center", fontsize=8)
    ax.plot(*pooled[:2], marker="+", color="black", ms=14, mew=2, ls="none",
            label="federated centre = pooled mean")
    ax.plot(*unweighted[:2], marker="x", color="tab:red", ms=10, mew=2, ls="none",
            label="plain mean of the client means")
    ax.set(xlabel="embedding coordinate 1", ylabel="embedding coordinate 2",
           title="the centre before the eps rule")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
    return fig


def plot_comparison(per_round: pd.DataFrame) -> Figure:
    """One panel per data set: each model's held-out ROC-AUC per round (mean over clients), the line
    the mean over seeds and the band their range."""
    data_sets = list(dict.fromkeys(per_round["data"]))
    fig, axes = new_figure(1, len(data_sets), width=5.5 * len(data_sets), height=4.0, squeeze=False)
    for ax, data in zip(axes[0], data_sets, strict=True):
        rows = per_round[per_round["data"] == data]
        for model, curves in rows.groupby("model", sort=False):
            table = curves.pivot(index="round", columns="seed", values="roc_auc")
            line = ax.plot(table.index, table.mean(axis=1), lw=2, label=model)[0]
            ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=line.get_color(), alpha=0.15)
        ax.set(xlabel="round", ylabel="held-out ROC-AUC (mean over clients)",
               title=f"{data}: {rows['seed'].nunique()} seeds (band: their range)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    return fig
