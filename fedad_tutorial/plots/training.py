"""Training an autoencoder: its loss per epoch, and what training too long does (memorisation).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_axes, new_figure


def plot_training_curve(curve: pd.DataFrame) -> Figure:
    """Loss per epoch (log scale), one line per column of ``curve`` (index: epoch), up to three columns."""
    fig, ax = new_axes(7, 4)
    for column, style in zip(curve.columns, ("-", "--", ":"), strict=False):
        ax.plot(curve.index, curve[column], style, lw=2, label=column)
    ax.set(xlabel="epoch", ylabel="mean squared error (scaled units)", yscale="log",
           title="Autoencoder training curve: loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return fig


def plot_memorisation(memo: pd.DataFrame, intended_rate: float = 0.05) -> Figure:
    """Training vs fresh-row error over epochs, and the share of fresh normal rows a training-row threshold flags.

    ``memo``: one row per epoch count with ``epochs, error_train, error_fresh, alarm_rate_fresh_normal``.
    """
    fig, (ax_err, ax_alarm) = new_figure(1, 2, 10, 3.8)
    ax_err.plot(memo["epochs"], memo["error_train"], "o-", label="training rows")
    ax_err.plot(memo["epochs"], memo["error_fresh"], "s-", label="fresh rows (same distribution)")
    ax_err.set(xlabel="epochs", ylabel="mean reconstruction error", title="Memorisation: training error keeps falling")
    ax_alarm.plot(memo["epochs"], memo["alarm_rate_fresh_normal"], "o-", color="tab:red", label="fresh normal rows")
    ax_alarm.axhline(intended_rate, color="grey", ls=":", label=f"intended {intended_rate:.0%}")
    ax_alarm.set(xlabel="epochs", ylabel="share flagged", ylim=(0, 1.02),
                 title="A threshold set on training rows, applied to new rows")
    for ax in (ax_err, ax_alarm):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    return fig
