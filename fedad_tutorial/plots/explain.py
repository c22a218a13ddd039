"""Why a row is anomalous: its per-feature reconstruction errors, largest first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import bar_figure, new_axes, new_figure


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


def plot_alarm_tables(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """A 2 x 2 grid of :func:`~fedad_tutorial.explain.plot_alarm`, one panel per alarm (key: its panel title,
    value: its :func:`~fedad_tutorial.explain.alarm_table`): the top metrics of each alarm with their values
    and normal ranges, so alarms of different types can be compared at a glance."""
    from fedad_tutorial.explain import plot_alarm

    fig, axes = new_figure(2, 2, 12, 7)
    for ax, (name, table) in zip(axes.ravel(), tables.items(), strict=True):
        plot_alarm(table, ax=ax, title=name)
        # four panels share the width of one figure: a single alarm's small print would be too small here
        ax.tick_params(axis="y", labelsize=10)
        ax.title.set_fontsize(11)
        for text in ax.texts:
            text.set_fontsize(9)
    fig.suptitle(title)
    return fig


#: The columns of notebook 12's explanation table drawn by :func:`plot_explanation_hits`, in bar order (its
#: two-level columns, such as ``("hit@3", "chance")``, joined by a space).
EXPLANATION_SCORES = ["hit@3 chance", "hit@3 relative", "precision@3 raw", "precision@3 relative",
                      "precision@3 grad x input"]


def plot_explanation_hits(explained: pd.DataFrame) -> Figure:
    """Per anomaly type of the alarm, how often its top metrics include truly perturbed ones (hit@3) and what
    share of them are (precision@3, per ranking), next to the hit rate of metrics drawn at random (grey).

    ``explained``: one row per anomaly type with an ``alarms`` count and the columns of
    :data:`EXPLANATION_SCORES` (or two-level columns that join into them, ``("", "alarms")`` for the count).
    The chance bars matter: when an anomaly changes many metrics, a random pick hits too.
    """
    from fedad_tutorial.data import ANOMALY_TYPES

    if isinstance(explained.columns, pd.MultiIndex):
        explained = explained.set_axis([" ".join(c).strip() for c in explained.columns], axis=1)

    kinds = [k for k in ANOMALY_TYPES if k in explained.index]
    return bar_figure(explained.loc[kinds, EXPLANATION_SCORES].T.astype(float), size=(10, 4.2), width=0.16,
                      bar_labels="%.2f", colors={"hit@3 chance": "lightgrey"}, legend=dict(loc="upper center", ncol=3),
                      tick_labels=[f"{k}\n(n={int(explained.loc[k, 'alarms'])})" for k in kinds], ylim=(0, 1.3),
                      xlabel="anomaly type of the alarm", ylabel="share of true alarms",
                      title="Do an alarm's top metrics include the metrics the anomaly changed?")
