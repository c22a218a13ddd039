"""DP-FedAvg (fedad_tutorial.chapters.privacy): clipping bounds one client's influence, the noise has the
promised scale, and epsilon behaves as it should and matches Opacus."""

import math

import pytest
import torch
from opacus.accountants import RDPAccountant

from fedad_tutorial.chapters.privacy import dp_fedavg_aggregator, epsilon, epsilon_curve, noise_std
from fedad_tutorial.chapters.robust import update_norm
from fedad_tutorial.errors import UserError


def _round(seed: int, num: int = 5, size: int = 50):
    gen = torch.Generator().manual_seed(seed)
    glob = {"w": torch.randn(size, generator=gen), "b": torch.randn(3, generator=gen)}
    states = [{k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in glob.items()} for _ in range(num)]
    return glob, states


def test_without_noise_it_is_the_plain_mean_of_clipped_updates():
    glob, states = _round(0)
    big = max(update_norm(s, glob) for s in states) + 1.0  # nothing gets clipped
    got = dp_fedavg_aggregator(big, 0.0, seed=0)(glob, states, [1, 50, 3, 7, 900], 1)  # row counts ignored
    for k in glob:
        assert torch.allclose(got[k], sum(s[k] for s in states) / 5, atol=1e-6)


def test_clipping_bounds_each_clients_influence():
    glob, states = _round(1)
    clip, n = 0.2, 5
    aggregate = dp_fedavg_aggregator(clip, 0.0, seed=0)
    base = aggregate(glob, states, [1] * n, 1)
    for attack in (1e3, -1e6):  # one client sends an enormous update
        poisoned = [{k: glob[k] + attack * (v - glob[k]) for k, v in states[0].items()}] + states[1:]
        moved = update_norm(aggregate(glob, poisoned, [1] * n, 1), base)
        assert moved <= 2 * clip / n + 1e-6  # replacing one client moves the average by at most 2C/n
    assert update_norm(base, glob) <= clip + 1e-6  # the average of clipped updates
    # a fixed denominator: a missing client shrinks the step instead of re-weighting the others
    fixed = dp_fedavg_aggregator(clip, 0.0, seed=0, num_clients=10)(glob, states, [1] * n, 1)
    assert update_norm(fixed, glob) == pytest.approx(update_norm(base, glob) / 2, rel=1e-5)


def test_noise_has_the_promised_scale_and_is_seeded():
    size, n, clip, sigma = 200_000, 5, 0.5, 1.3
    glob = {"w": torch.zeros(size)}
    zero = [{"w": torch.zeros(size)} for _ in range(n)]  # no signal: the output is the noise alone
    noise = dp_fedavg_aggregator(clip, sigma, seed=3)(glob, zero, [1] * n, 4)["w"]
    assert noise_std(clip, sigma, n) == pytest.approx(0.13)
    assert float(noise.std()) == pytest.approx(0.13, rel=0.01)
    assert abs(float(noise.mean())) < 0.13 * 5 / math.sqrt(size)
    again = dp_fedavg_aggregator(clip, sigma, seed=3)(glob, zero, [1] * n, 4)["w"]
    assert torch.equal(noise, again)
    other_round = dp_fedavg_aggregator(clip, sigma, seed=3)(glob, zero, [1] * n, 5)["w"]
    other_seed = dp_fedavg_aggregator(clip, sigma, seed=4)(glob, zero, [1] * n, 4)["w"]
    assert not torch.equal(noise, other_round) and not torch.equal(noise, other_seed)


def test_epsilon_decreases_with_noise_and_grows_with_rounds():
    by_sigma = [epsilon(s, 0.5, 10, 1e-3) for s in (0.5, 1.0, 2.0, 4.0)]
    assert by_sigma == sorted(by_sigma, reverse=True)
    by_rounds = [epsilon(1.0, 0.5, r, 1e-3) for r in (1, 5, 10, 50)]
    assert by_rounds == sorted(by_rounds)
    assert epsilon(1.0, 0.1, 10, 1e-3) < epsilon(1.0, 0.5, 10, 1e-3)  # sampling amplifies privacy
    assert epsilon(0.0, 0.5, 10, 1e-3) == math.inf


def test_epsilon_matches_opacus():
    # computed directly with opacus 1.6.0: RDPAccountant, 10 x step(noise_multiplier=1.0,
    # sample_rate=0.5), get_epsilon(delta=1e-3) -> 8.54248309541142
    assert epsilon(1.0, 0.5, 10, 1e-3) == pytest.approx(8.54248309541142, rel=1e-9)
    accountant = RDPAccountant()  # and a live accountant, in another setting
    for _ in range(25):
        accountant.step(noise_multiplier=1.7, sample_rate=0.2)
    assert epsilon(1.7, 0.2, 25, 1e-5) == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)
    assert epsilon_curve(1.7, 0.2, [1, 25, 3], 1e-5) == [epsilon(1.7, 0.2, r, 1e-5) for r in (1, 25, 3)]


def test_bad_settings_are_refused():
    for bad in (lambda: dp_fedavg_aggregator(0.0, 1.0, 0), lambda: dp_fedavg_aggregator(1.0, -1.0, 0),
                lambda: epsilon(1.0, 0.0, 10, 1e-3), lambda: epsilon(1.0, 0.5, 0, 1e-3),
                lambda: epsilon(1.0, 0.5, 10, 0.0)):
        with pytest.raises(UserError):
            bad()


def test_a_delta_not_below_one_over_the_clients_is_flagged_on_the_last_line():
    """(epsilon, delta) with delta >= 1/K holds for a mechanism that publishes one of K clients' data whole."""
    from fedad_tutorial.privacy import describe

    run = {"epsilon": 3.0, "clip": 1.0, "noise_multiplier": 1.0, "clients_per_round": 5, "clients": 10, "rounds": 20}
    assert "warning" not in describe({**run, "delta": 1e-5})
    assert "warning" not in describe({**run, "delta": 0.099})
    line = describe({**run, "delta": 0.1})
    assert line.endswith("; warning: delta is not below 1 / 10 clients, so this guarantee allows one client's "
                         "contribution to be revealed outright (lower --dp-delta)")
    assert "warning" not in describe({**run, "delta": 0.1, "epsilon": math.inf})  # no guarantee claimed at all
