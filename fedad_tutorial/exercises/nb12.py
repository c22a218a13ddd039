"""Exercises of notebook 12 (explaining alarms): which metrics made a row anomalous.

- Exercise 12.1: per-feature reconstruction errors of a detector.
- Exercise 12.2: the top metrics of each alarm, relative to their typical error.
- Exercise 12.3: the hit rate of an explanation that knows nothing (the chance level).

Every check runs the learner's function on a freshly built detector or fresh numbers and compares
its behaviour with :mod:`fedad_tutorial.explain`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedad_tutorial.detector import Detector
from fedad_tutorial.exercises.checking import exercise, expect, learner_array, learner_number
from fedad_tutorial.explain import chance_hit_rate, feature_errors, top_features
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import Scaler


def _fresh_detector(rng: np.random.Generator) -> tuple[Detector, np.ndarray]:
    dim = int(rng.integers(4, 9))
    rows = (rng.lognormal(size=(80, dim)) * rng.uniform(1, 100, size=dim)).astype(np.float32)
    torch.manual_seed(int(rng.integers(10**6)))
    model = ModelSpec("ae", dim, (8,), 2).build()
    return Detector(model, Scaler.fit(rows), 1.0, [f"m{j}" for j in range(dim)]), rows


@exercise("Exercise 12.1: per-feature reconstruction errors")
def check_feature_errors(learner_fn: Callable[[Detector, np.ndarray], np.ndarray], seed: int = 1212) -> None:
    """``learner_fn(detector, rows)`` gets a :class:`~fedad_tutorial.detector.Detector` and *raw*
    rows and must return the squared reconstruction error per row and metric in scaled units,
    shape ``(rows, features)``: equal (within 1e-5) to :func:`~fedad_tutorial.explain.feature_errors`
    on fresh detectors; its row means are the detector's scores."""
    rng = np.random.default_rng(seed)
    for _ in range(2):
        detector, rows = _fresh_detector(rng)
        got = learner_array(learner_fn(detector, rows.copy()), "the per-feature errors")
        want = feature_errors(detector, rows)
        expect(got.shape == want.shape, f"expected shape {want.shape} (rows, features), got {got.shape}")
        with torch.no_grad():
            unscaled = ((detector.model(torch.from_numpy(rows)) - torch.from_numpy(rows)) ** 2).numpy()
        hint = ("scale the rows with detector.scaler.transform before the model sees them"
                if np.allclose(got, unscaled, rtol=1e-4) else
                "square the difference between the model's reconstruction and the scaled rows, per feature")
        expect(np.allclose(got, want, rtol=1e-5, atol=1e-6), hint)


@exercise("Exercise 12.2: the top metrics of each alarm")
def check_top_features(learner_fn: Callable[[np.ndarray, int, np.ndarray], np.ndarray], seed: int = 1221) -> None:
    """``learner_fn(errors, k, baseline)`` must return, per row, the indices of the ``k`` metrics
    with the largest ``errors / baseline``, largest first, shape ``(rows, k)`` (as
    :func:`~fedad_tutorial.explain.top_features`), on fresh error tables."""
    rng = np.random.default_rng(seed)
    for k in (1, 3, 5):
        errors = rng.lognormal(size=(20, 12))
        baseline = rng.uniform(0.05, 5.0, size=12)
        got = learner_array(learner_fn(errors.copy(), k, baseline.copy()), "the metric indices", np.int64)
        want = top_features(errors, k, baseline)
        expect(got.shape == want.shape, f"k={k}: expected shape {want.shape}, got {got.shape}")
        if np.array_equal(got, top_features(errors, k)):
            expect(False, "divide the errors by the baseline before ranking")
        if np.array_equal(np.sort(got, axis=1), np.sort(want, axis=1)):
            expect(np.array_equal(got, want), f"k={k}: right metrics, wrong order: largest first")
        expect(np.array_equal(got, want), f"k={k}: not the k largest of errors / baseline per row "
                                          "(hint: np.argsort(-ratio, axis=1)[:, :k])")


@exercise("Exercise 12.3: the chance level of an explanation")
def check_chance_hit_rate(learner_fn: Callable[[int, int, int], float], seed: int = 2112) -> None:
    """``learner_fn(num_features, truth_size, k)`` must return the probability that ``k`` metrics
    drawn at random (without replacement) include at least one of ``truth_size`` perturbed ones,
    within 1e-9 of :func:`~fedad_tutorial.explain.chance_hit_rate`."""
    rng = np.random.default_rng(seed)
    cases = [(30, 0, 3), (10, 10, 1)] + [(int(d), int(rng.integers(1, d)), int(rng.integers(1, 6)))
                                         for d in rng.integers(6, 40, size=6)]
    for d, t, k in cases:
        got, want = learner_number(learner_fn(d, t, k), "a probability"), chance_hit_rate(d, t, k)
        expect(abs(got - want) <= 1e-9,
               f"d={d}, truth {t}, k={k}: got {got:.6f}, expected {want:.6f}; hint: 1 minus the chance that "
               "all k picks miss, C(d - t, k) / C(d, k) (math.comb)")
