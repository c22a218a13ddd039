"""Notebook 03, the variational autoencoder: the beta trade-off and the latent space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedad_tutorial.plots._style import new_figure

if TYPE_CHECKING:
    import torch


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
