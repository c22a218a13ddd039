"""Non-neural baselines on pooled (centralized) training rows: PCA and isolation forest.

They answer "is the autoencoder worth it?" on the same held-out rows. Each baseline has the
interface of every detector in the course (PyOD's): ``fit(train)`` on unlabelled training rows
(standardised with a scaler fitted on them), then ``decision_function(rows)``, one score per row,
higher = more anomalous. The ``*_scores(train, test)`` functions do both in one call.

- :class:`PCABaseline` ``"reconstruction"``: squared distance to the ``q``-dimensional principal
  subspace (the linear autoencoder); ``"latent"``: Mahalanobis distance of the ``q``-dimensional
  code (Hotelling's T^2), i.e. how far *along* the normal directions a row lies.
- :class:`IsolationForestBaseline`: scikit-learn's :class:`~sklearn.ensemble.IsolationForest`.
- :class:`NormBaseline`: the squared distance to the training mean in standardised units, no model
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


class PCABaseline:
    """PCA anomaly scores with ``components`` principal directions (see the module doc)."""

    def __init__(self, components: int = 3, method: str = "reconstruction") -> None:
        if method not in PCA_SCORES:
            raise UserError(f"PCA score must be one of {PCA_SCORES}, got {method!r}")
        self.components = components
        self.method = method

    def fit(self, train: np.ndarray) -> PCABaseline:
        from sklearn.decomposition import PCA

        self.scaler_ = Scaler.fit(train)
        self.pca_ = PCA(n_components=self.components).fit(self.scaler_.transform(train))
        return self

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous."""
        x = self.scaler_.transform(rows)
        codes = self.pca_.transform(x)
        if self.method == "reconstruction":
            return ((self.pca_.inverse_transform(codes) - x) ** 2).mean(axis=1).astype(np.float64)
        return ((codes**2) / self.pca_.explained_variance_).sum(axis=1).astype(np.float64)


class NormBaseline:
    """Squared norm of rows standardised with the training rows' mean and std: no model at all."""

    def fit(self, train: np.ndarray) -> NormBaseline:
        self.scaler_ = Scaler.fit(train)
        return self

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous."""
        return (self.scaler_.transform(rows).astype(np.float64) ** 2).sum(axis=1)


class IsolationForestBaseline:
    """scikit-learn's isolation forest with its defaults and ``random_state=seed``."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, train: np.ndarray) -> IsolationForestBaseline:
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(random_state=self.seed).fit(train)
        return self

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous (scikit-learn's ``score_samples``, negated)."""
        return -self.forest_.score_samples(rows).astype(np.float64)


def pca_scores(train: np.ndarray, test: np.ndarray, components: int = 3,
               method: str = "reconstruction") -> np.ndarray:
    """:class:`PCABaseline` fitted on ``train``, scores of ``test``."""
    return PCABaseline(components, method).fit(train).decision_function(test)


def norm_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """:class:`NormBaseline` fitted on ``train``, scores of ``test``."""
    return NormBaseline().fit(train).decision_function(test)


def isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """:class:`IsolationForestBaseline` fitted on ``train``, scores of ``test``."""
    return IsolationForestBaseline(seed).fit(train).decision_function(test)
