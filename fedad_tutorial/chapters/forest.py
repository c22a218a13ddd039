"""A federated isolation forest: each client grows trees on its own rows, the server pools them.

An isolation forest scores a row by how quickly random axis-aligned cuts isolate it: the average
path length :math:`E[h(x)]` over the trees, normalised by :math:`c(\\psi)`, the average path length
of an unsuccessful search in a binary tree built on :math:`\\psi` rows (the sub-sample size):

.. math:: s(x) = -2^{-E[h(x)] / c(\\psi)}

(scikit-learn's ``score_samples``: higher = more normal). :func:`average_path_length` (:math:`c`) and
:func:`fit_client_forest` (a client's step) are the command line's (:mod:`fedad_tutorial.forest`, which
keeps the trees as arrays for ``fedad simulate --model iforest``). Trees never need each other, so a forest
federates without any training rounds: every client fits an :class:`~sklearn.ensemble.
IsolationForest` on its own rows (standardised with the *global* scaler built from client summary
statistics, :func:`~fedad_tutorial.scaling.federated_scaler`), sends its trees, and the server
concatenates them. The trees encode split thresholds, i.e. a few coarse values of the client's
rows, which is more than FedAvg's averaged weights reveal; the notebook discusses it.

Pooling is exact when every client uses the same sub-sample size :math:`\\psi` (then every tree is
normalised by the same :math:`c(\\psi)`): with :math:`T_k` trees from client :math:`k`, the pooled
forest's mean path length is the tree-count-weighted mean of the clients' mean path lengths, and

.. math:: s_{pool}(x) = -2^{-\\sum_k T_k E_k[h(x)] / (\\sum_k T_k\\, c(\\psi))}.

:func:`pool_forests` builds that pooled forest as one scikit-learn object, and
:func:`pooled_score_formula` computes the same scores from the clients' public ``score_samples``
(inverting :math:`s_k = -2^{-E_k[h]/c(\\psi)}`); tests check they agree to float precision.

>>> from fedad_tutorial.data import make_cloud_federation, train_test_split
>>> splits = [train_test_split(n, 0.3, seed=k) for k, n in enumerate(make_cloud_federation(3, 300, 8, seed=0))]
>>> forest = FederatedIsolationForest(trees_per_client=20, seed=0).fit([s.train for s in splits])
>>> forest.forest_.n_estimators, forest.max_samples_
(60, 128)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import IsolationForest

from fedad_tutorial.errors import UserError
from fedad_tutorial.forest import average_path_length, fit_client_forest, shared_max_samples
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler


def pool_forests(forests: Sequence[IsolationForest]) -> IsolationForest:
    """The server's step: one :class:`IsolationForest` holding every client's trees.

    All forests must share the sub-sample size ``max_samples_`` and the number of features (else
    their path lengths are normalised differently and pooling is not exact). The pooled forest
    keeps ``contamination="auto"`` (``offset_ = -0.5``, as each client's) and scores with
    scikit-learn's own ``score_samples``/``predict``.
    """
    if not forests:
        raise UserError("no client forests to pool")
    psis = {f.max_samples_ for f in forests}
    dims = {f.n_features_in_ for f in forests}
    if len(psis) != 1 or len(dims) != 1:
        raise UserError(f"client forests must share max_samples_ and features, got {sorted(psis)} / {sorted(dims)}")
    pooled = copy.deepcopy(forests[0])
    pooled.estimators_ = [t for f in forests for t in f.estimators_]
    pooled.estimators_features_ = [feat for f in forests for feat in f.estimators_features_]
    # per-tree caches that score_samples reads (scikit-learn >= 1.5 private attributes)
    pooled._decision_path_lengths = tuple(d for f in forests for d in f._decision_path_lengths)
    pooled._average_path_length_per_tree = tuple(a for f in forests for a in f._average_path_length_per_tree)
    pooled.n_estimators = len(pooled.estimators_)
    pooled.offset_ = -0.5
    return pooled


def mean_path_length(forest: IsolationForest, rows: np.ndarray) -> np.ndarray:
    """:math:`E[h(x)]` per row, recovered from the public ``score_samples`` (inverts the formula)."""
    c = average_path_length(int(forest.max_samples_))
    return -np.log2(-forest.score_samples(np.asarray(rows, dtype=np.float32))) * c


def pooled_score_formula(forests: Sequence[IsolationForest], rows: np.ndarray) -> np.ndarray:
    """The pooled forest's ``score_samples`` from the clients' scores alone (the documented formula).

    Tree-count-weighted mean of the clients' mean path lengths, normalised by the shared
    :math:`c(\\psi)`. Equals ``pool_forests(forests).score_samples(rows)``.
    """
    counts = np.array([len(f.estimators_) for f in forests], dtype=np.float64)
    depths = np.stack([mean_path_length(f, rows) for f in forests])
    mean_depth = (counts[:, None] * depths).sum(axis=0) / counts.sum()
    return -(2.0 ** (-mean_depth / average_path_length(int(forests[0].max_samples_))))


class FederatedIsolationForest:
    """Fit an isolation forest per client on globally scaled rows, pool the trees, score rows.

    Args:
        trees_per_client: trees each client grows (equal shares: each client's view of normal
            counts the same; pass ``proportional=True`` to give clients trees in proportion to rows).
        max_samples: sub-sample size per tree; lowered to the smallest client's row count if needed
            (the same for every client, which keeps pooling exact).
        proportional: trees per client proportional to its row count (total ``trees_per_client * K``).
        seed: client ``k`` uses ``random_state = seed + k``.

    After :meth:`fit`: ``scaler_`` (global), ``client_forests_``, ``forest_`` (pooled),
    ``max_samples_``. :meth:`decision_function` returns an anomaly score, *higher = more anomalous*,
    like every detector in this course (PyOD's convention; scikit-learn's ``score_samples`` and
    ``decision_function`` on the pooled ``forest_`` are higher = more normal).
    """

    def __init__(self, trees_per_client: int = 100, max_samples: int = 128, proportional: bool = False,
                 seed: int = 0) -> None:
        if trees_per_client < 1 or max_samples < 2:
            raise UserError("trees_per_client must be >= 1 and max_samples >= 2")
        self.trees_per_client = trees_per_client
        self.max_samples = max_samples
        self.proportional = proportional
        self.seed = seed

    def _tree_counts(self, sizes: list[int]) -> list[int]:
        if not self.proportional:
            return [self.trees_per_client] * len(sizes)
        total = self.trees_per_client * len(sizes)
        return [max(1, int(round(total * n / sum(sizes)))) for n in sizes]

    def fit(self, client_rows: Sequence[np.ndarray]) -> FederatedIsolationForest:
        """``client_rows``: each client's raw training rows (no labels)."""
        if not client_rows:
            raise UserError("no clients: the federation needs at least one")
        self.scaler_: Scaler = federated_scaler([FeatureStats.of(r) for r in client_rows])
        sizes = [int(np.asarray(r).shape[0]) for r in client_rows]
        self.max_samples_ = shared_max_samples(self.max_samples, sizes)
        self.client_forests_ = [
            fit_client_forest(self.scaler_.transform(rows), n, self.max_samples_, self.seed + k)
            for k, (rows, n) in enumerate(zip(client_rows, self._tree_counts(sizes), strict=True))
        ]
        self.forest_ = pool_forests(self.client_forests_)
        return self

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        """Anomaly score of raw rows, higher = more anomalous (``-forest_.score_samples``), in (0, 1]."""
        return -self.forest_.score_samples(self.scaler_.transform(rows)).astype(np.float64)

    def client_scores(self, k: int, rows: np.ndarray) -> np.ndarray:
        """Anomaly score of raw rows by client ``k``'s own forest alone (the local-only baseline)."""
        return -self.client_forests_[k].score_samples(self.scaler_.transform(rows)).astype(np.float64)
