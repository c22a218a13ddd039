"""Compare detectors on the WDBC hospital federation: same splits, same held-out rows, several seeds.

Every method trains on the hospitals' unlabelled training rows (contaminated with ~3 % malignant
cases) and scores the pooled held-out rows of all hospitals; labels are used only for the
ROC-AUC of those held-out rows. ``benchmarks/wdbc_table.py`` and notebook 07 both call
:func:`compare`, so the table in the README and the notebook's numbers come from one code path.

Methods (names are the keys of :data:`METHODS`):

- ``federated`` / ``centralized`` / ``local`` AE and VAE through
  :func:`~fedad_tutorial.federated.run_federated` (matched budgets: centralized makes the same
  passes over every row as federated). ``trimmed`` variants leave each batch's highest-loss 10 %
  out of every step (:func:`~fedad_tutorial.training.batch_loss`). Local-only: each hospital's own
  model scores its own held-out rows.
- ``pca reconstruction``, ``pca latent`` (Mahalanobis of the 3-dim code), ``isolation forest``:
  :mod:`fedad_tutorial.baselines` on the pooled training rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from fedad_tutorial.baselines import isolation_forest_scores, pca_scores
from fedad_tutorial.data import Split
from fedad_tutorial.datasets import wdbc_federation
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.metrics import roc_auc

#: Trimmed share used by the ``trimmed`` variants (above the expected ~3-5 % contamination).
TRIM = 0.1
#: The neural configuration shared by every AE/VAE method (the course defaults; loop engine).
BASE = FederatedConfig(seed=42)

Scorer = Callable[[Sequence[Split], int], np.ndarray]  # (splits, seed) -> scores of the pooled test rows


def _neural(mode: str, **overrides) -> Scorer:
    config = replace(BASE, **overrides)

    def score(splits: Sequence[Split], seed: int) -> np.ndarray:
        result = run_federated(splits, config, mode=mode, progress=False)
        if mode == "local":  # each hospital's own model on its own held-out rows
            return np.concatenate([result.client_detectors[s.name].score_samples(s.test) for s in splits])
        return result.detector.score_samples(np.concatenate([s.test for s in splits]))

    return score


def _pooled(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> Scorer:
    def score(splits: Sequence[Split], seed: int) -> np.ndarray:
        return fn(np.concatenate([s.train for s in splits]), np.concatenate([s.test for s in splits]), seed)

    return score


METHODS: dict[str, Scorer] = {
    "federated AE": _neural("federated"),
    "federated AE, trimmed": _neural("federated", trim=TRIM),
    "centralized AE": _neural("centralized"),
    "centralized AE, trimmed": _neural("centralized", trim=TRIM),
    "local-only AE, trimmed": _neural("local", trim=TRIM),
    "federated VAE": _neural("federated", model="vae"),
    "federated VAE, trimmed": _neural("federated", model="vae", trim=TRIM),
    "centralized VAE, trimmed": _neural("centralized", model="vae", trim=TRIM),
    "PCA reconstruction (3 comp.)": _pooled(lambda tr, te, s: pca_scores(tr, te, 3, "reconstruction")),
    "PCA latent Mahalanobis (3 comp.)": _pooled(lambda tr, te, s: pca_scores(tr, te, 3, "latent")),
    "isolation forest (centralized)": _pooled(lambda tr, te, s: isolation_forest_scores(tr, te, s)),
}


def compare(seeds: Sequence[int], methods: Sequence[str] | None = None, **federation) -> pd.DataFrame:
    """ROC-AUC of each method on each seed's WDBC federation (pooled held-out rows).

    Args:
        seeds: the random splits (:func:`~fedad_tutorial.datasets.wdbc_federation` seeds).
        methods: keys of :data:`METHODS` (default: all).
        **federation: passed to :func:`~fedad_tutorial.datasets.wdbc_federation`.

    Returns:
        One row per seed and method: ``seed, method, roc_auc``.
    """
    rows = []
    for seed in seeds:
        splits = wdbc_federation(seed=seed, **federation)
        labels = np.concatenate([s.test_labels for s in splits])
        for name in methods or METHODS:
            rows.append({"seed": seed, "method": name,
                         "roc_auc": roc_auc(labels, METHODS[name](splits, seed))})
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of ROC-AUC per method over seeds, in first-seen method order."""
    order = list(dict.fromkeys(results["method"]))
    stats = results.groupby("method")["roc_auc"].agg(["mean", "std", "count"]).loc[order]
    return stats.rename(columns={"count": "splits"}).reset_index()


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: ``method | ROC-AUC (mean ± std) | splits``."""
    lines = ["| method | ROC-AUC (mean ± std) | splits |", "| --- | --- | --- |"]
    lines += [f"| {r.method} | {r.mean:.3f} ± {r.std:.3f} | {int(r.splits)} |" for r in summary.itertuples()]
    return "\n".join(lines) + "\n"
