"""Exercises of notebook 15 (network intrusion detection on connection records).

- Exercise 15.1: the alarm budget, alarms per 10,000 connections at a given recall.
- Exercise 15.2: a threshold from an alarm budget, without labels.

Every check runs the learner's function on freshly drawn scores (a NumPy ``Generator``, so the
notebook's random state is untouched) and compares it with :func:`fedad_tutorial.chapters.intrusion.alarms_per_10k`
and :func:`fedad_tutorial.chapters.intrusion.budget_threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fedad_tutorial.chapters.intrusion import alarms_per_10k, budget_threshold
from fedad_tutorial.exercises.checking import as_float_tensor, exercise, expect


def _one_number(value: object) -> float:
    """The learner's answer as one float; anything else is a :class:`~fedad_tutorial.exercises.checking.Mismatch`."""
    numbers = as_float_tensor(value)
    expect(numbers.numel() == 1, f"return one number, got {numbers.numel()} numbers (shape {tuple(numbers.shape)})")
    return float(numbers.reshape(()))


def _scored_connections(rng: np.random.Generator, rows: int, attacks: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores like a detector's: attacks score higher on average, many rows share a score."""
    labels = np.zeros(rows, dtype=np.int64)
    labels[rng.choice(rows, size=attacks, replace=False)] = 1
    scores = rng.gamma(2.0, 1.0, size=rows) + 3.0 * labels * rng.random(rows)
    return labels, np.round(scores, 1)  # rounding makes ties, as identical connections do


@exercise("Exercise 15.1: alarms per 10,000 connections at a given recall")
def check_alarms_per_10k(learner_fn: Callable[[np.ndarray, np.ndarray, float], float], seed: int = 1515) -> None:
    """``learner_fn(labels, scores, recall)`` must return how many of every 10,000 rows score at least
    as high as the ``ceil(recall * attacks)``-th highest-scoring attack. Checked on fresh scores with
    ties against :func:`~fedad_tutorial.chapters.intrusion.alarms_per_10k` (within 1e-6)."""
    rng = np.random.default_rng(seed)
    for rows, attacks, recall in ((5_000, 20, 0.9), (20_000, 7, 0.5), (3_000, 40, 1.0), (8_000, 13, 0.75)):
        labels, scores = _scored_connections(rng, rows, attacks)
        want = alarms_per_10k(labels, scores, recall)
        got = _one_number(learner_fn(labels.copy(), scores.copy(), recall))
        if math.isclose(got, want, rel_tol=1e-6):
            continue
        k = math.ceil(recall * attacks)
        threshold = np.sort(scores[labels == 1])[::-1][k - 1]
        if math.isclose(got, 1e4 * float((scores > threshold).mean()), rel_tol=1e-6):
            hint = "count the rows that score AT LEAST the threshold (>=): rows tied with it are alarms too"
        elif math.isclose(got * 1e4, want, rel_tol=1e-6) or math.isclose(got * 100, want, rel_tol=1e-6):
            hint = "give the number per 10,000 connections, not a fraction or a percentage"
        else:
            hint = (f"the threshold is the score of the ceil(recall * attacks) = {k}-th highest attack score "
                    "(sort the attacks' scores in decreasing order)")
        expect(False, f"{rows} rows, {attacks} attacks, recall {recall}: got {got:.4g}, expected {want:.4g}; {hint}")


@exercise("Exercise 15.2: a threshold from an alarm budget, without labels")
def check_budget_threshold(learner_fn: Callable[[np.ndarray, float], float], seed: int = 1516) -> None:
    """``learner_fn(train_scores, alarms)`` must return the threshold above which ``alarms`` of every
    10,000 training scores lie: their ``100 - alarms / 100`` percentile
    (:func:`~fedad_tutorial.chapters.intrusion.budget_threshold`). Quantile rules differ by less than one
    row (interpolated percentile, the k-th largest score, ...), and any is right: a threshold passes when
    the number of fresh unlabelled scores above it, or at least it, is within one row of
    ``alarms / 10,000`` of the rows."""
    rng = np.random.default_rng(seed)
    for rows, alarms in ((50_000, 20.0), (12_345, 5.0), (4_000, 250.0)):
        scores = rng.lognormal(0.0, 1.0, size=rows)
        want = budget_threshold(scores, alarms)
        got = _one_number(learner_fn(scores.copy(), alarms))
        budget_rows = alarms * rows / 1e4
        if math.isclose(got, want, rel_tol=1e-9) or min(abs(float((scores > got).sum()) - budget_rows),
                                                        abs(float((scores >= got).sum()) - budget_rows)) <= 1:
            continue
        share = float((scores > got).mean()) * 1e4
        if math.isclose(got, float(np.percentile(scores, 100.0 - alarms)), rel_tol=1e-9) and alarms < 100:
            hint = (f"your threshold flags {share:.0f} of every 10,000 rows: {alarms:g} alarms per 10,000 is "
                    f"{alarms / 100:g} %, so take the {100 - alarms / 100:g}th percentile")
        else:
            hint = (f"your threshold flags {share:.1f} of every 10,000 training rows, expected {alarms:g}: "
                    "np.percentile(train_scores, 100 - alarms / 100)")
        expect(False, f"{rows} scores, {alarms:g} alarms per 10,000: got {got:.6g}, expected {want:.6g}; {hint}")
