"""Plots of the course and the command line.

Functions draw on a Matplotlib ``Axes`` you pass in (so notebooks can compose them) or on a new
figure; :func:`save_figure` writes a figure atomically. They use the object API, never pyplot's
global state, so they work the same in a script, a test and a notebook.

Notebooks show their figures inline and write nothing: :func:`course_figure` saves a figure under
its README name only when ``FEDAD_FIGURES_DIR`` is set, which only the explicit command
``python -m fedad_tutorial.exercises.figures`` does (it regenerates the README's images).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedad_tutorial.atomic import atomic_path

if TYPE_CHECKING:
    import torch


def figures_dir() -> Path:
    """The repository's ``figures/`` folder when run from a checkout, else ``./figures``."""
    repo = Path(__file__).resolve().parents[1]
    return repo / "figures" if (repo / "pyproject.toml").exists() else Path("figures")


#: Set (to a folder) only by ``python -m fedad_tutorial.exercises.figures``: where course figures go.
FIGURES_ENV = "FEDAD_FIGURES_DIR"


def course_figure(fig: Figure, name: str) -> Figure:
    """Return ``fig`` for inline display; also save it as ``$FEDAD_FIGURES_DIR/name`` if that is set.

    A notebook cell ends with ``course_figure(fig, "02_error_histogram.png")``: running the course
    leaves the repository untouched, and the README's images are regenerated only on purpose.
    """
    folder = os.environ.get(FIGURES_ENV, "").strip()
    if folder:
        save_figure(fig, Path(folder) / name)
    return fig


