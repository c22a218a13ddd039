"""Exercises of notebook 01 (data): a baseline score, an honest split, and a look at the labels.

- Exercise 1.1: the norm score, the baseline that separates the original tutorial's isotropic anomalies perfectly.
- Exercise 1.2: hold out a fraction of a node's rows, reproducibly, without overlap.
- Exercise 1.3: the share of anomalous rows per node (labels are for evaluation only).

Every check runs the learner's function on freshly generated data and compares its behaviour with
NumPy, scikit-learn and :mod:`fedad_tutorial.data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from fedad_tutorial.data import NodeData, isotropic_blobs, make_cloud_federation
from fedad_tutorial.exercises.checking import exercise, expect


@exercise("Exercise 1.1: the norm score")
def check_norm_score(learner_fn: Callable[[np.ndarray], np.ndarray], seed: int = 101) -> None:
    """``learner_fn(features)`` must return one score per row that ranks rows like their Euclidean norm.

    Checked on fresh :func:`~fedad_tutorial.data.isotropic_blobs` nodes: same ranking as
    ``np.linalg.norm(features, axis=1)`` (any increasing function of it is fine, e.g. the squared
    norm), hence the same ROC-AUC against the labels as the norm.
    """
    for node in isotropic_blobs(num_nodes=2, samples_per_node=(300, 400), seed=seed):
        got = np.asarray(learner_fn(node.features.copy()), dtype=np.float64)
        expect(got.shape == (node.num_rows,),
               f"return one score per row: expected shape ({node.num_rows},), got {got.shape}; "
               "reduce over the features (axis=1)")
        expect(bool(np.isfinite(got).all()), "some scores are NaN or infinite")
        want = np.linalg.norm(node.features.astype(np.float64), axis=1)
        expect(np.array_equal(rankdata(got), rankdata(want)),
               "your scores do not rank rows like their Euclidean norm (distance from the origin)")


def _two_index_arrays(answer: object) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` from the learner's answer, or a hint if it is not a pair of arrays."""
    expect(isinstance(answer, (tuple, list)) and len(answer) == 2,
           f"return a pair (train_idx, test_idx), got {type(answer).__name__}"
           + (f" of length {len(answer)}" if isinstance(answer, (tuple, list, np.ndarray)) else ""))
    train, test = (np.asarray(part) for part in answer)
    return train, test


@exercise("Exercise 1.2: a held-out split")
def check_split(learner_fn: Callable[[int, float, int], tuple[np.ndarray, np.ndarray]],
                seed: int = 5) -> None:
    """``learner_fn(n_rows, test_fraction, seed)`` must return ``(train_idx, test_idx)`` row indices.

    Checked for several fresh sizes and fractions: every row on exactly one side, the test side
    holds ``round(test_fraction * n_rows)`` rows (at least one row on each side, as
    :func:`~fedad_tutorial.data.train_test_split` does), the same seed gives the same split, a
    different seed a different one, and the split is random (not simply the last rows).
    """
    rng = np.random.default_rng(seed)
    for _ in range(4):
        n, fraction, s = int(rng.integers(50, 500)), float(rng.uniform(0.1, 0.5)), int(rng.integers(10**6))
        train, test = _two_index_arrays(learner_fn(n, fraction, s))
        expect(train.ndim == 1 and test.ndim == 1, "return two 1-D arrays of row indices: (train_idx, test_idx)")
        expect(np.issubdtype(train.dtype, np.integer) and np.issubdtype(test.dtype, np.integer),
               "indices must be integers (e.g. from rng.permutation(n_rows))")
        overlap = np.intersect1d(train, test)
        expect(overlap.size == 0, f"{overlap.size} row(s) are in both train and test: a leak")
        expect(len(np.unique(train)) == len(train) and len(np.unique(test)) == len(test),
               "an index appears twice on one side")
        expect(np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n)),
               f"train and test together must cover every row 0..{n - 1} exactly once")
        n_test = min(n - 1, max(1, int(round(fraction * n))))
        expect(len(test) == n_test,
               f"with n_rows={n} and test_fraction={fraction:.3f} the test side should hold "
               f"round(test_fraction * n_rows) = {n_test} rows, got {len(test)}")
        expect(not np.array_equal(np.sort(test), np.arange(n - n_test, n)),
               "the test rows are the last rows: shuffle first (rows of a real log are ordered in time, "
               "and so are drifts)")
        again = _two_index_arrays(learner_fn(n, fraction, s))
        expect(np.array_equal(np.sort(again[1]), np.sort(test)),
               "the same seed must give the same split: create the generator from the seed inside your function")
        other = _two_index_arrays(learner_fn(n, fraction, s + 1))[1]
        expect(not np.array_equal(np.sort(other), np.sort(test)),
               "a different seed should give a different split: use the seed argument")


@exercise("Exercise 1.3: anomalies per node")
def check_anomaly_share(learner_fn: Callable[[Sequence[NodeData]], dict[str, float]], seed: int = 77) -> None:
    """``learner_fn(nodes)`` must return ``{node name: share of rows labelled 1}`` for every node.

    Checked on a fresh federation with a non-default anomaly rate.
    """
    nodes = make_cloud_federation(num_nodes=4, samples_per_node=(60, 200), num_features=8,
                                  anomaly_rate=0.1, seed=seed)
    got = learner_fn(nodes)
    expect(isinstance(got, dict), f"return a dict {{node name: share}}, got {type(got).__name__}")
    names = [n.name for n in nodes]
    expect(sorted(got) == sorted(names), f"the keys should be the node names {names}, got {sorted(got)}")
    for node in nodes:
        want = float(node.labels.mean())
        value = float(got[node.name])
        expect(not abs(value - 100 * want) < 1e-9 or want == 0,
               f"{node.name}: return a share between 0 and 1, not a percentage")
        expect(abs(value - want) < 1e-9,
               f"{node.name}: expected {want:.4f} (anomalous rows / all rows), got {value:.4f}")
