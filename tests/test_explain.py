"""Explaining alarms: the per-feature decomposition is exact, and explanations find perturbed metrics."""

import numpy as np
import pytest
import torch

from fedad_tutorial.data import LEVEL_SHIFT_METRICS, make_cloud_federation, train_test_split
from fedad_tutorial.errors import UserError
from fedad_tutorial.explain import (
    chance_hit_rate,
    feature_errors,
    gradient_x_input,
    hit_rate,
    perturbed_metrics,
    precision_at_k,
    top_features,
    traffic_compute_metrics,
)
from fedad_tutorial.federated import FederatedConfig, run_federated


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    nodes = make_cloud_federation(num_nodes=4, samples_per_node=(300, 500), seed=42)
    splits = [train_test_split(n, 0.3, seed=42 + k) for k, n in enumerate(nodes)]
    config = FederatedConfig(rounds=6, local_epochs=4, threshold="local", seed=42, engine="loop", trim=0.0)
    result = run_federated(splits, config,
                           feature_names=nodes[0].feature_names, progress=False)
    return nodes, splits, result


def test_feature_errors_decompose_the_score(trained):
    _, splits, result = trained
    rows = splits[0].test
    errors = feature_errors(result.detector, rows)
    assert errors.shape == rows.shape and (errors >= 0).all()
    np.testing.assert_allclose(errors.mean(axis=1), result.detector.decision_function(rows), rtol=1e-5, atol=1e-7)
    with pytest.raises(UserError):
        feature_errors(result.detector, rows[:, :5])


def test_gradient_x_input_shape_and_sign(trained):
    _, splits, result = trained
    attributions = gradient_x_input(result.detector, splits[0].test[:10])
    assert attributions.shape == (10, splits[0].test.shape[1]) and np.isfinite(attributions).all()


def test_top_features_with_and_without_baseline():
    errors = np.array([[1.0, 4.0, 2.0], [9.0, 0.5, 3.0]])
    assert top_features(errors, 2).tolist() == [[1, 2], [0, 2]]
    assert top_features(errors, 1, baseline=np.array([0.1, 10.0, 1.0])).tolist() == [[0], [0]]
    with pytest.raises(UserError):
        top_features(errors, 4)


def test_perturbed_metrics_follow_the_generator(trained):
    nodes, _, _ = trained
    names = nodes[0].feature_names
    node = nodes[0]
    normal = node.features[node.labels == 0]
    mean, std = normal.mean(axis=0), normal.std(axis=0)
    for i in np.flatnonzero(node.anomaly_types == "flatline"):
        cols = perturbed_metrics(node.features[i], "flatline", names, mean, std)
        assert 3 <= len(cols) <= 5 and all(node.features[i, j] == 0.0 for j in cols)
    spikes = [perturbed_metrics(node.features[i], "spike", names, mean, std)
              for i in np.flatnonzero(node.anomaly_types == "spike")]
    assert all(len(c) <= 3 for c in spikes) and np.mean([len(c) >= 1 for c in spikes]) >= 0.9
    # the estimate is rarely fooled by a normal row's own tail
    assert np.mean([bool(perturbed_metrics(row, "spike", names, mean, std)) for row in normal]) < 0.03
    shift = perturbed_metrics(node.features[0], "level_shift", names, mean, std)
    assert {names[j] for j in shift} == set(LEVEL_SHIFT_METRICS)
    assert len(traffic_compute_metrics(names)) == 18


def test_top3_explanations_find_the_perturbed_metrics(trained):
    nodes, splits, result = trained
    names = nodes[0].feature_names
    tops, truths = [], []
    for node, split in zip(nodes, splits, strict=True):
        normal = node.features[node.labels == 0]
        alarms = np.flatnonzero(result.client_detectors[split.name].predict(split.test) & split.test_labels)
        errors = feature_errors(result.detector, split.test[alarms])
        tops.extend(top_features(errors, 3))
        truths.extend(perturbed_metrics(split.test[i], split.test_types[i], names, normal.mean(0), normal.std(0))
                      for i in alarms)
    assert len(tops) >= 15
    assert hit_rate(np.array(tops), truths) >= 0.9
    assert precision_at_k(np.array(tops), truths) >= 0.7
    assert chance_hit_rate(30, 3, 3) < 0.3


def test_hit_rate_and_chance():
    top = np.array([[0, 1, 2], [3, 4, 5]])
    assert hit_rate(top, [{2}, {9}]) == 0.5
    assert hit_rate(top, [set(), {4}]) == 1.0
    assert precision_at_k(top, [{0, 1}, {9}]) == pytest.approx(1 / 3)
    assert chance_hit_rate(10, 0, 3) == 0.0 and chance_hit_rate(5, 5, 1) == 1.0
