"""Robust aggregation and poisoning attacks (fedad_tutorial.chapters.robust): exact values on small tensors,
and what one attacker that boosts its update tenfold does to FedAvg and to the robust rules."""

import math

import numpy as np
import pytest
import torch

from fedad_tutorial.chapters.robust import (
    clip_update,
    median_aggregator,
    norm_clipping_aggregator,
    scaled_update_attack,
    trimmed_mean_aggregator,
    type_recall,
    update_norm,
)
from fedad_tutorial.data import make_cloud_federation, train_test_split
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import FederatedConfig, RecordingAggregator, fedavg, fedavg_aggregator, run_federated
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import FeatureStats, federated_scaler

GLOBAL = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
STATES = [
    {"w": torch.tensor([[1.0, 5.0], [2.0, -1.0]]), "b": torch.tensor([0.0, 3.0])},
    {"w": torch.tensor([[3.0, 4.0], [2.0, 0.0]]), "b": torch.tensor([1.0, 1.0])},
    {"w": torch.tensor([[2.0, 100.0], [-50.0, 7.0]]), "b": torch.tensor([9.0, 2.0])},
    {"w": torch.tensor([[0.0, 6.0], [2.0, 1.0]]), "b": torch.tensor([4.0, -8.0])},
    {"w": torch.tensor([[4.0, 3.0], [9.0, 2.0]]), "b": torch.tensor([2.0, 0.0])},
]


def test_median_is_exact_for_odd_and_even_counts():
    odd = median_aggregator(GLOBAL, STATES, [1] * 5, 1)
    assert torch.equal(odd["w"], torch.tensor([[2.0, 5.0], [2.0, 1.0]]))
    assert torch.equal(odd["b"], torch.tensor([2.0, 1.0]))
    even = median_aggregator(GLOBAL, STATES[:4], [10, 1, 1, 1], 1)  # row counts are ignored
    assert torch.equal(even["w"], torch.tensor([[1.5, 5.5], [2.0, 0.5]]))
    assert torch.equal(even["b"], torch.tensor([2.5, 1.5]))
    want = np.median(np.stack([s["w"].numpy() for s in STATES]), axis=0)
    assert np.array_equal(odd["w"].numpy(), want)


def test_trimmed_mean_is_exact():
    got = trimmed_mean_aggregator(0.2)(GLOBAL, STATES, [1] * 5, 1)  # drops 1 high and 1 low value
    assert torch.allclose(got["w"], torch.tensor([[2.0, 5.0], [2.0, 1.0]]))
    assert torch.allclose(got["b"], torch.tensor([7 / 3, 1.0]))
    got = trimmed_mean_aggregator(0.4)(GLOBAL, STATES, [1] * 5, 1)  # drops 2 and 2: the median
    assert torch.equal(got["w"], median_aggregator(GLOBAL, STATES, [1] * 5, 1)["w"])
    plain = trimmed_mean_aggregator(0.0)(GLOBAL, STATES, [3, 1, 1, 1, 1], 1)
    assert torch.allclose(plain["b"], fedavg(STATES, [1] * 5)["b"])
    with pytest.raises(UserError):
        trimmed_mean_aggregator(0.5)


def test_clipping_bounds_the_update_norm_and_keeps_small_updates():
    assert update_norm(STATES[0], GLOBAL) == pytest.approx(math.sqrt(1 + 25 + 4 + 1 + 9))
    clipped = clip_update(STATES[2], GLOBAL, 2.0)
    assert update_norm(clipped, GLOBAL) == pytest.approx(2.0)
    ratio = clipped["w"] / STATES[2]["w"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # same direction, shrunk
    small = {"w": torch.full((2, 2), 0.1), "b": torch.zeros(2)}
    assert torch.equal(clip_update(small, GLOBAL, 2.0)["w"], small["w"])
    got = norm_clipping_aggregator(2.0)(GLOBAL, STATES, [1, 2, 3, 4, 5], 1)
    want = fedavg([clip_update(s, GLOBAL, 2.0) for s in STATES], [1, 2, 3, 4, 5])
    assert all(torch.allclose(got[k], want[k]) for k in want)
    assert update_norm(got, GLOBAL) <= 2.0 + 1e-6


def test_scaled_update_attack_changes_only_the_attacker():
    attack = scaled_update_attack(client=2, factor=10.0)
    glob = {"w": torch.ones(3)}
    state = {"w": torch.tensor([2.0, 1.0, 0.5])}
    assert attack(0, state, glob, 1) is state
    assert torch.allclose(attack(2, state, glob, 1)["w"], torch.tensor([11.0, 1.0, -4.0]))
    assert torch.allclose(scaled_update_attack(2, -1.0)(2, state, glob, 1)["w"], torch.tensor([0.0, 1.0, 1.5]))


def _distances_with_one_boosted_attacker():
    """Five honest clients take small steps from a global AE; client 4 boosts its step tenfold."""
    torch.manual_seed(0)
    glob = ModelSpec("ae", 30).build().state_dict()
    gen = torch.Generator().manual_seed(1)
    honest = [{k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in glob.items()} for _ in range(5)]
    attack = scaled_update_attack(client=4, factor=10.0)
    sent = [attack(i, s, glob, 1) for i, s in enumerate(honest)]
    reference = fedavg(honest, [1] * 5)  # what the honest federation would have agreed on
    rules = {"fedavg": fedavg_aggregator, "median": median_aggregator,
             "trimmed": trimmed_mean_aggregator(0.2), "clipping": norm_clipping_aggregator(1.0)}
    return {name: update_norm(rule(glob, sent, [1] * 5, 1), reference) for name, rule in rules.items()}, \
        update_norm(reference, glob)


def test_one_boosted_attacker_moves_fedavg_far_and_median_little():
    dist, honest_step = _distances_with_one_boosted_attacker()
    # distances from the honest clients' FedAvg (L2 over all weights): FedAvg lands (10 - 1) / 5 of the
    # attacker's tenfold step away; the median and the 20 % trimmed mean stay within one honest step;
    # clipping at norm 1.0 (above every honest step) hardly moves at all
    assert honest_step == pytest.approx(0.419, abs=0.005)
    assert dist["fedavg"] == pytest.approx(1.694, abs=0.01)
    assert dist["median"] == pytest.approx(0.359, abs=0.01)
    assert dist["trimmed"] == pytest.approx(0.256, abs=0.01)
    assert dist["clipping"] < 0.02
    assert dist["fedavg"] > 4 * dist["median"] and dist["fedavg"] > 4 * honest_step


def test_recording_aggregator_and_type_recall_on_a_tiny_run():
    nodes = make_cloud_federation(3, 200, 8, anomaly_rate=0.2, seed=0)
    splits = [train_test_split(n, 0.5, seed=k) for k, n in enumerate(nodes)]
    recorder = RecordingAggregator(median_aggregator)
    config = FederatedConfig(rounds=2, local_epochs=1, threshold="local", engine="loop", trim=0.0)
    result = run_federated(splits, config,
                           aggregator=recorder, update_hook=scaled_update_attack(0, -1.0), progress=False)
    assert len(recorder.states) == 2
    final = result.detector.model.state_dict()
    assert all(torch.equal(recorder.states[-1][k], final[k]) for k in final)
    scaler = federated_scaler([FeatureStats.of(s.train) for s in splits])
    recall = type_recall(result.detector.model, splits, scaler, "spike")
    assert 0.0 <= recall <= 1.0
    assert recall == type_recall(result.detector.model, splits, scaler, "spike", state=recorder.states[-1])
    assert math.isnan(type_recall(result.detector.model, splits, scaler, "no_such_type"))
