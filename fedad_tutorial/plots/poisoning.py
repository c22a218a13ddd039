"""Notebook 11, poisoning: how an attacker moves the federation, round by round and at the end, under each
aggregation rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import bar_figure, new_figure


def plot_attacked_recall(curves: dict[tuple[str, str], Sequence[float]], rules: Sequence[str],
                         scenarios: Sequence[str], target: str,
                         baseline: tuple[str, str] = ("clean", "FedAvg")) -> Figure:
    """The recall of the attacked anomaly type after each round, one panel per attack scenario and one line
    per aggregation rule, with the unattacked ``baseline`` run dotted in every panel.

    ``curves``: ``(scenario, rule)`` -> the recall after each round. Round by round shows what a final
    number hides: whether a rule resists, or only delays the attacker.
    """
    fig, axes = new_figure(1, len(scenarios), 11, 4, sharey=True, squeeze=False)
    rounds = np.arange(1, len(curves[baseline]) + 1)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        ax.plot(rounds, curves[baseline], color="grey", ls=":", lw=2, label=f"{baseline[1]}, no attack")
        for rule in rules:
            ax.plot(rounds, curves[scenario, rule], marker="o", label=rule)
        ax.set(xlabel="round", ylabel=f"recall of {target} (held-out rows)", ylim=(0, 1.02),
               title=f"{scenario}: the attacker trains on {target}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(frameon=False, fontsize=8, loc="lower left")
    return fig


def plot_auc_by_rule(table: pd.DataFrame, rules: Sequence[str], scenarios: Sequence[str]) -> Figure:
    """The final mean ROC-AUC of the honest clients, one group of bars per scenario, one bar per aggregation rule.

    ``table``: one row per (``aggregator``, ``scenario``) with a ``ROC-AUC`` column. Side by side in each
    scenario, the bars show what a rule costs when nobody attacks and what it saves when someone does.
    """
    wide = table.pivot(index="aggregator", columns="scenario", values="ROC-AUC").loc[list(rules), list(scenarios)]
    return bar_figure(wide, size=(11, 4), width=0.2, bar_labels="%.2f",
                      legend=dict(loc="center left", bbox_to_anchor=(1.0, 0.5)),
                      ylabel="mean ROC-AUC (honest clients' held-out rows)", ylim=(0.5, 1.04),
                      title="final ROC-AUC by aggregation rule and attack")
