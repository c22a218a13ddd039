"""The real-data panel's protocol pieces (benchmarks/real_panel.py) on a small generated table."""

import numpy as np
import pandas as pd
import pytest
from real_panel import (
    CLIENTS,
    ENSEMBLE_RULES,
    FENCES,
    MIN_CLIENT_ROWS,
    MODELS_RUN,
    WHICH_BEGIN,
    WHICH_END,
    cli_method,
    combine,
    fence_thresholds,
    histogram_rank,
    latent_distance,
    make_fold,
    markdown_table,
    noniid_clients,
    per_dataset,
    quantile_map,
    sized_model,
    stratified_split,
    subsample,
    training_rank,
    versus_forest,
    which_model,
    wins,
)

from fedad_tutorial.thresholds import ScoreHistogram


def _table(n: int = 400, d: int = 4, rate: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five well-separated blobs of normal rows and a share ``rate`` of far-away anomalies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(5, d))
    labels = (rng.random(n) < rate).astype(int)
    rows = centres[rng.integers(0, 5, n)] + rng.normal(size=(n, d))
    rows[labels == 1] = rng.normal(scale=30.0, size=(int(labels.sum()), d))
    return rows.astype(np.float32), labels


def test_split_is_stratified_disjoint_and_seeded():
    _, labels = _table()
    train, test = stratified_split(labels, seed=1)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    assert len(test) == pytest.approx(0.3 * len(labels), abs=1)
    assert labels[test].mean() == pytest.approx(labels.mean(), abs=0.01)
    assert labels[train].mean() == pytest.approx(labels.mean(), abs=0.01)
    again, _ = stratified_split(labels, seed=1)
    other, _ = stratified_split(labels, seed=2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_subsample_keeps_at_most_the_limit():
    idx = np.arange(100, 200)
    picked = subsample(idx, 30, seed=0)
    assert len(picked) == 30 and set(picked) <= set(idx) and np.all(np.diff(picked) > 0)
    assert subsample(idx, None, 0) is idx and subsample(idx, 500, 0) is idx


def test_noniid_clients_partition_every_row_and_differ():
    rows, _ = _table(n=1000)
    parts = noniid_clients(rows, seed=0)
    assert len(parts) == CLIENTS
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(rows)))  # each row to exactly one client
    assert min(len(p) for p in parts) >= MIN_CLIENT_ROWS
    # non-IID: each client's mean row is far from the others' (clusters), unlike a random split
    means = np.array([rows[p].mean(axis=0) for p in parts])
    spread = np.linalg.norm(means - means.mean(axis=0), axis=1).mean()
    random_parts = np.array_split(np.random.default_rng(0).permutation(len(rows)), CLIENTS)
    random_means = np.array([rows[p].mean(axis=0) for p in random_parts])
    assert spread > 3 * np.linalg.norm(random_means - random_means.mean(axis=0), axis=1).mean()


def test_mixing_moves_about_the_stated_share():
    rows, _ = _table(n=2000)
    pure, mixed = noniid_clients(rows, mix=0.0, seed=3), noniid_clients(rows, mix=0.2, seed=3)
    owner_pure, owner_mixed = np.empty(len(rows), int), np.empty(len(rows), int)
    for k, (a, b) in enumerate(zip(pure, mixed, strict=True)):
        owner_pure[a], owner_mixed[b] = k, k
    assert np.mean(owner_pure != owner_mixed) == pytest.approx(0.2, abs=0.03)


def test_tiny_tables_give_every_client_its_minimum():
    rows, _ = _table(n=60)
    parts = noniid_clients(rows, seed=0)
    assert [len(p) >= MIN_CLIENT_ROWS for p in parts] == [True] * CLIENTS
    with pytest.raises(ValueError):
        noniid_clients(rows[:20], seed=0)


def test_fold_subsamples_training_but_keeps_the_test_part_whole():
    rows, labels = _table(n=600)
    fold = make_fold("toy", rows, labels, seed=0, max_train=200)
    assert len(fold.train) == 200 and fold.train_rows_full == 420
    assert len(fold.test) == 180 and fold.test_labels.sum() == pytest.approx(0.3 * labels.sum(), abs=1)


def test_sized_model_has_a_bottleneck_below_the_input_width():
    for d in (3, 6, 9, 32, 166):
        spec = sized_model(d)
        assert 1 <= spec["latent_dim"] < d and spec["latent_dim"] <= 10 and len(spec["hidden"]) == 2


