"""Exercises of notebook 07 (isolation forest and classical baselines).

- Exercise 7.1: the normaliser :math:`c(n)` of an isolation forest's path lengths.
- Exercise 7.2: pooling client forests from their scores alone (the server's formula).
- Exercise 7.3: a Mahalanobis-distance baseline.

Every check runs the learner's function on freshly drawn rows or sizes and compares its behaviour
with :mod:`fedad_tutorial.chapters.forest` and :mod:`fedad_tutorial.chapters.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.ensemble import IsolationForest

from fedad_tutorial.chapters.baselines import pca_scores
from fedad_tutorial.chapters.forest import average_path_length, fit_client_forest, pool_forests
from fedad_tutorial.exercises.checking import exercise, expect, learner_array, learner_number


@exercise("Exercise 7.1: the average path length c(n)")
def check_average_path_length(learner_fn: Callable[[int], float], seed: int = 707) -> None:
    """``learner_fn(n)`` must return :math:`c(n) = 2 H(n-1) - 2 (n-1)/n` with
    :math:`H(i) \\approx \\ln i + \\gamma`, and ``c(2) = 1``, ``c(1) = 0`` (as
    :func:`~fedad_tutorial.forest.average_path_length`), within 1e-9 on fresh sizes."""
    rng = np.random.default_rng(seed)
    for n in [1, 2, 3, *rng.integers(4, 5000, size=6).tolist()]:
        got, want = learner_number(learner_fn(int(n)), f"c({n})"), average_path_length(int(n))
        hint = ("c(1) = 0 and c(2) = 1 are special cases" if n <= 2
                else "use 2 * (ln(n - 1) + Euler's gamma) - 2 * (n - 1) / n (np.euler_gamma)")
        expect(abs(got - want) <= 1e-9, f"n={n}: got {got:.6g}, expected {want:.6g}; {hint}")


def _fresh_forests(rng: np.random.Generator, psi: int) -> tuple[list[IsolationForest], np.ndarray]:
    dim = int(rng.integers(3, 7))
    forests = [fit_client_forest(rng.normal(rng.normal(size=dim), 1.0, size=(int(rng.integers(psi, 3 * psi)), dim)),
                                 int(rng.integers(5, 30)), psi, int(rng.integers(10**6))) for _ in range(3)]
    rows = rng.normal(0.0, 2.0, size=(50, dim)).astype(np.float32)
    return forests, rows


@exercise("Exercise 7.2: pool client forests from their scores")
def check_pooled_scores(learner_fn: Callable[[Sequence[np.ndarray], Sequence[int], int], np.ndarray],
                        seed: int = 77) -> None:
    """``learner_fn(client_scores, tree_counts, psi)`` gets each client's scikit-learn
    ``score_samples`` on the same rows (values in [-1, 0)), each client's number of trees and the
    shared sub-sample size, and must return the pooled forest's ``score_samples``: equal (within
    1e-9) to :func:`~fedad_tutorial.chapters.forest.pool_forests` on freshly fitted client forests."""
    rng = np.random.default_rng(seed)
    for psi in (32, 100):
        forests, rows = _fresh_forests(rng, psi)
        scores = [f.score_samples(rows) for f in forests]
        counts = [len(f.estimators_) for f in forests]
        got = learner_array(learner_fn([s.copy() for s in scores], list(counts), psi), "one pooled score per row")
        want = pool_forests(forests).score_samples(rows)
        expect(got.shape == want.shape, f"expected one score per row {want.shape}, got shape {got.shape}")
        plain_mean = np.mean(scores, axis=0)
        hint = ("averaging the scores is not exact: 2**(-h/c) is not linear in h. Recover each client's mean "
                "path length h_k = -log2(-s_k) * c(psi), average them weighted by tree counts, and map back"
                if np.allclose(got, plain_mean, atol=1e-9) else
                "weight each client's mean path length by its number of trees, then s = -2**(-h / c(psi))")
        expect(np.allclose(got, want, rtol=0, atol=1e-9),
               f"psi={psi}, trees {counts}: largest difference {np.max(np.abs(got - want)):.3g}; {hint}")


@exercise("Exercise 7.3: a Mahalanobis-distance baseline")
def check_mahalanobis(learner_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], seed: int = 7070) -> None:
    """``learner_fn(train, test)`` must return, per test row, its squared Mahalanobis distance
    :math:`(x - \\mu)^\\top \\Sigma^{-1} (x - \\mu)` to the training rows' mean and covariance.
    Checked on fresh correlated rows against the package's PCA with every component kept
    (``pca_scores(train, test, d, "latent")``, which is the same distance): equal up to a constant
    factor within 1e-3 (so ``ddof=0`` or ``1`` both pass)."""
    rng = np.random.default_rng(seed)
    for dim in (3, 8):
        mix = rng.normal(size=(dim, dim))
        train = (rng.normal(size=(400, dim)) @ mix + rng.normal(size=dim) * 5).astype(np.float32)
        test = (rng.normal(0.0, 1.5, size=(60, dim)) @ mix + rng.normal(size=dim)).astype(np.float32)
        got = learner_array(learner_fn(train.copy(), test.copy()), "one distance per test row")
        want = pca_scores(train, test, dim, "latent")
        expect(got.shape == want.shape, f"expected one distance per test row {want.shape}, got {got.shape}")
        ratio = got / want
        euclid = ((test - train.mean(axis=0)) ** 2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant answer has no correlation
            euclidean = bool(np.corrcoef(got, euclid)[0, 1] > 0.999)
        hint = ("this looks like a Euclidean distance: multiply by the inverse covariance" if euclidean else
                "centre with the training mean and use the inverse of the training covariance (np.cov(train.T))")
        proportional = (bool(np.all(np.isfinite(ratio))) and ratio.mean() > 0
                        and np.ptp(ratio) <= 1e-3 * np.abs(ratio).mean())
        expect(proportional, f"dim={dim}: your distances are not proportional to the reference; {hint}")
