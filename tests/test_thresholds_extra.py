"""The notebook-05 helpers appended to :mod:`fedad_tutorial.thresholds`."""

import numpy as np
import pytest

from fedad_tutorial.errors import UserError
from fedad_tutorial.metrics import detection_metrics
from fedad_tutorial.thresholds import (
    ScoreHistogram,
    bin_edges,
    expected_cost,
    percentile_threshold,
    threshold_sweep,
)


def _labelled_scores(seed=0, n=1000):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.05).astype(int)
    scores = rng.lognormal(mean=-2 + 2.5 * labels, sigma=0.6)
    return labels, scores


def test_bin_edges_are_a_copy_of_the_histogram_bins():
    edges = bin_edges()
    assert edges[0] == 0.0 and np.all(np.diff(edges) > 0)
    assert len(edges) == len(ScoreHistogram.of(np.array([1.0])).counts) + 1
    edges[1] = 123.0
    assert bin_edges()[1] == pytest.approx(1e-6)


def test_threshold_sweep_matches_detection_metrics_row_by_row():
    labels, scores = _labelled_scores()
    reference = _labelled_scores(seed=1)[1]
    sweep = threshold_sweep(labels, scores, [80, 95, 99], reference_scores=reference)
    assert sweep["percentile"].tolist() == [80.0, 95.0, 99.0]
    for _, row in sweep.iterrows():
        thr = percentile_threshold(reference, row["percentile"])
        assert row["threshold"] == pytest.approx(thr)
        want = detection_metrics(labels, scores, thr)
        for key in ("precision", "recall", "f1", "fpr", "tp", "fp", "tn", "fn"):
            assert row[key] == pytest.approx(want[key])
        assert row["alarm_rate"] == pytest.approx((scores > thr).mean())
    assert sweep["threshold"].is_monotonic_increasing
    assert sweep["alarm_rate"].is_monotonic_decreasing


def test_threshold_sweep_defaults_to_the_scores_themselves():
    labels, scores = _labelled_scores()
    sweep = threshold_sweep(labels, scores, [90])
    assert sweep["alarm_rate"].iloc[0] == pytest.approx(0.10, abs=1e-3)


def test_expected_cost_counts_false_alarms_and_misses():
    labels, scores = _labelled_scores()
    thr = percentile_threshold(scores, 95)
    m = detection_metrics(labels, scores, thr)
    want = (2.0 * m["fp"] + 30.0 * m["fn"]) / labels.size
    assert expected_cost(labels, scores, thr, 2.0, 30.0) == pytest.approx(want)
    assert expected_cost(labels, scores, np.inf) == pytest.approx(20.0 * labels.mean())
    assert expected_cost(labels, scores, -np.inf) == pytest.approx(1.0 * (1 - labels.mean()))
    with pytest.raises(UserError):
        expected_cost(np.array([]), np.array([]), 0.5)
