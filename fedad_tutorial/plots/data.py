"""Notebook 01, the data: what the generated cloud-activity federation looks like.

Correlations between metrics, anomalies against normal rows, and how the nodes differ (non-IID).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure

#: One colour per row type of the cloud-activity generator, in every figure of notebook 01.
ROW_TYPE_COLORS = {"normal": "lightgrey", "spike": "tab:red", "correlation_break": "tab:purple",
                   "level_shift": "tab:orange", "flatline": "tab:blue"}


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
