"""Plots of the course and the command line.

Functions draw on a Matplotlib ``Axes`` you pass in (so notebooks can compose them) or on a new
figure; :func:`save_figure` writes a figure atomically. They use the object API, never pyplot's
global state, so they work the same in a script, a test and a notebook.

Notebooks show their figures inline and write nothing: :func:`course_figure` saves a figure under
its README name only when ``FEDAD_FIGURES_DIR`` is set, which only the explicit command
``python -m fedad_tutorial.exercises.figures`` does (it regenerates the README's images).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.atomic import atomic_path


def figures_dir() -> Path:
    """The repository's ``figures/`` folder when run from a checkout, else ``./figures``."""
    repo = Path(__file__).resolve().parents[1]
    return repo / "figures" if (repo / "pyproject.toml").exists() else Path("figures")


#: Set (to a folder) only by ``python -m fedad_tutorial.exercises.figures``: where course figures go.
FIGURES_ENV = "FEDAD_FIGURES_DIR"


def course_figure(fig: Figure, name: str) -> Figure:
    """Return ``fig`` for inline display; also save it as ``$FEDAD_FIGURES_DIR/name`` if that is set.

    A notebook cell ends with ``course_figure(fig, "02_error_histogram.png")``: running the course
    leaves the repository untouched, and the README's images are regenerated only on purpose.
    """
    folder = os.environ.get(FIGURES_ENV, "").strip()
    if folder:
        save_figure(fig, Path(folder) / name)
    return fig


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


def plot_roc_pr(labels: np.ndarray, scores: dict[str, np.ndarray], axes: tuple[Axes, Axes] | None = None) -> Figure:
    """ROC and precision-recall curves of one or more scorers on the same labelled rows."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    from fedad_tutorial.metrics import average_precision, roc_auc

    if axes is None:
        fig = Figure(figsize=(10, 4), layout="constrained")
        axes = tuple(fig.subplots(1, 2))
    fig = axes[0].figure
    roc_ax, pr_ax = axes
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, s):.3f})")
        precision, recall, _ = precision_recall_curve(labels, s)
        pr_ax.plot(recall, precision, label=f"{name} (AP {average_precision(labels, s):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", title="ROC curve")
    pr_ax.axhline(float(np.mean(labels)), color="grey", ls=":", lw=1)
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall curve", ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    return fig


def plot_feature_errors(errors: np.ndarray, feature_names: list[str], ax: Axes | None = None,
                        top: int = 10, title: str | None = None) -> Figure:
    """Horizontal bars of one row's per-feature reconstruction errors, the ``top`` largest first:
    which metrics made the row anomalous."""
    fig, ax = new_axes(5.0, 3.5) if ax is None else (ax.figure, ax)
    errors = np.asarray(errors, dtype=float)
    order = np.argsort(errors)[::-1][:top]
    ax.barh(np.arange(order.size), errors[order], color="tab:red", alpha=0.75)
    ax.set_yticks(np.arange(order.size), [feature_names[i] for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("squared error (scaled units)")
    ax.set_title(title or f"top {order.size} features by reconstruction error")
    ax.grid(axis="x", alpha=0.3)
    return fig
