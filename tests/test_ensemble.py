"""Robust z-score combination of two anomaly scores (fedad_tutorial.ensemble)."""

import numpy as np
import pytest
from ensemble import RobustCalibration, squared_norm, z_sum

from fedad_tutorial.chapters.baselines import NormBaseline
from fedad_tutorial.errors import UserError
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.thresholds import ScoreHistogram, federated_histogram


def test_squared_norm_is_the_norm_baselines_score():
    rows = np.random.default_rng(0).normal(loc=3.0, scale=2.0, size=(300, 5)).astype(np.float32)
    scaler = Scaler.fit(rows)
    assert np.allclose(squared_norm(scaler, rows[:20]), NormBaseline().fit(rows).decision_function(rows[:20]))


def test_calibration_from_histogram_matches_exact_quantiles():
    scores = np.random.default_rng(1).gamma(2.0, 1.5, size=5000)
    calibration = RobustCalibration.of(ScoreHistogram.of(scores))
    q1, median, q3 = np.percentile(scores, [25, 50, 75])
    assert calibration.median == pytest.approx(median, rel=0.01)
    assert calibration.iqr == pytest.approx(q3 - q1, rel=0.02)
    assert calibration.z(np.array([median]))[0] == pytest.approx(0.0, abs=0.02)


def test_federation_histogram_of_norm_scores_is_the_sum_of_client_counts():
    rng = np.random.default_rng(2)
    clients = [rng.normal(size=(n, 3)).astype(np.float32) for n in (50, 120, 80)]
    scaler = Scaler.fit(np.concatenate(clients))
    hist = federated_histogram([squared_norm(scaler, rows) for rows in clients])  # as real_panel calibrates it
    assert hist.total == 250
    assert hist.quantile(50) == pytest.approx(np.median(squared_norm(scaler, np.concatenate(clients))), rel=0.01)


def test_z_sum_puts_scores_on_one_scale():
    small, large = RobustCalibration(1.0, 0.5), RobustCalibration(1000.0, 200.0)
    combined = z_sum([np.array([1.0, 2.0]), np.array([1000.0, 1400.0])], [small, large])
    assert combined.tolist() == pytest.approx([0.0, 4.0])  # each score counts in its own IQRs
    with pytest.raises(UserError):
        z_sum([np.zeros(2)], [small, large])


def test_constant_scores_do_not_divide_by_zero():
    calibration = RobustCalibration.of(ScoreHistogram.of(np.full(100, 2.0)))
    assert np.all(np.isfinite(calibration.z(np.array([2.0, 3.0]))))
