"""Exercises of notebook 09 (concept drift): notice that normal has changed, and by how much.

- Exercise 9.1: the Kolmogorov-Smirnov statistic of two samples of scores.
- Exercise 9.2: the population stability index (PSI) of recent scores against reference scores.
- Exercise 9.3: the alarm rate per time window.

Every check runs the learner's function on freshly drawn scores and compares its behaviour with
:mod:`fedad_tutorial.chapters.drift` (and :func:`scipy.stats.ks_2samp`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from fedad_tutorial.chapters.drift import alarm_rate_per_window, psi
from fedad_tutorial.exercises.checking import exercise, expect, learner_array, learner_number


def _fresh_scores(rng: np.random.Generator, n: int, shift: float = 1.0) -> np.ndarray:
    """Reconstruction-error-like scores (positive, skewed), optionally scaled by ``shift``."""
    return shift * rng.lognormal(mean=rng.uniform(-3, 0), sigma=rng.uniform(0.4, 1.0), size=n)


@exercise("Exercise 9.1: the Kolmogorov-Smirnov statistic")
def check_ks_statistic(learner_fn: Callable[[np.ndarray, np.ndarray], float], seed: int = 909) -> None:
    """``learner_fn(a, b)`` must return the largest gap between the empirical CDFs of ``a`` and ``b``.

    Checked on fresh pairs of score samples of different sizes, with and without a shift, against
    ``scipy.stats.ks_2samp(a, b).statistic``: within 1e-9.
    """
    rng = np.random.default_rng(seed)
    for shift in (1.0, 1.1, 1.5, 3.0):
        a = _fresh_scores(rng, int(rng.integers(100, 600)))
        b = _fresh_scores(rng, int(rng.integers(50, 300)), shift) * rng.uniform(0.9, 1.1)
        got = learner_number(learner_fn(a.copy(), b.copy()), "the KS statistic")
        want = float(stats.ks_2samp(a, b).statistic)
        expect(0.0 <= got <= 1.0, f"got {got:.4g}: a gap between two CDFs lies between 0 and 1")
        expect(np.isclose(got, want, rtol=0, atol=1e-9),
               f"sizes {a.size} and {b.size}: got {got:.6f}, expected {want:.6f}. Evaluate both empirical "
               "CDFs (share of each sample <= x, e.g. np.searchsorted(np.sort(a), x, side='right') / len(a)) "
               "at every value x of both samples and take the largest absolute difference")


@exercise("Exercise 9.2: the population stability index")
def check_psi(learner_fn: Callable[[np.ndarray, np.ndarray, int], float], seed: int = 9090) -> None:
    """``learner_fn(reference, recent, bins)`` must return the PSI of ``recent`` against ``reference``.

    Bins: the ``bins`` quantile bins of the reference (inner edges
    ``np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])``, outer bins open-ended); shares
    floored at ``1e-4``; ``PSI = sum((q - p) * ln(q / p))``. Checked on fresh samples against
    :func:`fedad_tutorial.chapters.drift.psi`: within 1 % (or 1e-3 absolute, for ties on an edge).
    """
    rng = np.random.default_rng(seed)
    for shift, bins in ((1.0, 10), (1.3, 10), (2.0, 5), (0.6, 20)):
        reference = _fresh_scores(rng, int(rng.integers(800, 2000)))
        recent = _fresh_scores(rng, int(rng.integers(200, 800)), shift)
        got = learner_number(learner_fn(reference.copy(), recent.copy(), bins), "the PSI")
        want = psi(reference, recent, bins)
        swapped = psi(recent, reference, bins)
        if not np.isclose(want, swapped, rtol=1e-2) and np.isclose(got, swapped, rtol=1e-2):
            expect(False, "the bins come from the REFERENCE scores' quantiles, not the recent ones")
        expect(got >= -1e-12, f"got {got:.4g}: every term (q - p) * ln(q / p) is >= 0, so the PSI is too")
        expect(np.isclose(got, want, rtol=1e-2, atol=1e-3),
               f"shift x{shift}, {bins} bins: got {got:.5f}, expected {want:.5f}. Shares p (reference) and "
               "q (recent) per quantile bin of the reference, floored at 1e-4, then sum((q - p) * ln(q / p))")


@exercise("Exercise 9.3: the alarm rate per time window")
def check_alarm_rate_per_window(learner_fn: Callable[[np.ndarray, float, int], np.ndarray],
                                seed: int = 99) -> None:
    """``learner_fn(scores, threshold, window)`` must return one alarm rate per window of steps.

    Windows are consecutive, ``window`` steps each, the last one possibly shorter; a step alarms
    when its score is strictly above ``threshold`` (here one of the scores, so ``>=`` gives other
    rates). Checked on fresh streams against the ``alarm_rate`` column of
    :func:`fedad_tutorial.chapters.drift.alarm_rate_per_window`: within 1e-12.
    """
    rng = np.random.default_rng(seed)
    for n, window in ((1000, 100), (1050, 100), (333, 50), (90, 7)):
        scores = _fresh_scores(rng, n)
        scores[n // 2:] *= 2.0  # a drift halfway: the rate must change over time
        threshold = float(np.sort(scores[: n // 2])[int(0.95 * (n // 2))])  # a step's own score: ">" and ">=" differ
        got = learner_array(learner_fn(scores.copy(), threshold, window), "one alarm rate per window").ravel()
        want = alarm_rate_per_window(scores, threshold, window)["alarm_rate"].to_numpy()
        expect(got.size == want.size,
               f"{n} steps in windows of {window}: expected {want.size} windows (the last one may be "
               f"shorter), got {got.size}")
        inclusive = np.array([np.mean(scores[i:i + window] >= threshold) for i in range(0, n, window)])
        expect(not np.allclose(got, inclusive, rtol=0, atol=1e-12),
               "a step whose score equals the threshold does not alarm: strictly above it (>, not >=)")
        expect(np.allclose(got, want, rtol=0, atol=1e-12),
               f"{n} steps, window {window}: rates differ (first difference in window "
               f"{int(np.argmax(~np.isclose(got, want)))}). Rate = share of steps in the window whose "
               "score is strictly above the threshold")
