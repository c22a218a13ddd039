"""Notebook 13, real data (WDBC): the hospitals' non-IID split and how detectors score its rows.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure

_HOSPITAL_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive"]


def plot_hospital_bands(hospitals, feature: str = "mean_radius", second: str = "mean_texture") -> Figure:
    """Each hospital's benign training rows over one feature (histogram) and two features (scatter), with
    the held-out malignant rows: how the non-IID split puts hospitals in different size bands."""
    names = hospitals[0].train.feature_names
    col, col2 = names.index(feature), names.index(second)
    train = np.vstack([h.train.features for h in hospitals])
    test = np.vstack([h.test.features for h in hospitals])
    malignant = test[np.concatenate([h.test.labels for h in hospitals]) == 1]
    fig, (ax_hist, ax_scatter) = new_figure(1, 2)
    bins = np.linspace(train[:, col].min(), np.vstack([train, test])[:, col].max(), 30)
    for h, color in zip(hospitals, _HOSPITAL_COLORS, strict=False):
        benign = h.train.features[h.train.labels == 0]
        ax_hist.hist(benign[:, col], bins=bins, alpha=0.55, color=color, label=f"{h.name} benign (train)")
        ax_scatter.scatter(benign[:, col], benign[:, col2], s=10, alpha=0.6, color=color, label=f"{h.name} benign")
    ax_hist.hist(malignant[:, col], bins=bins, histtype="step", lw=2, color="tab:red", label="malignant (held out)")
    ax_scatter.scatter(malignant[:, col], malignant[:, col2], s=14, marker="x", color="tab:red",
                       label="malignant (held out)")
    label, label2 = feature.replace("_", " "), second.replace("_", " ")
    ax_hist.set(xlabel=label, ylabel="rows", title="Non-IID split: tumour size per hospital")
    ax_scatter.set(xlabel=label, ylabel=label2, title="Hospitals occupy different size bands")
    for ax in (ax_hist, ax_scatter):
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def plot_scores_and_components(scores: dict[str, np.ndarray], feature: np.ndarray, labels: np.ndarray,
                               pc_train: np.ndarray, hidden: np.ndarray, pc_test: np.ndarray) -> Figure:
    """Held-out scores of each detector in ``scores`` against one feature (mean radius), and the training
    rows on their first two principal components with the malignant rows hidden among them."""
    from fedad_tutorial.metrics import roc_auc

    fig, axes = new_figure(1, len(scores) + 1, 13, 4.2)
    for ax, (name, s) in zip(axes[:-1], scores.items(), strict=True):
        ax.scatter(feature[labels == 0], s[labels == 0], s=12, alpha=0.6, label="benign (held out)")
        ax.scatter(feature[labels == 1], s[labels == 1], s=16, marker="x", color="tab:red",
                   label="malignant (held out)")
        ax.set(xlabel="mean radius", ylabel="reconstruction error (scaled units)", yscale="log",
               title=f"{name}: ROC-AUC {roc_auc(labels, s):.3f}")
    ax = axes[-1]
    ax.scatter(pc_train[hidden == 0, 0], pc_train[hidden == 0, 1], s=10, alpha=0.5, label="benign (train)")
    ax.scatter(pc_train[hidden == 1, 0], pc_train[hidden == 1, 1], s=40, marker="*", color="black",
               label="malignant hidden in train")
    ax.scatter(pc_test[labels == 1, 0], pc_test[labels == 1, 1], s=16, marker="x", color="tab:red",
               label="malignant (held out)")
    ax.set(xlabel="PC1 (shape irregularity: concavity, compactness)", ylabel="PC2 (size: radius, area, perimeter)",
           title="Principal components of the training rows")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    return fig
