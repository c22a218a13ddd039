"""Exercises of notebook 04 (federated averaging): the server's three small jobs.

- Exercise 4.1: FedAvg, the weighted average of clients' ``state_dict`` s.
- Exercise 4.2: client sampling, which clients train in a round.
- Exercise 4.3: a global scaler from clients' summary statistics (no raw rows shared).

Every check runs the learner's function on fresh inputs (new random weights, sizes and seeds) and
compares its behaviour with :mod:`fedad_tutorial.federated` and :mod:`fedad_tutorial.scaling`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fedad_tutorial.exercises.checking import Mismatch, exercise, expect, expect_state_dict
from fedad_tutorial.federated import fedavg
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler

StateDict = dict[str, torch.Tensor]


def _random_states(num: int, seed: int) -> list[StateDict]:
    """``num`` state dicts of the same small autoencoder with different random weights."""
    states = []
    for k in range(num):
        torch.manual_seed(seed + k)
        states.append({name: t.clone() for name, t in ModelSpec("ae", 7, (6,), 3).build().state_dict().items()})
    return states


@exercise("Exercise 4.1: FedAvg")
def check_fedavg(learner_fn: Callable[[Sequence[StateDict], Sequence[float]], StateDict],
                 seed: int = 404) -> None:
    """``learner_fn(states, weights)`` must return the ``weights``-weighted average of ``states``.

    Checked on fresh random state dicts with uneven weights (row counts), against
    :func:`fedad_tutorial.federated.fedavg`: same keys, same shapes, values within 1e-5 (in any
    floating-point type: float64 tensors pass); the weights need not sum to one (they are row
    counts); one client gives its own weights back.
    """
    rng = np.random.default_rng(seed)
    for num in (3, 5):
        states = _random_states(num, int(rng.integers(10**6)))
        weights = [int(w) for w in rng.integers(20, 900, size=num)]
        frozen = [{k: t.clone() for k, t in s.items()} for s in states]
        got = learner_fn(states, list(weights))
        want = fedavg(frozen, weights)
        got_tensors = expect_state_dict(got, want)
        for key, value in want.items():
            mine = got_tensors[key]
            plain = sum(s[key] for s in frozen) / num
            if not torch.allclose(mine.double(), value.double(), atol=1e-5):
                hint = ("you took the plain mean; weight each client by its row count"
                        if torch.allclose(mine.double(), plain.double(), atol=1e-5)
                        else "divide by the sum of the weights (they are row counts, not fractions)")
                gap = float((mine.double() - value.double()).abs().max())
                expect(False, f"{key} differs from the weighted average by up to {gap:.2e}: {hint}")
        for s, f in zip(states, frozen, strict=True):
            expect(all(torch.equal(s[k], f[k]) for k in f), "do not modify the clients' state dicts in place")
    single = _random_states(1, seed + 7)[0]
    got_tensors = expect_state_dict(learner_fn([{k: t.clone() for k, t in single.items()}], [123]), single)
    expect(all(torch.allclose(got_tensors[k].double(), v.double(), atol=1e-6) for k, v in single.items()),
           "with a single client, FedAvg must return that client's weights")


@exercise("Exercise 4.2: client sampling")
def check_sample_clients(learner_fn: Callable[[int, float, int, int], Sequence[int]],
                         seed: int = 17) -> None:
    """``learner_fn(num_clients, fraction, seed, round_idx)`` must return the clients of a round.

    Checked on fresh settings: ``max(1, round(fraction * num_clients))`` distinct indices in
    ``range(num_clients)``, sorted; the same arguments give the same clients (reproducible); and
    over many rounds, different clients get picked (it is random, not always the first ones). It
    need not pick the same clients as :func:`fedad_tutorial.federated.sample_clients`.
    """
    rng = np.random.default_rng(seed)
    for num, fraction in ((10, 0.3), (7, 0.5), (6, 0.2), (5, 0.01), (4, 1.0), (12, 0.75)):
        s = int(rng.integers(10**6))
        want = max(1, int(round(fraction * num)))
        picks = []
        for rnd in range(1, 21):
            got = [int(i) for i in learner_fn(num, fraction, s, rnd)]
            expect(len(got) == want,
                   f"{num} clients, fraction {fraction}: expected max(1, round({fraction} * {num})) = {want} "
                   f"clients, got {len(got)}")
            expect(len(set(got)) == len(got), f"a client was picked twice: {got} (sample without replacement)")
            expect(all(0 <= i < num for i in got), f"indices must lie in range({num}), got {got}")
            expect(got == sorted(got), f"return the indices sorted, got {got}")
            again = [int(i) for i in learner_fn(num, fraction, s, rnd)]
            expect(again == got, "the same (seed, round) must give the same clients: seed your generator "
                                 "with both, e.g. np.random.default_rng([seed, round_idx])")
            picks.append(tuple(got))
        if want < num:
            expect(len(set(picks)) > 1, "every round picked the same clients: the choice must depend on the round")
            expect(len({i for p in picks for i in p}) >= min(num, 2 * want),
                   "over 20 rounds only a few clients were ever picked: pick at random among all of them")


def _mean_and_std(answer: object) -> tuple[np.ndarray, np.ndarray]:
    """The learner's ``(mean, std)`` as two float arrays, or a :class:`Mismatch` saying what came back instead.

    Unpacking is the check's job, not the learner's: a plausible answer of another shape (a
    ``Scaler``, one array, three values) must get a hint, not a Python error blamed on the learner.
    """
    if isinstance(answer, Scaler):
        expect(False, f"return the tuple (mean, std), got a {type(answer).__name__}: return (scaler.mean, "
                      "scaler.std), or better, compute them from the statistics yourself")
    expect(isinstance(answer, (tuple, list)) and len(answer) == 2,
           f"return a tuple (mean, std) of two per-feature arrays, got {_describe(answer)}")
    try:
        mean, std = (np.asarray(v, dtype=np.float64) for v in answer)
    except (TypeError, ValueError) as exc:
        raise Mismatch(f"mean and std should be arrays of numbers ({exc})") from None
    return mean, std


def _describe(answer: object) -> str:
    """A short description of a returned value for a hint: its type, and its length if it has one."""
    if isinstance(answer, (tuple, list)):
        return f"a {type(answer).__name__} of {len(answer)} values"
    return f"a {type(answer).__name__}"


@exercise("Exercise 4.3: a scaler from client statistics")
def check_aggregate_scaler(learner_fn: Callable[[Sequence[FeatureStats]], tuple[np.ndarray, np.ndarray]],
                           seed: int = 33) -> None:
    """``learner_fn(client_stats)`` must return the global ``(mean, std)`` from clients' statistics.

    Each :class:`~fedad_tutorial.scaling.FeatureStats` holds ``count``, ``total`` (sum of rows)
    and ``total_sq`` (sum of squared rows). Checked on fresh clients of different sizes and
    locations against :func:`fedad_tutorial.scaling.federated_scaler` (which equals a scaler fitted
    on the pooled rows): same mean and (population) standard deviation, relative error below 1e-4.
    """
    rng = np.random.default_rng(seed)
    for num in (2, 4):
        parts = [rng.normal(loc=rng.uniform(-5, 50, 6), scale=rng.uniform(0.5, 8, 6),
                            size=(int(rng.integers(30, 400)), 6)) for _ in range(num)]
        stats = [FeatureStats.of(p) for p in parts]
        mean, std = _mean_and_std(learner_fn(stats))
        want = federated_scaler(stats)
        expect(mean.shape == (6,) and std.shape == (6,),
               f"return one mean and one std per feature: shapes (6,), got {mean.shape} and {std.shape}")
        pooled_naive = np.mean([s.total / s.count for s in stats], axis=0)
        if not np.allclose(mean, want.mean, rtol=1e-4):
            hint = ("you averaged the clients' means: weight them by their row counts "
                    "(sum the totals, divide by the sum of counts)" if np.allclose(mean, pooled_naive, rtol=1e-4)
                    else "the mean is sum of totals / sum of counts")
            expect(False, f"mean differs from the pooled mean: {hint}")
        expect(np.allclose(std, want.std, rtol=1e-4),
               "std differs from the pooled (population) std: var = sum(total_sq)/N - mean**2, std = sqrt(var)")
