"""Exercises of notebook 05 (thresholds): where to put the line between normal and alarm.

- Exercise 5.1: a quantile from a histogram (what a server can compute without seeing scores).
- Exercise 5.2: the threshold for a target false-positive rate.
- Exercise 5.3: the expected cost of a threshold.

Every check runs the learner's function on freshly drawn scores and compares its behaviour with
:mod:`fedad_tutorial.thresholds`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedad_tutorial.exercises.checking import Mismatch, exercise, expect, learner_number
from fedad_tutorial.thresholds import ScoreHistogram, bin_edges, expected_cost, percentile_threshold


def _fresh_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Reconstruction-error-like scores: positive, skewed, with a scale that changes per draw."""
    return rng.lognormal(mean=rng.uniform(-4, 1), sigma=rng.uniform(0.3, 1.2), size=n)


@exercise("Exercise 5.1: a quantile from a histogram")
def check_histogram_quantile(learner_fn: Callable[[np.ndarray, np.ndarray, float], float],
                             seed: int = 505) -> None:
    """``learner_fn(counts, edges, q)`` must return the ``q``-th percentile of the binned scores.

    ``counts[b]`` scores fall in ``[edges[b], edges[b + 1])``. Checked on fresh scores, binned on
    the federation's shared edges (:func:`~fedad_tutorial.thresholds.bin_edges`), for several
    ``q``: within 1e-6 (relative) of :meth:`ScoreHistogram.quantile`, which walks the cumulative
    counts to the bin holding the ``q / 100 * total``-th score and interpolates linearly inside it.
    """
    rng = np.random.default_rng(seed)
    edges = bin_edges()
    for _ in range(3):
        scores = np.concatenate([_fresh_scores(rng, int(rng.integers(100, 900))) for _ in range(3)])
        hist = ScoreHistogram.of(scores)
        for q in (50.0, 90.0, 95.0, 99.0):
            try:
                got = learner_number(learner_fn(hist.counts.copy(), edges.copy(), q))
            except IndexError as exc:  # the usual cause is a target past the last score, not a bug in indexing
                raise Mismatch(f"q={q}: your code indexed past the end of counts or edges ({exc}). Is the target "
                               "count q / 100 * total (q is in percent)? A target above the total matches no "
                               "bin") from None
            want = hist.quantile(q)
            exact = float(np.percentile(scores, q))
            if not np.isclose(got, want, rtol=1e-6, atol=0.0):
                close_bin = abs(got - want) <= 0.01 * want
                hint = ("right bin, but interpolate linearly inside it: edge + (target - count below) / "
                        "count in bin * bin width" if close_bin
                        else "find the first bin where the cumulative count reaches q / 100 * total")
                expect(False, f"q={q}: got {got:.6g}, expected {want:.6g} (exact pooled percentile "
                              f"{exact:.6g}); {hint}")


@exercise("Exercise 5.2: a threshold for a target false-positive rate")
def check_fpr_threshold(learner_fn: Callable[[np.ndarray, float], float], seed: int = 55) -> None:
    """``learner_fn(normal_scores, fpr)`` must return a threshold that flags a share ``fpr`` of them.

    Checked on fresh normal scores for several rates: the share of those scores strictly above
    the threshold is within ``0.002`` of ``fpr`` (compare :func:`~fedad_tutorial.thresholds.fpr_threshold`).
    """
    rng = np.random.default_rng(seed)
    for n in (1000, 3000):
        scores = _fresh_scores(rng, n)
        for fpr in (0.01, 0.05, 0.2):
            thr = learner_number(learner_fn(scores.copy(), fpr))
            achieved = float((scores > thr).mean())
            flipped = float((scores > percentile_threshold(scores, 100 * fpr)).mean())
            hint = ("you flag the bottom of the scores: use the (1 - fpr) quantile, i.e. percentile 100 * (1 - fpr)"
                    if abs(achieved - flipped) < 1e-9 and fpr != 0.5
                    else "the threshold is the (1 - fpr) quantile of the normal scores")
            expect(abs(achieved - fpr) <= 0.002,
                   f"n={n}, target FPR {fpr}: your threshold {thr:.4g} flags {achieved:.3%} of the normal "
                   f"scores; {hint}")


@exercise("Exercise 5.3: the expected cost of a threshold")
def check_expected_cost(learner_fn: Callable[[np.ndarray, np.ndarray, float, float, float], float],
                        seed: int = 5050) -> None:
    """``learner_fn(labels, scores, threshold, cost_false_alarm, cost_missed)`` -> mean cost per row.

    A row is flagged when its score is strictly above the threshold. Checked on fresh labelled
    scores, thresholds (each one a row's own score, so ``>=`` gives a different cost) and costs
    against :func:`~fedad_tutorial.thresholds.expected_cost`: within 1e-9 (relative).
    """
    rng = np.random.default_rng(seed)
    for _ in range(5):
        n = int(rng.integers(200, 2000))
        labels = (rng.random(n) < rng.uniform(0.02, 0.15)).astype(np.int64)
        scores = _fresh_scores(rng, n) * np.where(labels == 1, rng.uniform(2, 8), 1.0)
        thr = float(np.sort(scores)[int(rng.uniform(0.7, 0.99) * n)])  # a row's own score: ">" and ">=" differ
        c_fp, c_fn = float(rng.uniform(0.5, 3)), float(rng.uniform(5, 50))
        got = learner_number(learner_fn(labels.copy(), scores.copy(), thr, c_fp, c_fn))
        want = expected_cost(labels, scores, thr, c_fp, c_fn)
        total = want * n
        if np.isclose(got, total, rtol=1e-9):
            expect(False, "you returned the total cost: divide by the number of rows (mean cost per row)")
        at_or_above = scores >= thr
        inclusive = (c_fp * np.sum(at_or_above & (labels == 0)) + c_fn * np.sum(~at_or_above & (labels == 1))) / n
        expect(not np.isclose(got, inclusive, rtol=1e-9),
               "a row whose score equals the threshold is not flagged: flag scores strictly above it (>, not >=)")
        swapped = expected_cost(labels, scores, thr, c_fn, c_fp)
        expect(not np.isclose(got, swapped, rtol=1e-9) or np.isclose(want, swapped),
               "costs swapped: a false alarm is a normal row (label 0) flagged, a miss is an anomaly not flagged")
        expect(np.isclose(got, want, rtol=1e-9),
               f"got {got:.6g}, expected {want:.6g}: cost = (cost_false_alarm * false alarms + "
               "cost_missed * missed anomalies) / rows")