def test_tables_average_over_seeds_and_count_wins():
    results = pd.DataFrame([
        {"dataset": ds, "seed": s, "method": m, "roc_auc": v + 0.01 * s}
        for ds, values in {"a": {"IF central": 0.8, "fedad": 0.9}, "b": {"IF central": 0.9, "fedad": 0.7}}.items()
        for m, v in values.items() for s in (0, 1)])
    mean, std = per_dataset(results)
    assert list(mean.columns) == ["IF central", "fedad"] and list(mean.index) == ["a", "b"]
    assert mean.loc["a", "fedad"] == pytest.approx(0.905) and std.loc["a", "fedad"] == pytest.approx(0.00707, abs=1e-4)
    assert wins(mean, "fedad") == (1, 1)  # better on a; more than 0.05 below on b
    text = markdown_table(mean, std)
    assert "| a | 0.805 ± 0.007 | 0.905 ± 0.007 |" in text and "| **mean** | **0.855** | **0.805** |" in text


def test_fences_follow_the_spread_of_training_scores():
    scores = np.arange(101.0)  # Q1 25, Q3 75, IQR 50
    fences = fence_thresholds(lambda q: float(np.percentile(scores, q)))
    assert fences == {name: 75.0 + k * 50.0 for name, k in FENCES.items()}


def test_quantile_map_sends_each_feature_through_its_distribution_function():
    rng = np.random.default_rng(0)
    clients = [rng.exponential(size=(300, 2)).astype(np.float32) * [1.0, 100.0] for _ in range(2)]
    transform = quantile_map(clients)
    pooled = np.concatenate(clients)
    mapped = transform(pooled)
    assert mapped.dtype == np.float32 and mapped.min() >= 0.0 and mapped.max() <= 1.0
    np.testing.assert_allclose(np.sort(mapped[:, 0]), np.linspace(0, 1, 600), atol=0.01)  # uniform ranks
    assert np.all(np.diff(mapped[np.argsort(pooled[:, 1]), 1]) >= 0)  # order kept
    assert transform(np.array([[-5.0, 1e9]], dtype=np.float32)).tolist() == [[0.0, 1.0]]  # beyond the range: clipped
    ties = quantile_map([np.array([[0.0]] * 90 + [[1.0]] * 10, dtype=np.float32)])
    assert ties(np.array([[0.0]], dtype=np.float32))[0, 0] == pytest.approx(0.45, abs=0.01)  # middle of the tie


def test_latent_distance_is_the_mahalanobis_distance_of_the_code():
    class Model:
        def encode(self, x):
            return x[:, :2] * 2.0

    class Detector:
        model = Model()

        def scaled(self, rows):
            import torch

            return torch.as_tensor(rows, dtype=torch.float32)

    rng = np.random.default_rng(1)
    clients = [rng.normal(size=(400, 3)).astype(np.float32) * [1.0, 3.0, 5.0] for _ in range(2)]
    distance = latent_distance(Detector(), clients)
    codes = np.concatenate(clients)[:, :2] * 2.0
    mean, cov = codes.mean(axis=0), np.cov(codes, rowvar=False)
    row = np.array([[2.0, -3.0, 100.0]], dtype=np.float32)
    diff = row[0, :2] * 2.0 - mean
    assert distance(row)[0] == pytest.approx(diff @ np.linalg.inv(cov) @ diff, rel=1e-4)
    assert distance(np.concatenate(clients)).mean() == pytest.approx(2.0, rel=0.01)  # d = 2 code dimensions


def test_training_rank_is_the_share_of_training_scores_at_or_below():
    rank = training_rank(np.array([3.0, 1.0, 2.0, 2.0]))
    np.testing.assert_allclose(rank(np.array([0.5, 1.0, 2.0, 2.5, 9.0])), [0.0, 0.25, 0.75, 0.75, 1.0])


def test_histogram_rank_is_the_share_of_training_scores_below():
    train = np.random.default_rng(0).gamma(2.0, size=20_000)
    rank = histogram_rank(ScoreHistogram.of(train), np.array([0.0, *np.percentile(train, [10, 50, 90]), 1e3]))
    np.testing.assert_allclose(rank, [0.0, 0.1, 0.5, 0.9, 1.0], atol=0.002)  # within a shared bin of the exact share


def test_rules_combine_calibrated_scores():
    rng = np.random.default_rng(1)
    # two detectors on different scales: one in (0, 1), one an error a thousand times larger
    small, large = rng.uniform(0.4, 0.6, 5000), rng.gamma(2.0, 1000.0, 5000)
    histograms = [ScoreHistogram.of(small), ScoreHistogram.of(large)]
    z = [(np.array([0.7, 0.5]) - np.median(small)) / np.subtract(*np.percentile(small, [75, 25])),
         (np.array([2000.0, 9000.0]) - np.median(large)) / np.subtract(*np.percentile(large, [75, 25]))]
    pair = [np.array([0.7, 0.5]), np.array([2000.0, 9000.0])]
    np.testing.assert_allclose(combine("mean_z", pair, histograms), np.mean(z, axis=0), rtol=0.01)
    np.testing.assert_allclose(combine("max_z", pair, histograms), np.max(z, axis=0), rtol=0.01)
    # a row one detector finds far out stays high under max whatever the other says; the mean halves it
    assert combine("max_z", pair, histograms)[1] == pytest.approx(z[1][1], rel=0.01)
    ranks = [(small < 0.7).mean(), (small < 0.5).mean()], [(large < 2000).mean(), (large < 9000).mean()]
    np.testing.assert_allclose(combine("mean_rank", pair, histograms), np.mean(ranks, axis=0), atol=0.005)
    np.testing.assert_allclose(combine("max_rank", pair, histograms), np.max(ranks, axis=0), atol=0.005)
    assert set(ENSEMBLE_RULES) == {"mean_z", "max_z", "mean_rank", "max_rank"}


