"""The real-data panel (chapter 13, ``benchmarks/real_panel.py``) and the regular-anomaly sweep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_axes

_MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_panel(roc: pd.DataFrame, methods: Sequence[str], title: str | None = None, ax: Axes | None = None
               ) -> Figure:
    """Per data set ROC-AUC of ``methods`` (columns of ``roc``, data sets as rows) as a dot plot."""
    fig, ax = new_axes(7.0, 0.32 * len(roc) + 1.6) if ax is None else (ax.figure, ax)
    y = np.arange(len(roc))
    for k, method in enumerate(m for m in methods if m in roc.columns):
        ax.scatter(roc[method], y, marker=_MARKERS[k % len(_MARKERS)], label=method, alpha=0.8, zorder=3)
    ax.set_yticks(y, roc.index)
    ax.invert_yaxis()
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("ROC-AUC on the test part (mean over seeds)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_spread_sweep(study: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """ROC-AUC against the anomalies' noise relative to the normal rows', one line per detector (mean over seeds,
    each seed a dot): the ``regular_anomaly_study`` table of :mod:`fedad_tutorial.chapters.panel`."""
    fig, ax = new_axes(6.5, 3.8) if ax is None else (ax.figure, ax)
    for k, column in enumerate(c for c in study.columns if c.endswith("ROC-AUC")):
        mean = study.groupby("spread")[column].mean()
        line, = ax.plot(mean.index, mean.to_numpy(), marker=_MARKERS[k], label=column.removesuffix(" ROC-AUC"))
        ax.scatter(study["spread"], study[column], color=line.get_color(), alpha=0.35, s=14)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("anomalies' noise / normal rows' noise")
    ax.set_ylabel("ROC-AUC (test rows)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="lower right")
    return fig
