"""Notebook 09, concept drift: false alarms per window through a drift, drift tests, adaptation.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure


def _plot_window_series(ax: Axes, tables: dict[str, pd.DataFrame], column: str, window: int,
                        highlighted: tuple[str, ...] = ()) -> None:
    """One line per table of per-window values (``start`` column), drawn at the windows' centres; the
    ``highlighted`` names bold, the others thin and dashed."""
    for name, tab in tables.items():
        style = dict(lw=2.2) if name in highlighted or not highlighted else dict(lw=1.2, alpha=0.6, ls="--")
        ax.plot(tab["start"] + window / 2, tab[column], marker="o", ms=3, label=name, **style)


def plot_false_alarm_storm(timelines: dict[str, pd.DataFrame], window: int, drift_at: int,
                           drifted: tuple[str, ...], calibration: tuple[int, int],
                           reference: tuple[int, int], drift_note: str = "drift starts") -> Figure:
    """Each node's false-alarm rate per window (:func:`~fedad_tutorial.chapters.drift.alarm_rate_per_window`)
    through a drift, the drifted nodes in bold."""
    fig, ax = new_figure(width=9, height=4)
    _plot_window_series(ax, timelines, "false_alarm_rate", window, tuple(drifted))
    ax.axvline(drift_at, color="black", ls=":", lw=1)
    ax.text(drift_at + 10, 0.9, drift_note, fontsize=8)
    ax.axvspan(*calibration, color="tab:green", alpha=0.08, label="calibration (training)")
    ax.axvspan(*reference, color="tab:blue", alpha=0.08, label="reference window")
    ax.set(xlabel="time step (one row per step)", ylabel="false-alarm rate (normal steps flagged)",
           title=f"false-alarm rate per {window}-step window, no adaptation", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="center right")
    return fig


def plot_drift_tests(tests: dict[str, pd.DataFrame], window: int, drift_at: int, drifted: tuple[str, ...]) -> Figure:
    """The KS statistic (windows the test flags circled) and the PSI per window, per node."""
    fig, (ks_ax, psi_ax) = new_figure(1, 2)
    _plot_window_series(ks_ax, tests, "ks", window, tuple(drifted))
    _plot_window_series(psi_ax, tests, "psi", window, tuple(drifted))
    for tab in tests.values():
        flagged = tab[tab["drift"]]
        ks_ax.scatter(flagged["start"] + window / 2, flagged["ks"], s=40, facecolors="none", edgecolors="red")
    ks_ax.set(ylabel="KS statistic (largest CDF gap)", title="KS test per window (red circle: p < 0.001)")
    psi_ax.axhline(0.25, color="grey", ls=":", lw=1)
    psi_ax.set(ylabel="PSI", title="population stability index per window (0.25: major shift)")
    for ax in (ks_ax, psi_ax):
        ax.axvline(drift_at, color="black", ls=":", lw=1)
        ax.set_xlabel("time step")
        ax.grid(alpha=0.3)
    ks_ax.legend(frameon=False, fontsize=8)
    return fig


def plot_adaptation(timelines: dict[str, dict[str, pd.DataFrame]], window: int, drift_at: int,
                    recent: tuple[int, int], adapt_from: int | None = None) -> Figure:
    """Per node (one panel each), the false-alarm rate per window under each adaptation strategy.

    With ``adapt_from``, the windows before it (where every strategy is still the original detector,
    so the lines would hide each other) are drawn once, in grey, and each strategy from there on.
    """
    fig, axes = new_figure(1, len(timelines), sharey=True, squeeze=False)
    for ax, (node, strategies) in zip(axes[0], timelines.items(), strict=True):
        shared = None
        if adapt_from is not None:
            first = next(iter(strategies.values()))
            shared = first[first["start"] < adapt_from]
            ax.plot(shared["start"] + window / 2, shared["false_alarm_rate"], color="grey", marker="o", ms=3,
                    label="before adaptation (every strategy)")
        for strategy, tab in strategies.items():
            if shared is not None:  # start each line at the last shared point, so it continues the grey one
                tab = tab[tab["start"] >= shared["start"].max()]
            ax.plot(tab["start"] + window / 2, tab["false_alarm_rate"], marker="o", ms=3, label=strategy)
        ax.axvline(drift_at, color="black", ls=":", lw=1)
        ax.axvspan(*recent, color="tab:orange", alpha=0.1, label="recent window (adaptation data)")
        ax.set(xlabel="time step", title=f"{node}: false-alarm rate per {window}-step window", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("false-alarm rate")
    axes[0, -1].legend(frameon=False, fontsize=8, loc="center left")
    return fig
