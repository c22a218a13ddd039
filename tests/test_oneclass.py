"""Chapter 14's pieces: the collapse happens with biases or a trainable centre and not without, the
collapse test needs no labels, and the comparison trains every model on the same held-out rows."""

import numpy as np
import pytest
import torch
from conftest import PLAIN

from fedad_tutorial.center import federated_center
from fedad_tutorial.chapters.oneclass import (
    COLLAPSE_VARIANTS,
    MODEL_NAMES,
    collapse_experiment,
    compare_detectors,
    looks_collapsed,
    pooled_test,
    relative_spread,
    synthetic_federation,
    weights_sent,
    with_bias,
    with_trainable_center,
)
from fedad_tutorial.data import Split
from fedad_tutorial.federated import FederatedConfig
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.plots import plot_client_centres, plot_collapse, plot_comparison, plot_hypersphere


@pytest.fixture(scope="module")
def collapse_run():
    return collapse_experiment(synthetic_federation(0), epochs=12)


def _svdd(seed: int = 0):
    torch.manual_seed(seed)
    model = ModelSpec("svdd", 5, (8,), 3).build()
    rows = torch.randn(40, 5)
    with torch.no_grad():
        model.center.copy_(federated_center(model, [rows]))
    return model, rows


def test_the_variants_start_as_the_same_function():
    model, rows = _svdd()
    biased, free_center = with_bias(model), with_trainable_center(model)
    for variant in (biased, free_center):
        torch.testing.assert_close(variant.score(rows), model.score(rows))
    assert all(layer.bias is not None for layer in biased.encoder if isinstance(layer, torch.nn.Linear))
    assert all(layer.bias is None for layer in model.encoder if isinstance(layer, torch.nn.Linear))  # a copy
    assert "center" in dict(free_center.named_parameters()) and "center" not in dict(model.named_parameters())


def test_biases_and_a_trainable_centre_collapse_and_the_package_model_does_not(collapse_run):
    table = collapse_run.table()
    package, *collapsing = COLLAPSE_VARIANTS
    spread = table["relative spread of held-out scores"]
    assert spread[package] > 0.5
    for name in collapsing:
        assert spread[name] < 0.01 * spread[package]
        assert table.loc[name, "final training loss"] < 0.1 * table.loc[package, "final training loss"]
        assert abs(table.loc[name, "ROC-AUC"] - 0.5) < 0.05
        assert looks_collapsed(collapse_run.scores[name])
    assert table.loc[package, "ROC-AUC"] > 0.75 and not looks_collapsed(collapse_run.scores[package])
    assert float(collapse_run.models["trainable centre"].center.detach().norm()) < 0.1 * float(
        collapse_run.models[package].center.norm())  # the centre moved towards zero
    assert list(collapse_run.losses.index) == list(range(1, 13))


def test_relative_spread_is_scale_free_and_robust_to_a_few_far_rows():
    rng = np.random.default_rng(0)
    scores = rng.chisquare(3, 1000)
    assert relative_spread(scores) == pytest.approx(relative_spread(1e-6 * scores))
    q25, q50, q75 = np.percentile(scores, [25, 50, 75])
    assert relative_spread(scores) == pytest.approx((q75 - q25) / q50)
    constant = np.full(500, 3e-5)
    constant[:10] *= 1000.0
    assert relative_spread(constant) == 0.0 and looks_collapsed(constant)
    assert looks_collapsed(np.zeros(10)) and not looks_collapsed(scores)


def _tiny_federation(seed: int) -> list[Split]:
    rng = np.random.default_rng(seed)
    splits = []
    for k in range(2):
        test = np.vstack([rng.normal(size=(20, 4)), rng.normal(6.0, 1.0, size=(4, 4))])
        splits.append(Split(f"node_{k + 1}", rng.normal(size=(60, 4)), test, np.r_[np.zeros(20), np.ones(4)]))
    return splits


def test_compare_detectors_scores_every_model_on_the_same_rows():
    config = FederatedConfig(rounds=2, local_epochs=1, hidden=(8,), latent_dim=2, **PLAIN)
    comparison = compare_detectors(config, seeds=(0, 1), federations={"tiny": _tiny_federation})
    final = comparison.final
    assert len(final) == 6 and set(final["model"]) == set(MODEL_NAMES.values())
    assert final["roc_auc"].between(0.75, 1.0).all()  # anomalies 6 standard deviations away: well above chance
    assert (comparison.per_round.groupby(["model", "seed"]).size() == 2).all()
    summary = comparison.summary()
    assert list(summary.index.get_level_values("model")) == ["autoencoder", "VAE", "Deep SVDD"]
    ae, svdd = (summary.loc[("tiny", name), "weights sent per round"] for name in ("autoencoder", "Deep SVDD"))
    assert svdd == weights_sent("svdd", 4, config) == 4 * 8 + 8 * 2  # no decoder, no biases
    assert ae == 2 * (4 * 8 + 8 + 8 * 2 + 2) - 2 + 4  # encoder and mirrored decoder with biases
    rows, labels = pooled_test(_tiny_federation(0))
    assert rows.shape == (48, 4) and labels.sum() == 8


def test_the_chapter_figures_have_their_panels(collapse_run):
    fig = plot_collapse(collapse_run.losses, collapse_run.scores, collapse_run.labels)
    assert len(fig.axes) == 1 + len(COLLAPSE_VARIANTS)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == list(COLLAPSE_VARIANTS)
    per_round = compare_detectors(FederatedConfig(rounds=2, local_epochs=1, hidden=(8,), latent_dim=2, **PLAIN),
                                  seeds=(0,),
                                  federations={"tiny": _tiny_federation}).per_round
    fig = plot_comparison(per_round)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["autoencoder", "VAE", "Deep SVDD"]
    fig = plot_hypersphere(np.random.default_rng(0).normal(size=(30, 2)), np.r_[np.zeros(25), np.ones(5)],
                           np.array([0.1, -0.1]), 0.5)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 1
    fig = plot_client_centres(np.eye(3)[:, :2], np.array([10, 20, 30]), np.array([0.2, 0.3]), np.array([0.3, 0.3]))
    assert len(fig.axes[0].collections[0].get_offsets()) == 3