def new_axes(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def plot_metric_per_round(history: pd.DataFrame, metric: str = "f1", ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """One thin line per client and a bold mean line: how ``metric`` evolves over rounds."""
    fig, ax = new_axes() if ax is None else (ax.figure, ax)
    for client, rows in history.groupby("client", sort=False):
        ax.plot(rows["round"], rows[metric], lw=1, alpha=0.45, label=str(client))
    mean = history.groupby("round")[metric].mean()
    ax.plot(mean.index, mean.values, color="black", lw=2.5, label="mean")
    ax.set_xlabel("round")
    ax.set_ylabel(metric.replace("_", "-").upper() if len(metric) <= 3 else metric.replace("_", " "))
    if metric in {"f1", "precision", "recall", "roc_auc", "pr_auc"}:
        ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{metric.replace('_', ' ')} per round on held-out rows")
    ax.grid(alpha=0.3)
    ncol = 2 if history["client"].nunique() > 6 else 1
    ax.legend(fontsize=7, ncol=ncol, loc="lower right", frameon=False)
    return fig


def plot_f1_per_round(history: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Figure:
    """F1 per round, one line per client plus the mean (the course's headline plot)."""
    return plot_metric_per_round(history, "f1", ax=ax, title=title or "F1 per round on held-out rows")


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


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (PNG) atomically; create the folder if needed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def plot_roc_pr(labels: np.ndarray, scores: dict[str, np.ndarray], axes: tuple[Axes, Axes] | None = None) -> Figure:
    """ROC and precision-recall curves of one or more scorers on the same labelled rows."""
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
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    return fig


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


# --- Building blocks the chapters share ----------------------------------------------------------------------


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


def mean_per_round(history: pd.DataFrame, metric: str = "f1") -> pd.Series:
    """A run history's mean over clients of ``metric``, per round."""
    return history.groupby("round")[metric].mean()


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


# --- Notebook 02: the autoencoder ---------------------------------------------------------------------------


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


# --- Notebook 01: the data -----------------------------------------------------------------------------------

#: One colour per row type of the cloud-activity generator, in every figure of notebook 01.
ROW_TYPE_COLORS = {"normal": "lightgrey", "spike": "tab:red", "correlation_break": "tab:purple",
                   "level_shift": "tab:orange", "flatline": "tab:blue"}


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


def plot_metric_correlations(node) -> Figure:
    """Correlation heatmap of a node's normal rows, metrics grouped by their main workload factor."""
    import seaborn as sns

    from fedad_tutorial.data import FACTORS, metric_catalog

    catalog = metric_catalog(len(node.feature_names))
    normal_rows = pd.DataFrame(node.features[node.labels == 0], columns=node.feature_names)
    order = catalog[list(FACTORS)].idxmax(axis=1).map(FACTORS.index).sort_values(kind="stable").index
    fig, ax = new_figure(width=10, height=8.5)
    sns.heatmap(normal_rows[order].corr(), ax=ax, cmap="rocket_r", vmin=0, vmax=1, square=True,
                cbar_kws={"label": "Pearson correlation", "shrink": 0.7}, xticklabels=True, yticklabels=True)
    ax.tick_params(labelsize=7)
    ax.set(title=f"Correlation of the {len(order)} metrics on {node.name}'s normal rows (grouped by main factor)",
           xlabel="metric", ylabel="metric")
    return fig


def plot_metric_pairs(node, metrics: list[str], normal_rows: int = 400, seed: int = 0) -> Figure:
    """Pairwise scatter plots of a few metrics (log10(1 + x)): a sample of normal rows and every anomaly."""
    import seaborn as sns

    rng = np.random.default_rng(seed)
    keep = np.r_[np.flatnonzero(node.labels == 1),
                 rng.choice(np.flatnonzero(node.labels == 0), size=normal_rows, replace=False)]
    columns = [node.feature_names.index(m) for m in metrics]
    # log10(1 + x): the metrics are skewed and anomalies can be many times the usual values
    sample = pd.DataFrame(np.log10(1 + node.features[np.ix_(keep, columns)]),
                          columns=[f"log10(1 + {m})" for m in metrics])
    sample["row type"] = node.anomaly_types[keep]
    grid = sns.pairplot(sample, vars=list(sample.columns[:-1]), hue="row type", hue_order=list(ROW_TYPE_COLORS),
                        palette=ROW_TYPE_COLORS, corner=True, height=2.0,
                        plot_kws={"s": 12, "alpha": 0.8, "linewidth": 0}, diag_kind="hist",
                        diag_kws={"common_norm": False, "element": "step", "fill": False})
    grid.figure.suptitle(f"{len(metrics)} metrics on {node.name} "
                         f"({normal_rows} normal rows + all {node.labels.sum()} anomalies)")
    grid.figure.subplots_adjust(top=0.93)
    return grid.figure


def plot_anomaly_profiles(node, per_type: int = 3) -> Figure:
    """A few anomalous rows of each type as z-scores against the node's normal rows, over every metric."""
    from fedad_tutorial.data import ANOMALY_TYPES

    normal = node.features[node.labels == 0]
    z = (node.features - normal.mean(axis=0)) / normal.std(axis=0, ddof=1)
    band_lo, band_hi = np.percentile(z[node.labels == 0], [1, 99], axis=0)
    positions = np.arange(len(node.feature_names))
    fig, axes = new_figure(len(ANOMALY_TYPES), 1, 12, 9, sharex=True)
    for ax, kind in zip(axes, ANOMALY_TYPES, strict=True):
        ax.fill_between(positions, band_lo, band_hi, color="lightgrey", label="normal rows (1st-99th percentile)")
        for i, row in enumerate(np.flatnonzero(node.anomaly_types == kind)[:per_type]):
            ax.plot(positions, z[row], "o-", ms=3, lw=1, color=ROW_TYPE_COLORS[kind], alpha=1 - 0.25 * i,
                    label=f"{kind} row" if i == 0 else None)
        ax.set_yscale("symlog", linthresh=3)
        ax.set_yticks([-10, -3, 0, 3, 10], ["-10", "-3", "0", "3", "10"])
        ax.set_ylim(-20, 25)
        ax.axhline(0, color="black", lw=0.5)
        ax.set(ylabel="z-score", title=f"{kind}: {ANOMALY_TYPES[kind].split('(')[0].strip()}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    axes[-1].set_xticks(positions, node.feature_names, rotation=70, ha="right", fontsize=8)
    axes[-1].set_xlabel("metric")
    fig.suptitle(f"{per_type} anomalous rows of each type on {node.name}, standardised with its normal rows")
    return fig


def plot_federation_overview(nodes) -> Figure:
    """Node sizes (normal and anomalous rows) and two metrics' distributions per node: how non-IID it is."""
    import seaborn as sns

    def normal_values(node, metric: str) -> np.ndarray:
        return node.features[node.labels == 0, node.feature_names.index(metric)]

    long = pd.concat([pd.DataFrame({"node": n.name, "request_rate": normal_values(n, "request_rate"),
                                    "cpu_util_pct": normal_values(n, "cpu_util_pct")}) for n in nodes],
                     ignore_index=True)
    fig, (ax_size, ax_req, ax_cpu) = new_figure(1, 3, 13, 4, width_ratios=[1, 1.5, 1.5])
    names = [n.name.replace("node_", "") for n in nodes]
    normal_counts = [int((n.labels == 0).sum()) for n in nodes]
    ax_size.bar(names, normal_counts, color="tab:blue", label="normal")
    ax_size.bar(names, [int(n.labels.sum()) for n in nodes], bottom=normal_counts, color="tab:red", label="anomalous")
    ax_size.set(xlabel="node", ylabel="rows", title="Node sizes")
    ax_size.set_ylim(0, 1.2 * max(n.num_rows for n in nodes))
    ax_size.legend(frameon=False, ncol=2, loc="upper left")
    sns.violinplot(data=long, x="node", y="request_rate", ax=ax_req, cut=0, inner="quartile", color="tab:green",
                   linewidth=0.8)
    ax_req.set(yscale="log", xlabel="node", ylabel="requests per second (log)", title="Request rate, normal rows")
    sns.violinplot(data=long, x="node", y="cpu_util_pct", ax=ax_cpu, cut=0, inner="quartile", color="tab:orange",
                   linewidth=0.8)
    ax_cpu.set(xlabel="node", ylabel="CPU utilisation (%)", title="CPU, normal rows")
    for ax in (ax_req, ax_cpu):
        ax.set_xticks(range(len(nodes)), names)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Non-IID federation: nodes differ in size and operating regime")
    return fig


# --- Notebook 08: time series --------------------------------------------------------------------------------

#: One colour per event kind of :func:`~fedad_tutorial.timeseries.make_metric_streams`.
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
    """Event recall per event kind and detector; point- vs event-level recall per detector."""
    fig, (left, right) = new_figure(1, 2, 11, 4)
    plot_grouped_bars(by_kind, left, xlabel="event kind", ylabel="event recall",
                      title="which events each detector finds", ylim=(0, 1.05))
    left.legend(frameon=False, fontsize=8)
    plot_grouped_bars(table[["point recall", "event recall"]], right,
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


# --- Notebook 04: federated averaging ------------------------------------------------------------------------

_METRIC_LABELS = {"f1": "F1", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "fpr": "false-positive rate"}


def plot_mean_per_round(runs: dict[str, pd.DataFrame], metric: str = "f1", ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """The mean over clients of ``metric`` per round, one line per run history in ``runs``."""
    fig, ax = new_axes() if ax is None else (ax.figure, ax)
    name = f"mean {_METRIC_LABELS.get(metric, metric)}"
    plot_curves({label: mean_per_round(history, metric) for label, history in runs.items()}, ax, xlabel="round",
                ylabel=f"{name} on held-out rows", title=title or f"{name} per round on held-out rows")
    if metric == "f1":
        ax.set_ylim(0, 1.02)
    return fig


def plot_modes_per_client(final: pd.DataFrame) -> Figure:
    """Final ROC-AUC and F1 per client for each training mode, the client with the fewest rows first.

    ``final``: one row per client; columns ``(mode, metric)`` holding at least ``n_train``, ``roc_auc``
    and ``f1`` (each mode's ``final_round()``).
    """
    modes = list(dict.fromkeys(final.columns.get_level_values(0)))
    rows = final[(modes[0], "n_train")].sort_values()
    fig, axes = new_figure(1, 2)
    for ax, metric, ylim in zip(axes, ("roc_auc", "f1"), ((0.5, 1.12), (0, 1.2)), strict=True):
        table = pd.DataFrame({client: [final.loc[client, (mode, metric)] for mode in modes] for client in rows.index},
                             index=modes)
        name = _METRIC_LABELS[metric]
        plot_grouped_bars(table, ax, tick_labels=[f"{client}\n({n} rows)" for client, n in rows.items()],
                          ylabel=name, ylim=ylim, title=f"final {name} per client (smallest first)")
        ax.tick_params(axis="x", labelsize=8)
    axes[1].legend(frameon=False, fontsize=8, loc="upper center", ncol=3)
    return fig


# --- Notebook 09: concept drift ------------------------------------------------------------------------------


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
    """Each node's false-alarm rate per window (:func:`~fedad_tutorial.drift.alarm_rate_per_window`)
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
                    recent: tuple[int, int]) -> Figure:
    """Per node (one panel each), the false-alarm rate per window under each adaptation strategy."""
    fig, axes = new_figure(1, len(timelines), sharey=True, squeeze=False)
    for ax, (node, strategies) in zip(axes[0], timelines.items(), strict=True):
        for strategy, tab in strategies.items():
            ax.plot(tab["start"] + window / 2, tab["false_alarm_rate"], marker="o", ms=3, label=strategy)
        ax.axvline(drift_at, color="black", ls=":", lw=1)
        ax.axvspan(*recent, color="tab:orange", alpha=0.1, label="recent window (adaptation data)")
        ax.set(xlabel="time step", title=f"{node}: false-alarm rate per {window}-step window", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("false-alarm rate")
    axes[0, -1].legend(frameon=False, fontsize=8, loc="center left")
    return fig


# --- Notebook 10: differential privacy -----------------------------------------------------------------------


def plot_epsilon_curves(curves: pd.DataFrame, q: float, delta: float) -> Figure:
    """Privacy loss epsilon over rounds (log scale), one line per column of ``curves`` (index: rounds)."""
    fig, ax = new_axes(7, 4)
    for name in curves.columns:
        ax.plot(curves.index, curves[name], label=str(name))
    ax.set(xlabel="rounds", ylabel="epsilon", yscale="log",
           title=f"privacy loss over rounds (q = {q}, delta = {delta})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_utility_vs_epsilon(utility: pd.DataFrame, xlabel: str, title: str, no_dp: str = "FedAvg (no DP)",
                            clipping_only: str = "clipping only") -> Figure:
    """ROC-AUC against epsilon (log) of the noisy runs, each labelled with its sigma, and two reference lines.

    ``utility``: one row per run (index: its name) with ``sigma, epsilon, ROC-AUC``; the noisy runs are
    those with ``sigma > 0``, the rows ``no_dp`` and ``clipping_only`` give the reference lines.
    """
    fig, ax = new_axes(7, 4)
    dp = utility.dropna(subset=["sigma"]).query("sigma > 0")
    ax.plot(dp["epsilon"], dp["ROC-AUC"], marker="o", label="DP-FedAvg (C = 1)")
    for eps, auc, sigma in zip(dp["epsilon"], dp["ROC-AUC"], dp["sigma"], strict=True):
        ax.annotate(f"sigma {sigma}", (eps, auc), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.axhline(utility.loc[no_dp, "ROC-AUC"], color="grey", lw=4, alpha=0.5, label="FedAvg, no DP")
    ax.axhline(utility.loc[clipping_only, "ROC-AUC"], color="tab:green", ls="--", label="clipping only (no noise)")
    ax.set(xscale="log", xlabel=xlabel, ylabel="mean ROC-AUC (held-out rows)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig


# --- Notebook 13: real data (WDBC) ---------------------------------------------------------------------------

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


def plot_budget_curves(auc: pd.DataFrame, loss: pd.DataFrame, default_rounds: int = 10) -> Figure:
    """Held-out ROC-AUC and unlabelled validation loss per round (one column per split, and their mean)."""
    fig, (ax_auc, ax_loss) = new_figure(1, 2)
    for seed in auc.columns:
        ax_auc.plot(auc.index, auc[seed], lw=1, alpha=0.45, label=f"split {seed}")
        ax_loss.plot(loss.index, loss[seed], lw=1, alpha=0.45)
    ax_auc.plot(auc.index, auc.mean(axis=1), lw=2.5, color="black", label="mean")
    ax_loss.plot(loss.index, loss.mean(axis=1), lw=2.5, color="black")
    for ax in (ax_auc, ax_loss):
        ax.axvline(default_rounds, ls="--", color="gray")
        ax.grid(alpha=0.3)
        ax.set_xlabel("round (5 local epochs each)")
    ax_auc.text(default_rounds + 0.5, auc.values.max(), f"fedad simulate's default: {default_rounds} rounds",
                fontsize=8, color="gray", va="top")
    ax_auc.set(ylabel="ROC-AUC, held-out test rows", title="Detection gets worse with a longer budget")
    ax_loss.set(ylabel="validation loss (unlabelled rows)", yscale="log",
                title="...while the validation loss keeps falling")
    ax_auc.legend(frameon=False, fontsize=8, ncol=2)
    return fig


# --- Notebook 05: thresholds ---------------------------------------------------------------------------------


def plot_threshold_comparison(table: pd.DataFrame, fpr_target: float | None = None) -> Figure:
    """False-positive rate and F1 on held-out rows per client, one bar per threshold strategy.

    ``table``: one row per (``strategy``, ``client``) with ``fpr`` and ``f1`` columns.
    """
    strategies, clients = list(dict.fromkeys(table["strategy"])), list(dict.fromkeys(table["client"]))
    fig, axes = new_figure(1, 2)
    for ax, metric, name in zip(axes, ("fpr", "f1"), ("false-positive rate", "F1"), strict=True):
        wide = table.pivot(index="strategy", columns="client", values=metric).loc[strategies, clients]
        plot_grouped_bars(wide, ax, xlabel="client", ylabel=name, title=f"{name} on held-out rows, per client")
    if fpr_target is not None:
        axes[0].axhline(fpr_target, color="black", ls=":", lw=1, label=f"{fpr_target:.0%} target")
    axes[1].set_ylim(0, 1.2)
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_threshold_sweep(sweep: pd.DataFrame, best_f1: float, cheapest: float, cost_label: str) -> Figure:
    """Precision, recall and F1, and the expected cost with the alarm load, against the threshold percentile.

    ``sweep``: one row per ``percentile`` with ``precision, recall, f1, cost per row, alarms per node-day``;
    ``best_f1`` and ``cheapest``: the percentiles to mark.
    """
    fig, (left, right) = new_figure(1, 2)
    for metric in ("precision", "recall", "f1"):
        left.plot(sweep["percentile"], sweep[metric], label=metric if metric != "f1" else "F1")
    left.axvline(best_f1, color="grey", ls=":", lw=1)
    left.set(xlabel="threshold percentile of training scores", ylabel="score on held-out rows",
             title="precision, recall and F1 vs threshold", ylim=(0, 1.02))
    left.legend(frameon=False, fontsize=8)
    right.plot(sweep["percentile"], sweep["cost per row"], color="tab:red", label="expected cost per row")
    right.axvline(cheapest, color="tab:red", ls=":", lw=1)
    right.set(xlabel="threshold percentile of training scores", ylabel=cost_label, title="the cost of a threshold")
    twin = right.twinx()
    twin.plot(sweep["percentile"], sweep["alarms per node-day"], color="tab:blue", ls="--",
              label="alarms per node-day")
    twin.set_ylabel("alarms per node and day (1 row/min)")
    right.legend(handles=right.lines[:1] + twin.lines, frameon=False, fontsize=8, loc="upper center")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return fig


def plot_thresholds_per_round(local: pd.DataFrame, global_per_round: pd.Series) -> Figure:
    """Each client's local 95th-percentile threshold per round (one column each) and the global one."""
    fig, ax = new_figure(width=8, height=4)
    for client in local.columns:
        ax.plot(local.index, local[client], lw=1.2, alpha=0.7, label=f"{client} (local p95)")
    ax.plot(global_per_round.index, global_per_round.to_numpy(), color="black", lw=2.5,
            label="global p95 (histograms)")
    ax.set_yscale("log")
    ax.set(xlabel="round", ylabel="threshold (reconstruction error, log scale)",
           title="95th-percentile threshold per round")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return fig


# --- Notebook 03: the variational autoencoder ----------------------------------------------------------------

#: Colour and marker per row type in the latent-space figure (markers tell the types apart in grey print).
LATENT_STYLE = {"normal": ("lightgrey", "."), "spike": ("tab:red", "^"), "correlation_break": ("tab:orange", "s"),
                "level_shift": ("tab:purple", "D"), "flatline": ("tab:green", "x")}


def plot_beta_sweep(beta_table: pd.DataFrame) -> Figure:
    """ROC-AUC of both VAE scores, and the two ELBO terms on normal rows, against beta (the table's index)."""
    fig, (auc_ax, kl_ax) = new_figure(1, 2, 10, 3.8)
    for column, marker in (("ROC-AUC (elbo)", "o"), ("ROC-AUC (reconstruction)", "s")):
        auc_ax.plot(beta_table.index, beta_table[column], marker=marker, label=f"{column[9:-1]} score")
    auc_ax.set(xscale="log", xlabel="beta (weight of the KL term)", ylabel="ROC-AUC on held-out rows",
               title="Detection quality vs beta")
    kl_ax.plot(beta_table.index, beta_table["KL (normal rows)"], marker="o", color="tab:purple",
               label="KL to the prior")
    kl_ax.plot(beta_table.index, beta_table["reconstruction (normal rows)"], marker="s", color="tab:green",
               label="reconstruction term")
    kl_ax.set(xscale="log", yscale="log", xlabel="beta (weight of the KL term)",
              ylabel="nats per row (normal held-out rows)", title="The two ELBO terms vs beta")
    for ax in (auc_ax, kl_ax):
        ax.legend(frameon=False)
        ax.grid(alpha=0.3)
    return fig


def plot_latent_means(models: dict[str, object], x: torch.Tensor, row_types: np.ndarray) -> Figure:
    """Each model's latent means ``mu`` of rows ``x`` on their first two principal components, by row type,
    with the prior's radius-2 circle; prints the variance the two components explain."""
    import torch
    from sklearn.decomposition import PCA

    fig, axes = new_figure(1, len(models), 11, 4.8, sharex=True, sharey=True, squeeze=False)
    angle = np.linspace(0, 2 * np.pi, 200)
    for ax, (name, model) in zip(axes[0], models.items(), strict=True):
        with torch.no_grad():
            codes = model.encode(x)[0].numpy()
        pca = PCA(n_components=2).fit(codes)
        projected = pca.transform(codes)
        for kind, (color, marker) in LATENT_STYLE.items():
            sel = row_types == kind
            ax.scatter(projected[sel, 0], projected[sel, 1], s=8 if kind == "normal" else 30, c=color,
                       marker=marker, label=f"{kind} ({sel.sum()})", alpha=0.8)
        ax.plot(2 * np.cos(angle), 2 * np.sin(angle), "k--", lw=1, label="prior, radius 2")
        ax.set(xlabel="principal component 1 of mu", ylabel="principal component 2 of mu", title=name,
               xlim=(-8, 8), ylim=(-8, 8), aspect="equal")
        print(f"{name}: variance explained by 2 components {pca.explained_variance_ratio_.sum():.2f}")
    axes[0, 0].legend(frameon=False, fontsize=8, loc="lower right")
    return fig
