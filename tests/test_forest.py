"""The federated isolation forest: exact pooling, seeding, and detection on the synthetic federation."""

import numpy as np
import pytest

from fedad_tutorial.chapters.forest import (
    FederatedIsolationForest,
    average_path_length,
    fit_client_forest,
    pool_forests,
    pooled_score_formula,
)
from fedad_tutorial.data import make_cloud_federation, train_test_split
from fedad_tutorial.errors import UserError
from fedad_tutorial.metrics import roc_auc


@pytest.fixture(scope="module")
def splits():
    nodes = make_cloud_federation(num_nodes=6, samples_per_node=(300, 600), seed=42)
    return [train_test_split(n, 0.3, seed=42 + k) for k, n in enumerate(nodes)]


@pytest.fixture(scope="module")
def fitted(splits):
    return FederatedIsolationForest(trees_per_client=100, seed=0).fit([s.train for s in splits])


def test_average_path_length_matches_scikit_learn():
    from sklearn.ensemble._iforest import _average_path_length

    for n in (1, 2, 3, 128, 256, 1000):
        assert average_path_length(n) == pytest.approx(float(_average_path_length([n])[0]), abs=1e-12)


def test_pooled_forest_equals_mean_path_length_formula(splits, fitted):
    rows = fitted.scaler_.transform(np.vstack([s.test for s in splits]))
    pooled = fitted.forest_.score_samples(rows)
    np.testing.assert_allclose(pooled, pooled_score_formula(fitted.client_forests_, rows), rtol=0, atol=1e-12)
    assert fitted.forest_.n_estimators == len(fitted.forest_.estimators_) == 600
    assert fitted.max_samples_ == 128 and fitted.forest_.offset_ == -0.5
    # predict uses the pooled scores and the "auto" offset
    np.testing.assert_array_equal(fitted.forest_.predict(rows), np.where(pooled < -0.5, -1, 1))


def test_pooling_one_forest_changes_nothing(splits, fitted):
    rows = fitted.scaler_.transform(splits[0].test)
    one = fitted.client_forests_[0]
    np.testing.assert_array_equal(pool_forests([one]).score_samples(rows), one.score_samples(rows))


def test_pooling_unequal_subsample_sizes_is_refused():
    rng = np.random.default_rng(0)
    a = fit_client_forest(rng.normal(size=(200, 4)), 5, 64)
    b = fit_client_forest(rng.normal(size=(200, 4)), 5, 128)
    with pytest.raises(UserError, match="max_samples_"):
        pool_forests([a, b])


def test_seeded_and_measured_roc_auc(splits, fitted):
    x = np.vstack([s.test for s in splits])
    y = np.concatenate([s.test_labels for s in splits])
    again = FederatedIsolationForest(trees_per_client=100, seed=0).fit([s.train for s in splits])
    np.testing.assert_array_equal(fitted.decision_function(x), again.decision_function(x))
    pooled_auc = roc_auc(y, fitted.decision_function(x))
    assert 0.78 < pooled_auc < 0.86  # non-IID regimes blur a pooled forest
    own = [roc_auc(s.test_labels, fitted.client_scores(k, s.test)) for k, s in enumerate(splits)]
    assert np.mean(own) > 0.88  # each client's own trees on its own rows


def test_small_client_lowers_the_shared_subsample_size():
    rng = np.random.default_rng(1)
    forest = FederatedIsolationForest(trees_per_client=4, proportional=True, seed=3).fit(
        [rng.normal(size=(60, 3)), rng.normal(size=(300, 3))])
    assert forest.max_samples_ == 60
    assert [len(f.estimators_) for f in forest.client_forests_] == [1, 7]
    assert forest.decision_function(np.full((1, 3), 8.0))[0] > forest.decision_function(np.zeros((1, 3)))[0]