def test_versus_forest_reports_mean_worst_table_and_cost():
    results = pd.DataFrame([
        {"dataset": ds, "seed": s, "method": m, "roc_auc": v + 0.02 * s, "pr_auc": v / 2, "seconds": 1.0 + s}
        for ds, values in {"a": {"IF central": 0.8, "x": 0.9}, "b": {"IF central": 0.9, "x": 0.7},
                           "c": {"IF central": 0.6, "x": 0.65}}.items()
        for m, v in values.items() for s in (0, 1)])
    table = versus_forest(results).set_index("method")
    assert table.loc["x", "roc_auc"] == pytest.approx(0.76) and table.loc["x", "pr_auc"] == pytest.approx(0.375)
    assert table.loc["x", "worst_vs_IF"] == pytest.approx(-0.2) and table.loc["x", "worst_table"] == "b"
    assert table.loc["x", "wins_vs_IF"] == 2 and table.loc["x", "seconds"] == pytest.approx(1.5)
    assert table.loc["x", "seed_std"] == pytest.approx(0.02 / np.sqrt(2))  # per-seed means 0.75 and 0.77


def test_the_packages_ensemble_rule_is_the_larger_robust_z_score():
    """``--model ensemble`` combines as the panel's ``max_z`` column, the rule docs/results.md justifies."""
    import torch

    from fedad_tutorial.ensemble import combine as package_rule

    z = np.array([[-3.0, 0.5, 7.0], [2.0, 0.25, -1.0]])
    assert package_rule(torch.tensor(z)).tolist() == z.max(axis=0).tolist()


def _models_results() -> pd.DataFrame:
    """Three data sets, two seeds: ``ae`` best on a, ``iforest`` on b, ``ensemble`` never worst by much."""
    auc = {"a": {"IF central": 0.8, "ae": 0.95, "iforest": 0.8, "ensemble": 0.9},
           "b": {"IF central": 0.9, "ae": 0.5, "iforest": 0.92, "ensemble": 0.85},
           "c": {"IF central": 0.7, "ae": 0.8, "iforest": 0.7, "ensemble": 0.82}}
    seconds = {"IF central": 0.1, "ae": 2.0, "iforest": 0.5, "ensemble": 2.5}
    return pd.DataFrame([{"dataset": f"{i}_{ds}", "seed": s,
                          "method": m if m == "IF central" else cli_method(m), "roc_auc": v + 0.01 * s,
                          "pr_auc": v / 2 + (0.2 if m == "ae" else 0.0), "seconds": seconds[m]}
                         for i, (ds, values) in enumerate(auc.items()) for m, v in values.items() for s in (0, 1)])


def test_which_model_says_where_each_model_wins():
    text = which_model(_models_results())
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines()[2:] if line.startswith("| `")}
    assert list(rows) == ["ae", "iforest", "ensemble"]
    assert "| 0.755 ± 0.007 | -0.400 (`1_b`) | 2 | 0.575 | 2.0 |" in rows["ae"]
    assert "| 0.862 ± 0.007 | -0.050 (`1_b`) | 2 | 0.428 | 2.5 |" in rows["ensemble"]
    assert ("Highest mean ROC-AUC: `ensemble`; smallest shortfall on its worst data set: `iforest`; highest mean "
            "PR-AUC: `ae`; quickest: `iforest`.") in text
    assert "`ae` on 1 (a); `iforest` on 1 (b); `ensemble` on 1 (c)." in text


def test_readme_which_model_block_is_the_generated_one():
    """README.md shows, between the markers, what ``python benchmarks/real_panel.py --which-model`` prints."""
    readme = (MODELS_RUN.parents[2] / "README.md").read_text()
    assert readme.count(WHICH_BEGIN) == 1 and readme.count(WHICH_END) == 1
    block = readme.split(WHICH_BEGIN, 1)[1].split(WHICH_END, 1)[0].strip("\n")
    assert block == which_model(pd.read_csv(MODELS_RUN))
