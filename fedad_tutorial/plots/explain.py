"""Why a row is anomalous: its per-feature reconstruction errors, largest first.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_axes, new_figure


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


def plot_rows_feature_errors(feature_errors: np.ndarray, feature_names: list[str], rows: dict[str, int],
                             scores: np.ndarray, threshold: float, top: int = 8) -> Figure:
    """A 2 x 2 grid of :func:`plot_feature_errors`, one panel per entry of ``rows`` (name: row index into
    ``feature_errors`` and ``scores``), each titled with the row's score and whether it is above ``threshold``."""
    fig, axes = new_figure(2, 2, 11, 6.5)
    for ax, (name, i) in zip(axes.ravel(), rows.items(), strict=True):
        verdict = "flagged" if scores[i] > threshold else "missed"
        plot_feature_errors(feature_errors[i], feature_names, ax=ax, top=top,
                            title=f"{name}: score {scores[i]:.2f} ({verdict})")
    fig.suptitle("Per-feature reconstruction error of one held-out anomaly of each type")
    return fig
