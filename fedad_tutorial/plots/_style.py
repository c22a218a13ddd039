"""Building blocks every chapter's figures share: a figure without pyplot, curves, grouped bars.

Figures are built with Matplotlib's object API, never pyplot's global state, so they draw the same in
a script, a test and a notebook (where they show inline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def new_axes(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    """A constrained-layout figure with one ``Axes``, without pyplot (so nothing is drawn twice in a notebook)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def new_figure(rows: int = 1, cols: int = 1, width: float = 11.0, height: float = 4.0,
               **subplots) -> tuple[Figure, object]:
    """A constrained-layout figure and its axes (one ``Axes``, or an array of them), without pyplot."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, **subplots)


def plot_curves(curves: dict[str, pd.Series], ax: Axes, marker: str = "o", **labels) -> Axes:
    """One line per entry of ``curves`` (x = the series' index), a legend and a light grid.

    ``labels``: passed to ``ax.set`` (``xlabel``, ``ylabel``, ``title``, ``ylim``, ...).
    """
    for name, curve in curves.items():
        ax.plot(curve.index, curve.to_numpy(), marker=marker, label=name)
    ax.set(**labels)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_grouped_bars(table: pd.DataFrame, ax: Axes, tick_labels: list[str] | None = None, width: float = 0.27,
                      bar_labels: str | None = None, colors: dict | None = None, **labels) -> Axes:
    """Bars grouped by ``table``'s columns, one bar (and legend entry) per row of ``table``.

    ``bar_labels``: a format (e.g. ``"%.2f"``) to write each bar's value on it; ``colors``: a colour for
    some rows (the others take the next colour of the cycle).
    """
    x = np.arange(len(table.columns))
    offsets = (np.arange(len(table.index)) - (len(table.index) - 1) / 2) * width
    for offset, (name, row) in zip(offsets, table.iterrows(), strict=True):
        bars = ax.bar(x + offset, row.to_numpy(dtype=float), width=width, label=str(name),
                      color=(colors or {}).get(name))
        if bar_labels:
            ax.bar_label(bars, fmt=bar_labels, fontsize=7)
    ax.set_xticks(x, tick_labels if tick_labels is not None else [str(c) for c in table.columns])
    ax.set(**labels)
    ax.grid(axis="y", alpha=0.3)
    return ax


def bar_figure(table: pd.DataFrame, size: tuple[float, float] = (9.0, 4.0), legend: dict | None = None,
               **bars) -> Figure:
    """A figure of :func:`plot_grouped_bars` (``bars``: its arguments) with a legend (``legend``: its
    keyword arguments)."""
    fig, ax = new_figure(width=size[0], height=size[1])
    plot_grouped_bars(table, ax, **bars)
    ax.legend(**{"frameon": False, "fontsize": 8, **(legend or {})})
    return fig
