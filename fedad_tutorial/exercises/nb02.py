"""Checks for the exercises of notebook 02 (a centralized autoencoder).

Every check calls the learner's function on fresh data drawn here (never on the notebook's rows)
and compares what it returns with the package's own implementation:

- Exercise 2.1, :func:`check_reconstruction_score`: per-row reconstruction error, against
  :meth:`fedad_tutorial.models.Autoencoder.score`;
- Exercise 2.2, :func:`check_percentile_threshold`: a percentile threshold, against
  :func:`fedad_tutorial.thresholds.percentile_threshold`;
- Exercise 2.3, :func:`check_precision_recall_f1`: precision, recall and F1 from labels and flags,
  against :func:`fedad_tutorial.metrics.detection_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedad_tutorial.exercises.checking import as_float_tensor, exercise, expect, learner_number
from fedad_tutorial.metrics import detection_metrics
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.thresholds import percentile_threshold


@exercise("Exercise 2.1: the reconstruction-error score")
def check_reconstruction_score(score_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                               seed: int = 2024) -> None:
    """Check ``score_fn(model, x)``: one reconstruction error (mean squared error) per row.

    Builds a small untrained autoencoder and random rows from ``seed``, and compares the answer
    with ``model.score(x)``.
    """
    torch.manual_seed(seed)
    model = ModelSpec(kind="ae", input_dim=7, hidden=(16, 8), latent_dim=3).build().eval()
    x = 2.0 * torch.randn(50, 7)
    with torch.no_grad():
        expected = model.score(x).to(torch.float64)
        answer = as_float_tensor(score_fn(model, x))
        squared = (model(x) - x).to(torch.float64) ** 2
    expect(answer.shape == expected.shape,
           f"expected one score per row, shape {tuple(expected.shape)}, got {tuple(answer.shape)}: "
           "average the squared errors over the features (dim=1), not over the rows")
    if torch.allclose(answer, squared.sum(dim=1), rtol=1e-5):
        expect(False, "you summed the squared errors over the features; the score is their mean")
    if torch.allclose(answer, squared.mean(dim=1).sqrt(), rtol=1e-5):
        expect(False, "you took a square root (RMSE); the score is the mean squared error")
    expect(torch.allclose(answer, expected, rtol=1e-5, atol=1e-8),
           "the scores differ from model.score(x): compute ((model(x) - x) ** 2).mean(dim=1)")


@exercise("Exercise 2.2: a percentile threshold")
def check_percentile_threshold(threshold_fn: Callable[[np.ndarray, float], float], seed: int = 7,
                               percentiles: Sequence[float] = (95.0, 99.0, 90.0, 50.0)) -> None:
    """Check ``threshold_fn(scores, q)``: the ``q``-th percentile (``q`` in percent) of ``scores``.

    Uses skewed, positive scores of a few sizes drawn from ``seed`` and compares with
    :func:`~fedad_tutorial.thresholds.percentile_threshold` (linear interpolation).
    """
    rng = np.random.default_rng(seed)
    for n, q in zip((1000, 137, 20, 9), percentiles, strict=False):
        scores = rng.lognormal(mean=-3.0, sigma=1.0, size=n)
        answer = learner_number(threshold_fn(scores.copy(), q))
        expected = percentile_threshold(scores, q)
        if not np.isclose(answer, expected, rtol=1e-9):
            if np.isclose(answer, np.percentile(scores, q / 100.0), rtol=1e-9):
                expect(False, "q is given in percent (95 means the 95th percentile), not as a fraction")
            flagged = float((scores > answer).mean())
            expect(False, f"for {n} scores and q={q:g} you returned {answer:.6g}, expected {expected:.6g} "
                   f"(your threshold flags {flagged:.1%} of the rows; about {100 - q:g}% expected). "
                   "Interpolate linearly between the two nearest sorted scores, as np.percentile does")


@exercise("Exercise 2.3: precision, recall and F1")
def check_precision_recall_f1(
    metrics_fn: Callable[[np.ndarray, np.ndarray], tuple[float, float, float]], seed: int = 11,
) -> None:
    """Check ``metrics_fn(labels, flagged) -> (precision, recall, f1)`` against ``detection_metrics``.

    ``labels`` are 0 (normal) / 1 (anomaly), ``flagged`` are 0 / 1 alarms. Includes the edge case
    where nothing is flagged (precision and F1 are 0 by convention, not an error).
    """
    rng = np.random.default_rng(seed)
    cases = []
    for n, rate in ((400, 0.05), (60, 0.3), (200, 0.1)):
        labels = (rng.random(n) < rate).astype(np.int64)
        labels[:2] = (1, 0)  # both classes present
        flagged = np.where(rng.random(n) < 0.8, labels, 1 - labels)  # a detector that errs 20% of the time
        cases.append((labels, flagged, "random alarms"))
    cases.append((cases[0][0], np.zeros_like(cases[0][0]), "no row flagged"))
    for labels, flagged, what in cases:
        answer = metrics_fn(labels.copy(), flagged.copy())
        expect(hasattr(answer, "__len__") and len(answer) == 3,
               f"return a tuple (precision, recall, f1), got {type(answer).__name__}")
        precision, recall, f1 = (learner_number(v, name)
                                 for v, name in zip(answer, ("precision", "recall", "f1"), strict=True))
        ref = detection_metrics(labels, flagged.astype(np.float64), threshold=0.5)
        if np.allclose([precision, recall], [ref["recall"], ref["precision"]]) and ref["precision"] != ref["recall"]:
            expect(False, "precision and recall are swapped: precision = TP / (TP + FP), recall = TP / (TP + FN)")
        for name, got in (("precision", precision), ("recall", recall), ("f1", f1)):
            expect(bool(np.isclose(got, ref[name])),
                   f"{name} is {got:.4f}, expected {ref[name]:.4f} ({what}: TP={ref['tp']}, FP={ref['fp']}, "
                   f"FN={ref['fn']}). Precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = their harmonic "
                   "mean; a ratio with a zero denominator is 0")
