"""Non-neural baselines on pooled (centralized) training rows: PCA and isolation forest.

They answer "is the autoencoder worth it?" on the same held-out rows. Each function fits on
unlabelled training rows (standardised with a scaler fitted on them) and returns one score per
test row, higher = more anomalous.

- :func:`pca_scores` ``"reconstruction"``: squared distance to the ``q``-dimensional principal
  subspace (the linear autoencoder); ``"latent"``: Mahalanobis distance of the ``q``-dimensional
  code (Hotelling's T^2), i.e. how far *along* the normal directions a row lies.
- :func:`isolation_forest_scores`: scikit-learn's :class:`~sklearn.ensemble.IsolationForest`.
- :func:`norm_scores`: the squared distance to the training mean in standardised units, no model
  at all. A detector that cannot beat it has learned nothing about the normal rows' structure
  (the original tutorial's pitfall, chapter 01); on data where anomalies are simply *large* (WDBC)
  it is a strong baseline.

>>> rng = np.random.default_rng(0)
>>> train = rng.normal(size=(200, 5)).astype("float32")
>>> test = np.vstack([rng.normal(size=(5, 5)), np.full((1, 5), 6.0)]).astype("float32")
>>> int(np.argmax(pca_scores(train, test, 2, "latent"))), int(np.argmax(isolation_forest_scores(train, test)))
(5, 5)
"""

from __future__ import annotations

import numpy as np

from fedad_tutorial.errors import UserError
from fedad_tutorial.scaling import Scaler

PCA_SCORES = ("reconstruction", "latent")


def pca_scores(train: np.ndarray, test: np.ndarray, components: int = 3,
               method: str = "reconstruction") -> np.ndarray:
    """PCA anomaly scores of ``test`` rows, fitted on ``train`` rows (see the module doc)."""
    from sklearn.decomposition import PCA

    if method not in PCA_SCORES:
        raise UserError(f"PCA score must be one of {PCA_SCORES}, got {method!r}")
    scaler = Scaler.fit(train)
    x_train, x_test = scaler.transform(train), scaler.transform(test)
    pca = PCA(n_components=components).fit(x_train)
    codes = pca.transform(x_test)
    if method == "reconstruction":
        return ((pca.inverse_transform(codes) - x_test) ** 2).mean(axis=1).astype(np.float64)
    return ((codes**2) / pca.explained_variance_).sum(axis=1).astype(np.float64)


def norm_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Squared norm of the test rows standardised with the training rows' mean and std."""
    return (Scaler.fit(train).transform(test).astype(np.float64) ** 2).sum(axis=1)


def isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Isolation-forest anomaly scores (scikit-learn defaults, ``random_state=seed``)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=seed).fit(train)
    return -forest.score_samples(test).astype(np.float64)
