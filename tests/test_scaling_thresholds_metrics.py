import numpy as np
import pytest

from fedad_tutorial.errors import UserError
from fedad_tutorial.metrics import detection_metrics
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler
from fedad_tutorial.thresholds import (
    ScoreHistogram,
    federated_percentile,
    fpr_threshold,
    percentile_threshold,
)

rng = np.random.default_rng(0)


def test_federated_scaler_equals_scaler_on_pooled_rows():
    parts = [rng.normal(loc=k, scale=k + 1, size=(50 + 10 * k, 4)) for k in range(3)]
    fed = federated_scaler([FeatureStats.of(p) for p in parts])
    pooled = np.vstack(parts)
    np.testing.assert_allclose(fed.mean, pooled.mean(0), rtol=1e-5)
    np.testing.assert_allclose(fed.std, pooled.std(0), rtol=1e-5)


def test_scaler_keeps_constant_features_finite():
    x = np.c_[np.ones(10), np.arange(10.0)]
    out = Scaler.fit(x).transform(x)
    assert np.isfinite(out).all() and np.allclose(out[:, 0], 0)


def test_histogram_quantile_matches_exact_percentile():
    parts = [rng.lognormal(mean=k * 0.3 - 2, sigma=1.0, size=300 + 100 * k) for k in range(5)]
    exact = np.percentile(np.concatenate(parts), 95)
    assert federated_percentile(parts, 95) == pytest.approx(exact, rel=2e-3)
    hist = ScoreHistogram.of(parts[0]) + ScoreHistogram.of(parts[1])
    assert hist.total == parts[0].size + parts[1].size


def test_local_percentile_and_fpr_thresholds():
    scores = np.arange(1, 101, dtype=float)
    assert percentile_threshold(scores, 95) == pytest.approx(95.05)
    assert fpr_threshold(scores, 0.10) == pytest.approx(90.1)
    assert (scores > fpr_threshold(scores, 0.10)).mean() == pytest.approx(0.10)
    with pytest.raises(UserError):
        percentile_threshold(scores, 100)


def test_detection_metrics_against_hand_counts():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    s = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.4, 0.95, 0.05])
    m = detection_metrics(y, s, threshold=0.5)  # flags 0.9, 0.8, 0.95
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(0.2)
    assert m["roc_auc"] == pytest.approx(13 / 15)


def test_ranking_metrics_are_nan_with_one_class():
    m = detection_metrics(np.zeros(4), np.arange(4.0), threshold=10)
    assert np.isnan(m["roc_auc"]) and m["f1"] == 0.0


def test_metrics_equal_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    gen = np.random.default_rng(1)
    for _ in range(200):
        n = int(gen.integers(5, 300))
        y = (gen.random(n) < 0.1).astype(int)
        y[0], y[1] = 0, 1
        s = np.round(gen.random(n) + y * gen.random(), int(gen.integers(1, 4)))  # rounding makes ties
        m = detection_metrics(y, s, 0.5)
        tn, fp, fn, tp = confusion_matrix(y, (s > 0.5).astype(int), labels=[0, 1]).ravel()
        assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
        assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert m["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
