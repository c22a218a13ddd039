"""Concept drift: drifts are applied where and when asked, drift tests separate drift from chance,
alarm rates per window are counted right, and the warm start really continues from given weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from fedad_tutorial.chapters.drift import (
    DRIFT_GROUPS,
    alarm_rate_per_window,
    apply_drift,
    drift_multiplier,
    first_drift_window,
    histogram_drift,
    psi,
    score_drift,
    window_node,
)
from fedad_tutorial.data import make_cloud_federation, train_test_split
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.thresholds import ScoreHistogram


@pytest.fixture(scope="module")
def node():
    return make_cloud_federation(num_nodes=1, samples_per_node=400, anomaly_rate=0.0, seed=3)[0]


def test_deploy_multiplies_only_its_group_from_start_on(node):
    drifted = apply_drift(node, start=150, kind="deploy", magnitude=0.5, group="latency")
    ratio = drifted.features / node.features
    in_group = np.array([n in DRIFT_GROUPS["latency"] for n in node.feature_names])
    assert in_group.sum() == 4
    np.testing.assert_allclose(ratio[:150], 1.0, rtol=1e-6)
    np.testing.assert_allclose(ratio[150:, in_group], 1.5, rtol=1e-6)
    np.testing.assert_allclose(ratio[150:, ~in_group], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(drifted.labels, node.labels)
    assert drifted.regime["drift_start"] == 150.0 and node.features is not drifted.features


def test_growth_ramps_linearly_then_stays(node):
    drifted = apply_drift(node, start=100, kind="growth", magnitude=0.6, ramp=200)
    col = node.feature_names.index("request_rate")
    ratio = drifted.features[:, col] / node.features[:, col]
    assert ratio[99] == pytest.approx(1.0) and ratio[100] == pytest.approx(1.003, abs=1e-4)
    assert ratio[199] == pytest.approx(1.3, abs=1e-4) and ratio[299] == pytest.approx(1.6, abs=1e-5)
    assert ratio[399] == pytest.approx(1.6, abs=1e-5)
    assert np.all(np.diff(ratio) >= -1e-6)
    np.testing.assert_allclose(drift_multiplier(5, 1, 1.0), [1, 2, 2, 2, 2])


def test_bad_drift_arguments_are_user_errors(node):
    with pytest.raises(UserError):
        apply_drift(node, 10, kind="sudden")
    with pytest.raises(UserError):
        apply_drift(node, 10, group="gpu")
    with pytest.raises(UserError):
        window_node(node, 300, 500)


def test_window_node_keeps_order_and_labels(node):
    w = window_node(node, 100, 160)
    np.testing.assert_array_equal(w.features, node.features[100:160])
    np.testing.assert_array_equal(w.labels, node.labels[100:160])
    assert w.name == node.name and w.num_rows == 60


def test_score_drift_flags_a_shift_and_not_chance():
    rng = np.random.default_rng(0)
    reference = rng.lognormal(size=300)
    same = [score_drift(reference, rng.lognormal(size=100)).p_value for _ in range(50)]
    assert np.mean(np.array(same) < 0.01) <= 0.06  # about 1 % false drift calls
    shifted = score_drift(reference, 2.0 * rng.lognormal(size=100))
    assert shifted.p_value < 1e-3 and shifted.psi > 0.25
    recent = rng.lognormal(size=100)
    assert score_drift(reference, recent).statistic == pytest.approx(stats.ks_2samp(reference, recent).statistic)


def test_psi_hand_computed():
    reference = np.arange(10, dtype=float)  # deciles: one value per bin
    recent = np.array([0.0, 0.0, 9.0, 9.0])  # half in the first bin, half in the last
    p, q = np.full(10, 0.1), np.maximum(np.r_[0.5, np.zeros(8), 0.5], 1e-4)
    expected = float(np.sum((q - p) * np.log(q / p)))
    assert psi(reference, recent, bins=10) == pytest.approx(expected)
    assert psi(reference, reference, bins=10) == 0.0


def test_histogram_drift_matches_raw_scores():
    rng = np.random.default_rng(1)
    reference, recent = rng.lognormal(-2, 0.5, size=2000), 1.2 * rng.lognormal(-2, 0.5, size=500)
    raw = score_drift(reference, recent)
    fed = histogram_drift(ScoreHistogram.of(reference), ScoreHistogram.of(recent))
    assert fed.statistic == pytest.approx(raw.statistic, abs=0.01)
    assert fed.psi == pytest.approx(raw.psi, rel=0.05)
    assert fed.p_value < 1e-6 and raw.p_value < 1e-6
    quiet = histogram_drift(ScoreHistogram.of(reference), ScoreHistogram.of(rng.lognormal(-2, 0.5, 500)))
    assert quiet.p_value > 0.01


def test_alarm_rate_per_window_counts_false_alarms_and_recall():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.1, 0.95])
    labels = np.array([0, 1, 0, 0, 1, 0, 0])
    tab = alarm_rate_per_window(scores, 0.5, 3, labels)
    assert tab["alarm_rate"].round(4).tolist() == [0.3333, 0.6667, 1.0]
    assert tab["false_alarm_rate"].round(4).tolist() == [0.0, 0.5, 1.0]
    assert tab["recall"].iloc[0] == 1.0 and np.isnan(tab["recall"].iloc[2])
    per_step = alarm_rate_per_window(scores, np.where(np.arange(7) < 3, 0.5, 0.85), 3)
    assert per_step["alarm_rate"].round(4).tolist() == [0.3333, 0.0, 1.0]


def test_drift_on_a_trained_detector_is_found_where_it_happens():
    torch.set_num_threads(1)
    nodes = make_cloud_federation(num_nodes=3, samples_per_node=900, anomaly_rate=0.02, seed=5)
    streams = [nodes[0], apply_drift(nodes[1], 600, "deploy", 1.0, group="memory"), nodes[2]]
    splits = [train_test_split(window_node(s, 0, 400), 0.3, seed=k) for k, s in enumerate(streams)]
    config = FederatedConfig(rounds=6, local_epochs=2, lr=5e-3, threshold="local", seed=5, trim=0.0, engine="loop")
    result = run_federated(splits, config, progress=False)
    found = {}
    for s in streams:
        scores = result.client_detectors[s.name].decision_function(s.features)
        found[s.name] = first_drift_window(scores[400:600], scores, 100, start=600)["drift"].tolist()
    assert found["node_2"] == [True, True, True]
    assert not any(found["node_1"]) and not any(found["node_3"])


def test_the_adaptation_plot_draws_the_shared_history_once():
    """Before ``adapt_from`` every strategy is the original detector: one grey line, not four on top of each
    other; each strategy's line starts at the last shared window, so it continues the grey one."""
    import pandas as pd

    from fedad_tutorial.plots import plot_adaptation

    starts = np.arange(0, 1000, 100)
    shared = np.linspace(0.0, 0.5, 10)
    timelines = {"node_1": {name: pd.DataFrame({"start": starts, "false_alarm_rate": np.where(
        starts < 600, shared, shared + k)}) for k, name in enumerate(("none", "recalibrate", "warm"))}}
    ax = plot_adaptation(timelines, 100, 300, (400, 600), adapt_from=600).axes[0]
    grey, *strategies = ax.get_lines()[:4]
    assert grey.get_label().startswith("before adaptation") and list(grey.get_xdata()) == list(starts[:6] + 50)
    assert [line.get_label() for line in strategies] == ["none", "recalibrate", "warm"]
    assert all(list(line.get_xdata()) == list(starts[5:] + 50) for line in strategies)
    assert len(plot_adaptation(timelines, 100, 300, (400, 600)).axes[0].get_lines()) == 4  # 3 + the drift line
