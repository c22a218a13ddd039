"""Combining two anomaly scores that live on different scales, calibrated on the federation's training rows.

An autoencoder's reconstruction error and the squared norm of a standardised row (the no-model
baseline, :class:`~fedad_tutorial.chapters.baselines.NormBaseline`) fail on different data: the norm only sees
how *large* a row is, the autoencoder how far it lies from the structure it learned. Their sum can
keep the strengths of both, but only on a common scale. Each score is therefore turned into a
robust z-score, ``(score - median) / IQR``, with the median and interquartile range of the
*training* scores read from a :class:`~fedad_tutorial.thresholds.ScoreHistogram` (counts on the
shared bins: the same summary the federation already sends for its threshold, never a raw score).

A candidate default measured by `real_panel.py --candidates`; the panel did not adopt it, so it lives
beside the benchmark, not in the package. The calibration is the package's
(:class:`~fedad_tutorial.ensemble.RobustCalibration`, which ``--model ensemble`` uses).

>>> rng = np.random.default_rng(0)
>>> train = rng.normal(size=(500, 4)).astype("float32")
>>> scaler = Scaler.fit(train)
>>> from fedad_tutorial.thresholds import federated_histogram
>>> hist = federated_histogram([squared_norm(scaler, rows) for rows in (train[:250], train[250:])])
>>> calibration = RobustCalibration.of(hist)
>>> bool(calibration.iqr > 0), round(calibration.median, 1)
(True, 3.4)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedad_tutorial.ensemble import RobustCalibration
from fedad_tutorial.errors import UserError
from fedad_tutorial.scaling import Scaler


def squared_norm(scaler: Scaler, rows: np.ndarray) -> np.ndarray:
    """The norm score of raw rows: the squared length of the standardised row (``NormBaseline``'s score)."""
    return (scaler.transform(rows).astype(np.float64) ** 2).sum(axis=1)


def z_sum(scores: Sequence[np.ndarray], calibrations: Sequence[RobustCalibration]) -> np.ndarray:
    """The sum of each score's robust z-score: one combined score per row, higher = more anomalous."""
    if not scores or len(scores) != len(calibrations):
        raise UserError(f"need one calibration per score, got {len(scores)} scores and {len(calibrations)}")
    return np.sum([c.z(s) for s, c in zip(scores, calibrations, strict=True)], axis=0)
