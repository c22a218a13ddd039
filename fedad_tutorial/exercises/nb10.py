"""Exercises of notebook 10 (differential privacy): DP-FedAvg's three ingredients.

- Exercise 10.1: clip every client's update and average with a fixed denominator.
- Exercise 10.2: add Gaussian noise of the right scale, reproducibly.
- Exercise 10.3: how many rounds a privacy budget allows.

Every check runs the learner's function on fresh inputs and compares its behaviour with
:mod:`fedad_tutorial.chapters.privacy`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedad_tutorial.chapters.privacy import dp_fedavg_aggregator, epsilon, noise_std
from fedad_tutorial.chapters.robust import update_norm
from fedad_tutorial.exercises.checking import exercise, expect, expect_state_dict, learner_number
from fedad_tutorial.federated import fedavg

StateDict = dict[str, torch.Tensor]


def _fresh_round(num: int, seed: int) -> tuple[StateDict, list[StateDict]]:
    """Global weights and ``num`` clients' weights after steps of very different sizes."""
    gen = torch.Generator().manual_seed(seed)
    glob = {"enc.weight": torch.randn(6, 4, generator=gen), "enc.bias": torch.randn(6, generator=gen)}
    states = []
    for k in range(num):
        size = 0.05 * (k + 1) ** 2
        states.append({n: v + size * torch.randn(v.shape, generator=gen) for n, v in glob.items()})
    return glob, states


def _max_gap(got: StateDict, want: StateDict) -> float:
    tensors = expect_state_dict(got, want)
    return max(float((tensors[k].double() - want[k].double()).abs().max()) for k in want)


@exercise("Exercise 10.1: clip and average with a fixed denominator")
def check_clipped_average(learner_fn: Callable[[StateDict, list[StateDict], float, int], StateDict],
                          seed: int = 1010) -> None:
    """``learner_fn(global_state, states, clip, num_clients)`` -> ``global + sum_k clip(update_k) / num_clients``.

    ``update_k = states[k] - global_state`` over all tensors together; clipping scales it by
    ``min(1, clip / norm)``. Checked on fresh weights against
    :func:`fedad_tutorial.privacy.dp_fedavg_aggregator` without noise, within 1e-5, with
    ``num_clients`` equal to and larger than the number of updates.
    """
    rng = np.random.default_rng(seed)
    for num, extra in ((4, 0), (5, 3)):
        glob, states = _fresh_round(num, int(rng.integers(10**6)))
        norms = sorted(update_norm(s, glob) for s in states)
        clip = float(norms[num // 2])
        n = num + extra
        copies = [{k: v.clone() for k, v in s.items()} for s in states]
        got = learner_fn({k: v.clone() for k, v in glob.items()}, copies, clip, n)
        want = dp_fedavg_aggregator(clip, 0.0, seed=0, num_clients=n)(glob, states, [1] * num, 1)
        gap = _max_gap(got, want)
        if gap > 1e-5:
            plain = fedavg(states, [1] * num)
            hint = "clip each update to norm `clip` (norm over all of the client's tensors together)"
            if _max_gap(got, plain) <= 1e-5:
                hint = "you averaged without clipping: scale each update by min(1, clip / its norm) first"
            elif extra:
                hint = "divide the sum of the clipped updates by num_clients, not by the number of updates"
            expect(False, f"{num} updates, clip {clip:.3g}, num_clients {n}: off by up to {gap:.2e}; {hint}")


@exercise("Exercise 10.2: Gaussian noise of the right scale")
def check_add_noise(learner_fn: Callable[[StateDict, float, float, int, torch.Generator], StateDict],
                    seed: int = 1020) -> None:
    """``learner_fn(state, clip, noise_multiplier, num_clients, generator)`` -> ``state`` + noise.

    The noise is Gaussian, drawn from ``generator``, with standard deviation
    ``noise_multiplier * clip / num_clients`` per coordinate (:func:`fedad_tutorial.privacy.noise_std`).
    Checked on a large fresh state: the noise's mean is near 0 and its standard deviation within 2 %
    of the target; the same generator seed gives the same result; the input is not modified.
    """
    rng = np.random.default_rng(seed)
    state = {"w": torch.from_numpy(rng.normal(size=(300, 300))).float(), "b": torch.zeros(40_000)}
    frozen = {k: v.clone() for k, v in state.items()}
    for clip, sigma, n in ((0.7, 1.1, 5), (2.0, 0.3, 20)):
        target = noise_std(clip, sigma, n)
        gen_seed = int(rng.integers(10**6))
        got = expect_state_dict(learner_fn(state, clip, sigma, n, torch.Generator().manual_seed(gen_seed)), frozen)
        expect(all(torch.equal(state[k], frozen[k]) for k in frozen), "do not modify the input state in place")
        noise = torch.cat([(got[k].double() - frozen[k].double()).flatten() for k in frozen])
        std = float(noise.std())
        hint = f"the standard deviation should be noise_multiplier * clip / num_clients = {target:.4g}"
        if abs(std - sigma * clip) < 0.02 * sigma * clip:
            hint += " (you forgot to divide by num_clients)"
        expect(abs(std - target) <= 0.02 * target, f"noise std {std:.4g}; {hint}")
        expect(abs(float(noise.mean())) <= 5 * target / noise.numel() ** 0.5, "the noise should have mean 0")
        again = expect_state_dict(learner_fn(state, clip, sigma, n, torch.Generator().manual_seed(gen_seed)), frozen)
        expect(all(torch.equal(got[k], again[k]) for k in frozen),
               "draw the noise from the generator you are given (torch.randn(shape, generator=generator))")


@exercise("Exercise 10.3: rounds within a privacy budget")
def check_rounds_for_budget(learner_fn: Callable[[float, float, float, float], int], seed: int = 1030) -> None:
    """``learner_fn(noise_multiplier, sample_rate, delta, target_epsilon)`` -> the most rounds with
    ``epsilon <= target_epsilon``.

    Checked on fresh settings against :func:`fedad_tutorial.privacy.epsilon`: the answer ``r``
    satisfies ``epsilon(r) <= target < epsilon(r + 1)`` (0 if even one round exceeds the budget).
    """
    rng = np.random.default_rng(seed)
    for _ in range(3):
        sigma = float(rng.uniform(0.8, 2.0))
        rate = float(rng.choice([0.1, 0.2, 0.5]))
        delta = 1e-5
        target = float(rng.uniform(2.0, 6.0))
        got = learner_number(learner_fn(sigma, rate, delta, target), "the number of rounds")
        expect(got == int(got), f"got {got:g}: the number of rounds is a whole number")
        got = int(got)
        expect(got >= 0, "the number of rounds cannot be negative")
        within = got == 0 or epsilon(sigma, rate, got, delta) <= target
        expect(within, f"sigma {sigma:.2f}, q {rate}, target {target:.2f}: after {got} rounds epsilon is "
                       f"{epsilon(sigma, rate, got, delta):.3f}, over the budget")
        expect(epsilon(sigma, rate, got + 1, delta) > target,
               f"sigma {sigma:.2f}, q {rate}, target {target:.2f}: {got + 1} rounds still fit the budget "
               f"(epsilon {epsilon(sigma, rate, got + 1, delta):.3f}); find the largest number of rounds")
