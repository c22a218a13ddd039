"""Notebook 15, network intrusion: byte counts before and after the log transform, the servers' features, and
the price of recall (alarms per 10,000 connections) of each detector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from fedad_tutorial.plots._style import new_figure


def plot_raw_and_log(columns: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], feature: str) -> Figure:
    """Histograms (log count) of one feature of normal and attack connections, raw and after ``log(1 + x)``,
    one row of two panels per service.

    ``columns``: service -> (raw values, logged values, labels). Heavy tails squeeze small connections
    together in raw counts; after the log small attacks stand apart from normal traffic.
    """
    fig, axes = new_figure(len(columns), 2, 12, 6.5, squeeze=False)
    for row, (service, (raw, logged, labels)) in zip(axes, columns.items(), strict=True):
        for ax, values, scale in ((row[0], raw, "raw"), (row[1], logged, "log")):
            bins = np.linspace(values.min(), values.max(), 60)
            ax.hist(values[labels == 0], bins=bins, color="tab:blue", alpha=0.6, label="normal")
            ax.hist(values[labels == 1], bins=bins, color="tab:red", alpha=0.8, label="attack")
            ax.set(yscale="log", ylabel="connections (log scale)",
                   xlabel=feature if scale == "raw" else f"log(1 + {feature})",
                   title=f"{service}: {'raw byte counts' if scale == 'raw' else 'after the log transform'}")
            ax.legend(frameon=False)
            ax.grid(alpha=0.3)
    return fig


def plot_server_features(servers: Sequence, features: Sequence[str]) -> Figure:
    """One box plot per feature (its log values), one box per server, on the servers' training rows.

    ``servers``: each with a ``label`` and ``train.features`` (one column per name in ``features``). Boxes
    that sit at different heights are non-IID clients: what FedAvg has to average over.
    """
    fig, axes = new_figure(1, len(features), 12, 4)
    for ax, (j, name) in zip(np.atleast_1d(axes), enumerate(features), strict=True):
        ax.boxplot([s.train.features[:, j] for s in servers], showfliers=False)
        ax.set_xticks(range(1, len(servers) + 1), [s.label.replace(" (", "\n(") for s in servers], fontsize=7)
        ax.set(ylabel=f"log(1 + {name})", title=f"{name} per server (training rows)")
        ax.grid(alpha=0.3)
    return fig


_STYLES = ("-", "--", "-.", (0, (8, 2)), (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v")


def plot_price_of_recall(recalls: np.ndarray, prices: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]],
                         title: str, named_ticks: Sequence[float] = (2, 5, 10, 20, 30, 50, 70)) -> Figure:
    """Alarms per 10,000 connections (log) each detector needs to catch each share of the attacks, one panel
    per group of servers, with the floor of a perfect detector (it alarms on the attacks only) dotted.

    ``prices``: panel title -> (the held-out labels, detector -> alarms per 10,000 at each of ``recalls``).
    The first panel, whose range is narrow, names ``named_ticks`` and holds the legend.
    """
    fig, axes = new_figure(1, len(prices), 12, 4.5, squeeze=False)
    for k, (ax, (name, (labels, curves))) in enumerate(zip(axes[0], prices.items(), strict=True)):
        # detectors whose curves coincide (the autoencoder and the norm) stay visible: each has its own dash
        # pattern and marker, and the later, thinner lines are drawn over the earlier, thicker ones
        for j, (detector, curve) in enumerate(curves.items()):
            ax.plot(recalls, curve, lw=3.2 - 0.6 * j, ls=_STYLES[j % len(_STYLES)], marker=_MARKERS[j % len(_MARKERS)],
                    ms=5, markevery=(j, len(curves) + 1), label=detector)
        ax.plot(recalls, recalls * 1e4 * labels.mean(), ls=":", color="black",
                label="the attacks caught themselves (a perfect detector)")
        ax.set(yscale="log", xlabel="share of the attacks caught (recall)", ylabel="alarms per 10,000 connections",
               title=f"{name}: {int(labels.sum())} attacks in {labels.size:,} held-out connections")
        if k == 0:
            ax.set_yticks(list(named_ticks), labels=[f"{t:g}" for t in named_ticks])
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        if k == 0:
            ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.suptitle(title)
    return fig
