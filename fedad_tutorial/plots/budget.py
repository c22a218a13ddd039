"""The training budget: detection quality and validation loss over rounds (notebook 13).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure


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
