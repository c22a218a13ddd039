"""Plots the course and the command line save to ``figures/``.

Functions draw on a Matplotlib ``Axes`` you pass in (so notebooks can compose them) or on a new
figure; :func:`save_figure` writes a figure atomically. They use the object API, never pyplot's
global state, so they work the same in a script, a test and a notebook.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.atomic import atomic_path


def new_axes(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


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


def plot_score_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None,
                         ax: Axes | None = None, bins: int = 60) -> Figure:
    """Score distributions of normal and anomalous rows (log-x), with the threshold if given."""
    fig, ax = new_axes() if ax is None else (ax.figure, ax)
    scores = np.asarray(scores, dtype=float)
    positive = scores[scores > 0]
    lo = positive.min() if positive.size else 1e-6
    edges = np.geomspace(lo, max(scores.max(), lo * 10), bins)
    for value, name, color in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        ax.hist(np.clip(scores[labels == value], lo, None), bins=edges, alpha=0.6, color=color,
                label=f"{name} (n={(labels == value).sum()})", density=True)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("anomaly score (reconstruction error)")
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (PNG) atomically; create the folder if needed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
