"""Federated training: FedAvg mechanics, reproducibility, and the quality targets of the course."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import PLAIN, default_splits
from sklearn.metrics import roc_auc_score

from fedad_tutorial.data import isotropic_blobs, make_cloud_federation, train_test_split
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig, fedavg, run_federated, sample_clients


def test_fedavg_weights_by_sample_count():
    a = {"w": torch.tensor([0.0, 2.0])}
    b = {"w": torch.tensor([4.0, 6.0])}
    out = fedavg([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([3.0, 5.0]))


def test_client_sampling_is_seeded_and_sized():
    chosen = sample_clients(10, 0.3, seed=1, round_idx=2)
    assert chosen == sample_clients(10, 0.3, seed=1, round_idx=2)
    assert len(chosen) == 3 and chosen == sorted(chosen)
    assert sample_clients(10, 1.0, 1, 2) == list(range(10))
    assert len(sample_clients(3, 0.01, 1, 2)) == 1


def _small_splits(seed=0, **kw):
    nodes = make_cloud_federation(num_nodes=4, samples_per_node=(80, 160), num_features=10, seed=seed, **kw)
    return [train_test_split(n, 0.3, seed=seed + k) for k, n in enumerate(nodes)]


def test_same_seed_gives_identical_history():
    config = FederatedConfig(rounds=3, local_epochs=2, fraction=0.5, model="vae", **PLAIN)
    a = run_federated(_small_splits(), config, progress=False).history
    b = run_federated(_small_splits(), config, progress=False).history
    assert a.equals(b)
    assert a["selected"].sum() == 3 * 2  # half of the 4 clients each round


def test_history_is_tidy_per_round_and_client():
    result = run_federated(_small_splits(), FederatedConfig(rounds=2, local_epochs=1, **PLAIN), progress=False)
    h = result.history
    assert len(h) == 2 * 4
    for column in ["round", "client", "loss", "threshold", "precision", "recall", "f1", "roc_auc", "pr_auc"]:
        assert column in h
    assert result.detector.threshold > 0


def test_unlabelled_clients_train_without_metrics():
    splits = _small_splits()
    for s in splits:
        s.test_labels = None
    h = run_federated(splits, FederatedConfig(rounds=1, local_epochs=1, **PLAIN), progress=False).history
    assert "f1" not in h and h["loss"].notna().all()


def test_config_rejects_bad_values():
    with pytest.raises(UserError):
        FederatedConfig(rounds=0)
    with pytest.raises(UserError):
        FederatedConfig(fraction=0)
    with pytest.raises(UserError):
        FederatedConfig(model="gan")


def _mean_final(result, metric):
    return float(result.final_round()[metric].mean())


@pytest.mark.slow
def test_federated_ae_meets_quality_targets(reference_runs):
    """Default federation, reference config, seed 42: ROC-AUC >= 0.97 and F1 >= 0.85 on held-out rows."""
    fed = reference_runs["federated"]
    assert _mean_final(fed, "roc_auc") >= 0.97
    assert _mean_final(fed, "f1") >= 0.85


@pytest.mark.slow
def test_federated_matches_centralized_at_the_same_budget(reference_runs):
    fed, cen = reference_runs["federated"], reference_runs["centralized"]
    assert abs(_mean_final(fed, "roc_auc") - _mean_final(cen, "roc_auc")) <= 0.01


@pytest.mark.slow
def test_local_only_is_worse_for_small_clients(reference_runs):
    """The three smallest clients rank their held-out rows better with the federated model.

    Compared on the threshold-free PR-AUC: F1 at a fixed percentile rests on the two or three
    anomalies of a small client's test split, so it flips with the CPU's instruction set or the
    seed, while the PR-AUC gap stayed well above the margin on both CPU paths and other seeds.
    """
    fed, loc = reference_runs["federated"].final_round(), reference_runs["local"].final_round()
    small = fed.nsmallest(3, "n_train")["client"]
    fed_small = fed.set_index("client").loc[small]
    loc_small = loc.set_index("client").loc[small]
    assert loc_small["pr_auc"].mean() < fed_small["pr_auc"].mean() - 0.01
    assert loc_small["roc_auc"].mean() <= fed_small["roc_auc"].mean()


@pytest.fixture(scope="module")
def recommended_runs():
    """``fedad run``'s configuration (``RECOMMENDED``, 30 rounds: trimmed, vectorized), federated and centralized."""
    config = replace(RECOMMENDED, rounds=30)
    return {mode: run_federated(default_splits(), config, mode=mode, progress=False)
            for mode in ("federated", "centralized")}


