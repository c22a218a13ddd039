"""How well scores separate anomalies: score distributions, ROC and precision-recall curves,
recall per anomaly type.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import bar_figure, new_axes


def plot_score_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None,
                         ax: Axes | None = None, bins: int = 60, title: str | None = None) -> Figure:
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
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return fig


def plot_roc_pr(labels: np.ndarray, scores: dict[str, np.ndarray], axes: tuple[Axes, Axes] | None = None,
                title: str | None = None, pr_legend_loc: str = "best") -> Figure:
    """ROC and precision-recall curves of one or more scorers on the same labelled rows.

    ``title``: the figure's title above both panels; ``pr_legend_loc``: where the precision-recall legend
    goes (``"lower left"`` when good scorers' curves fill the top of the panel).
    """
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
    for ax, loc in zip(axes, ("best", pr_legend_loc), strict=True):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc=loc)
    if title:
        fig.suptitle(title)
    return fig


def plot_recall_by_type(by_type: dict[str, float], counts: dict[str, int]) -> Figure:
    """One bar per anomaly type of ``counts`` (its share flagged, from ``by_type``, with the type's row count)
    and a dashed line at the share of normal rows flagged (``by_type["normal"]``)."""
    fig, ax = new_axes(7, 3.8)
    kinds = list(counts)
    bars = ax.bar(kinds, [by_type[k] for k in kinds], color="tab:red", alpha=0.75, label="recall of the type")
    ax.bar_label(bars, labels=[f"{by_type[k]:.2f} (n={counts[k]})" for k in kinds], fontsize=8)
    ax.axhline(by_type["normal"], color="tab:blue", ls="--", label=f"normal rows flagged ({by_type['normal']:.3f})")
    ax.set(ylim=(0, 1.3), xlabel="anomaly type", ylabel="share of held-out rows flagged",
           title="Recall per anomaly type (held-out rows, 95th-percentile threshold)")
    ax.legend(frameon=False, loc="upper center", ncol=2)
    return fig


def plot_flagged_by_type(by_type: pd.DataFrame, title: str) -> Figure:
    """The share of held-out rows each detector flags, per row type: one group of bars per anomaly type
    (its recall) and one for the normal rows (their false-alarm rate), one bar per detector.

    ``by_type``: one row per row type (the anomaly types of :data:`~fedad_tutorial.data.ANOMALY_TYPES`
    and ``"normal"``), one column per detector. Recall and false alarms side by side: a detector that
    flags more of every type also flags more normal rows.
    """
    from fedad_tutorial.data import ANOMALY_TYPES

    kinds = [*ANOMALY_TYPES, "normal"]
    ticks = [k if k != "normal" else "normal (false alarms)" for k in kinds]
    return bar_figure(by_type.loc[kinds].T, tick_labels=ticks, bar_labels="%.2f",
                      legend=dict(loc="upper center", ncol=3), ylim=(0, 1.15), xlabel="row type",
                      ylabel="share of held-out rows flagged", title=title)
