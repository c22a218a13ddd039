"""Notebook 08, time series: metric streams with their events, and windows scored over time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure, plot_grouped_bars

#: One colour per event kind of :func:`~fedad_tutorial.chapters.timeseries.make_metric_streams`.
EVENT_COLORS = {"spike": "tab:red", "wrong_time": "tab:purple", "stuck": "tab:orange"}


def _shade_events(ax: Axes, events, steps_per_day: int, alpha: float, lo: int = 0, hi: int | None = None,
                  widen: float = 0.0) -> None:
    for e in events:
        if e.stop > lo and (hi is None or e.start < hi):
            ax.axvspan(e.start / steps_per_day, e.stop / steps_per_day + widen, color=EVENT_COLORS[e.kind],
                       alpha=alpha)


def plot_stream(stream, steps_per_day: int, train_days: int, profile: np.ndarray) -> Figure:
    """A node's request rate over every day with its events shaded, and a close-up of every metric.

    ``profile`` is the stream's seasonal profile (one value per step, median about 1), drawn scaled
    to the request rate's median: the caller passes it, so this figure needs nothing from the chapter.
    """
    from matplotlib.patches import Patch

    day = np.arange(stream.num_steps) / steps_per_day
    fig, (top, bottom) = new_figure(2, 1, 11, 6)
    rate = stream.feature_names.index("request_rate")
    top.plot(day, stream.features[:, rate], lw=0.8, color="tab:blue")
    top.plot(day, profile * np.median(stream.features[:, rate]),
             color="black", lw=1, ls="--", label="seasonal profile (daily, weekend, trend)")
    _shade_events(top, stream.events, steps_per_day, 0.35, widen=0.02)
    top.axvline(train_days, color="grey", ls=":")
    top.set(xlabel="day", ylabel="requests per second",
            title=f"{stream.name}: request rate over {stream.num_steps // steps_per_day} days (events shaded)")
    handles = top.get_legend_handles_labels()[0] + [Patch(color=c, alpha=0.35, label=k)
                                                    for k, c in EVENT_COLORS.items()]
    top.legend(handles=handles, frameon=False, fontsize=8, ncol=4, loc="upper left")
    first = next(e for e in stream.events if e.kind != "spike")
    lo, hi = first.start - steps_per_day // 2, first.start + steps_per_day
    for j, name in enumerate(stream.feature_names):
        bottom.plot(day[lo:hi], stream.features[lo:hi, j] / np.median(stream.features[:, j]), lw=1.2, label=name)
    _shade_events(bottom, stream.events, steps_per_day, 0.25, lo, hi)
    bottom.set(xlabel="day", ylabel="value / median of the metric",
               title="a day and a half close up: every metric, one event")
    bottom.legend(frameon=False, fontsize=8, ncol=5)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def plot_event_recall(by_kind: pd.DataFrame, table: pd.DataFrame) -> Figure:
    """Event recall per event kind and detector; point- vs event-level recall per detector.

    ``table`` has two-level columns: ``("windows", "recall")`` and ``("events", "recall")`` among them.
    """
    fig, (left, right) = new_figure(1, 2, 11, 4)
    plot_grouped_bars(by_kind, left, xlabel="event kind", ylabel="event recall",
                      title="which events each detector finds", ylim=(0, 1.05))
    left.legend(frameon=False, fontsize=8)
    plot_grouped_bars(table[[("windows", "recall"), ("events", "recall")]], right,
                      tick_labels=["point level (per window)", "event level"], ylabel="recall",
                      title="the same alarms, counted two ways", ylim=(0, 1.05))
    return fig


def plot_window_scores(stream, window_ends: np.ndarray, scores: np.ndarray, threshold: float,
                       steps_per_day: int, title: str) -> Figure:
    """A detector's window scores over time (log), its threshold, its alarms and the stream's events."""
    fig, ax = new_figure(width=11, height=3.8)
    days = np.asarray(window_ends) / steps_per_day
    ax.plot(days, scores, lw=0.9, color="tab:blue", label="window score")
    ax.axhline(threshold, color="black", ls="--", lw=1, label="threshold (99th percentile)")
    alarm = scores > threshold
    ax.scatter(days[alarm], scores[alarm], s=12, color="tab:red", zorder=3, label="alarm")
    ax.set_yscale("log")
    for e in stream.events:
        ax.axvspan(e.start / steps_per_day, e.stop / steps_per_day, color=EVENT_COLORS[e.kind], alpha=0.3)
        ax.text(e.start / steps_per_day, ax.get_ylim()[0] * 1.15, e.kind, fontsize=7, rotation=90)
    ax.set(xlabel="day (window end)", ylabel="reconstruction error (log)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    return fig