@pytest.mark.slow
def test_command_line_defaults_meet_quality_targets(recommended_runs):
    """The trimmed defaults keep the foundation's targets (measured: ROC-AUC 0.997, F1 0.877; centralized 0.998)."""
    fed, cen = recommended_runs["federated"], recommended_runs["centralized"]
    assert _mean_final(fed, "roc_auc") >= 0.97
    assert _mean_final(fed, "f1") >= 0.85
    assert abs(_mean_final(fed, "roc_auc") - _mean_final(cen, "roc_auc")) <= 0.01


@pytest.mark.slow
def test_isotropic_data_is_unlearnable_but_structured_data_is_not(reference_runs):
    """The original tutorial's data: AE reconstruction error ranks anomalies at chance, the norm perfectly."""
    nodes = isotropic_blobs(seed=42)
    splits = [train_test_split(n, 0.3, seed=42 + k) for k, n in enumerate(nodes)]
    iso = run_federated(splits, FederatedConfig(threshold="local", engine="loop", trim=0.0), progress=False)
    assert abs(_mean_final(iso, "roc_auc") - 0.5) < 0.1
    norm_auc = np.mean([roc_auc_score(s.test_labels, np.linalg.norm(s.test, axis=1)) for s in splits])
    assert norm_auc > 0.99
    assert _mean_final(reference_runs["federated"], "roc_auc") > 0.97
    # trimming (the command line's default) learns a little of the norm, far from it (measured: about 0.66)
    trimmed = run_federated(splits, replace(RECOMMENDED, rounds=30), progress=False)
    assert _mean_final(trimmed, "roc_auc") < 0.8


def test_default_splits_hold_out_thirty_percent():
    splits = default_splits()
    assert len(splits) == 10
    for s in splits:
        assert abs(s.test.shape[0] / (s.test.shape[0] + s.train.shape[0]) - 0.3) < 0.01


def test_aggregator_and_update_hook_plug_into_the_round():
    """A custom aggregator sees the global and client weights; a hook changes what clients send."""
    seen = []

    def keep_global(global_state, states, weights, rnd):
        seen.append((rnd, len(states), sum(weights)))
        return global_state

    splits = _small_splits()
    config = FederatedConfig(rounds=2, local_epochs=1, **PLAIN)
    frozen = run_federated(splits, config, progress=False, aggregator=keep_global)
    torch.manual_seed(config.seed)
    untrained = config.model_spec(10).build()
    assert all(torch.equal(a, b) for a, b in zip(frozen.detector.model.state_dict().values(),
                                                 untrained.state_dict().values(), strict=True))
    assert seen == [(1, 4, sum(s.train.shape[0] for s in splits)), (2, 4, sum(s.train.shape[0] for s in splits))]

    def send_global(i, state, global_state, rnd):
        return global_state

    hooked = run_federated(splits, config, progress=False, update_hook=send_global)
    assert all(torch.equal(a, b) for a, b in zip(hooked.detector.model.state_dict().values(),
                                                 untrained.state_dict().values(), strict=True))


def test_initial_state_continues_from_given_weights():
    splits = _small_splits()
    first = run_federated(splits, FederatedConfig(rounds=2, local_epochs=1, **PLAIN), progress=False)
    state = first.detector.model.state_dict()

    def keep_global(global_state, states, weights, rnd):
        return global_state

    kept = run_federated(splits, FederatedConfig(rounds=1, local_epochs=1, seed=1, **PLAIN), progress=False,
                         aggregator=keep_global, initial_state=state)
    assert all(torch.equal(v, state[k]) for k, v in kept.detector.model.state_dict().items())
    more = run_federated(splits, FederatedConfig(rounds=1, local_epochs=1, seed=1, **PLAIN), progress=False,
                         initial_state=state)
    cold = run_federated(splits, FederatedConfig(rounds=1, local_epochs=1, seed=1, **PLAIN), progress=False)
    assert more.final_round()["loss"].mean() < cold.final_round()["loss"].mean()
    with pytest.raises(UserError, match="initial_state does not fit"):
        run_federated(splits, FederatedConfig(rounds=1, latent_dim=3, **PLAIN), progress=False, initial_state=state)
