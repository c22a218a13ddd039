"""Exercises of notebook 11 (poisoning and robust aggregation): the server's defences.

- Exercise 11.1: coordinate-wise median aggregation.
- Exercise 11.2: norm clipping, then FedAvg.
- Exercise 11.3: a model-poisoning client (the attack as an update hook).

Every check runs the learner's function on fresh random weights (new seeds, shapes and client
counts) and compares its behaviour with :mod:`fedad_tutorial.chapters.robust`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedad_tutorial.chapters.robust import (
    median_aggregator,
    norm_clipping_aggregator,
    scaled_update_attack,
    update_norm,
)
from fedad_tutorial.exercises.checking import exercise, expect, expect_state_dict
from fedad_tutorial.federated import fedavg
from fedad_tutorial.models import ModelSpec

StateDict = dict[str, torch.Tensor]


def _fresh_round(num: int, seed: int, step: float = 0.05) -> tuple[StateDict, list[StateDict]]:
    """A small autoencoder's global weights and ``num`` clients' weights after random steps of
    different sizes (one client's step is 20 times larger, as an attacker's would be)."""
    torch.manual_seed(seed)
    glob = {k: v.clone() for k, v in ModelSpec("ae", 6, (5,), 2).build().state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    states = []
    for k in range(num):
        size = step * (20.0 if k == num - 1 else float(torch.rand(1, generator=gen)) + 0.5)
        states.append({n: v + size * torch.randn(v.shape, generator=gen) for n, v in glob.items()})
    return glob, states


def _copy(state: StateDict) -> StateDict:
    return {k: v.clone() for k, v in state.items()}


def _compare(got: StateDict, want: StateDict, hint: str, atol: float = 1e-5) -> None:
    got_tensors = expect_state_dict(got, want)
    for key, value in want.items():
        mine = got_tensors[key]
        gap = float((mine.double() - value.double()).abs().max())
        expect(gap <= atol, f"{key} differs from the expected result by up to {gap:.2e}: {hint}")


@exercise("Exercise 11.1: coordinate-wise median")
def check_median(learner_fn: Callable[[StateDict, list[StateDict], list[float], int], StateDict],
                 seed: int = 1111) -> None:
    """``learner_fn(global_state, states, weights, round_idx)`` must return the coordinate-wise median.

    Checked on fresh random weights with an odd and an even number of clients (the mean of the two
    middle values for an even count, numpy's convention), against
    :func:`fedad_tutorial.chapters.robust.median_aggregator`: values within 1e-5; row counts are ignored; the
    inputs are not modified.
    """
    rng = np.random.default_rng(seed)
    for num in (5, 4):
        glob, states = _fresh_round(num, int(rng.integers(10**6)))
        weights = [float(w) for w in rng.integers(20, 900, size=num)]
        frozen = [_copy(s) for s in states]
        got = learner_fn(_copy(glob), states, list(weights), 1)
        want = median_aggregator(glob, frozen, weights, 1)
        expect_state_dict(got, want)
        lower = {k: torch.stack([s[k] for s in frozen]).median(dim=0).values for k in want}
        key = next(iter(want))
        hint = "take the median of each coordinate over clients (stack along a new axis 0)"
        if num % 2 == 0 and key in got and torch.allclose(torch.as_tensor(got[key]).double(), lower[key].double()):
            hint = ("torch.median returns the lower of the two middle values; with an even number of "
                    "clients use the mean of both (torch.quantile(x, 0.5, dim=0) or numpy's median)")
        elif key in got and torch.allclose(torch.as_tensor(got[key]).double(),
                                           fedavg(frozen, weights)[key].double(), atol=1e-6):
            hint = "that is FedAvg's weighted mean: the median ignores the row counts"
        _compare(got, want, hint)
        for s, f in zip(states, frozen, strict=True):
            expect(all(torch.equal(s[k], f[k]) for k in f), "do not modify the clients' state dicts in place")


@exercise("Exercise 11.2: norm clipping")
def check_norm_clipping(learner_fn: Callable[[StateDict, list[StateDict], list[float], float], StateDict],
                        seed: int = 1122) -> None:
    """``learner_fn(global_state, states, weights, max_norm)`` must clip each client's update, then FedAvg.

    A client's update is ``state - global_state`` over all tensors together; if its L2 norm exceeds
    ``max_norm`` it is scaled down to exactly ``max_norm`` (direction kept), otherwise left alone;
    the clipped weights ``global_state + clipped update`` are averaged weighted by ``weights``.
    Checked on fresh weights against :func:`fedad_tutorial.chapters.robust.norm_clipping_aggregator`
    (within 1e-5), with a bound below and above the honest clients' update norms.
    """
    rng = np.random.default_rng(seed)
    for num in (4, 6):
        glob, states = _fresh_round(num, int(rng.integers(10**6)))
        norms = sorted(update_norm(s, glob) for s in states)
        weights = [float(w) for w in rng.integers(20, 900, size=num)]
        for max_norm in (0.5 * norms[0], 1.1 * norms[-2]):
            frozen = [_copy(s) for s in states]
            got = learner_fn(_copy(glob), [_copy(s) for s in states], list(weights), float(max_norm))
            want = norm_clipping_aggregator(max_norm)(glob, frozen, weights, 1)
            expect_state_dict(got, want)
            hint = ("clip the update (state - global) by its norm over ALL tensors of the client together, "
                    "scale it by min(1, max_norm / norm), add it back to the global weights, then take "
                    "the weighted average (weights are row counts)")
            key = next(iter(want))
            if key in got and torch.allclose(torch.as_tensor(got[key]).double(),
                                             fedavg(frozen, weights)[key].double(), atol=1e-6):
                hint = "no client was clipped: compare each update's norm with max_norm"
            _compare(got, want, hint)


@exercise("Exercise 11.3: a model-poisoning client")
def check_scaled_attack(learner_fn: Callable[[int, float], Callable], seed: int = 1133) -> None:
    """``learner_fn(client, factor)`` must return an update hook ``hook(i, state, global_state, round)``.

    The hook returns ``global + factor * (state - global)`` for client ``client`` and the state
    unchanged for every other client. Checked on fresh weights against
    :func:`fedad_tutorial.chapters.robust.scaled_update_attack` for a boosting and a sign-flipping factor.
    """
    rng = np.random.default_rng(seed)
    glob, states = _fresh_round(4, int(rng.integers(10**6)))
    for client, factor in ((2, 10.0), (0, -3.0)):
        hook = learner_fn(client, factor)
        expect(callable(hook), "return a function (the hook), not its result")
        want_hook = scaled_update_attack(client, factor)
        for i, state in enumerate(states):
            got = hook(i, _copy(state), _copy(glob), 3)
            want = want_hook(i, _copy(state), glob, 3)
            hint = ("the attacker sends global + factor * (its weights - global)" if i == client
                    else f"client {i} is honest: return its weights unchanged")
            _compare(got, want, hint)
