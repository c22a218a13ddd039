"""Client-level differential privacy for FedAvg (DP-FedAvg) and its privacy accounting (notebook 10).

FedAvg keeps rows on the clients, but the weights a client sends still depend on its rows, and a
curious server (or anyone who sees the final model) can learn from them. *Client-level*
differential privacy bounds how much the released models can change when one whole client joins
or leaves the federation. DP-FedAvg (McMahan et al., 2018, "Learning differentially private
recurrent language models") does it in the server's aggregation step:

1. clip each client's update ``state - global`` to L2 norm at most ``C`` (one client's influence
   on the sum is then at most ``C``);
2. average the clipped updates with a **fixed** denominator ``n`` (the expected number of clients
   per round), not weighted by row counts;
3. add Gaussian noise with standard deviation ``sigma * C / n`` to every coordinate.

``sigma`` (the noise multiplier) and the share of clients sampled per round ``q`` fix the privacy
loss per round; :func:`epsilon` composes it over rounds with Opacus's Rényi-DP accountant and
returns the ``epsilon`` of an ``(epsilon, delta)`` guarantee. The accountant assumes each client
takes part in a round independently with probability ``q`` (Poisson sampling);
:func:`~fedad_tutorial.federated.run_federated` samples exactly ``round(q * K)`` clients, the usual
approximation in simulations.

>>> g = {"w": torch.zeros(2)}
>>> aggregate = dp_fedavg_aggregator(clip=1.0, noise_multiplier=0.0, seed=0)
>>> aggregate(g, [{"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.1, 0.0])}], [10, 500], 1)["w"]
tensor([0.3500, 0.4000])
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from fedad_tutorial.chapters.robust import clip_update
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import Aggregator

StateDict = dict[str, torch.Tensor]


def noise_std(clip: float, noise_multiplier: float, num_clients: int) -> float:
    """The standard deviation of the Gaussian noise DP-FedAvg adds to each averaged coordinate:
    ``noise_multiplier * clip / num_clients``."""
    return noise_multiplier * clip / num_clients


def round_generator(seed: int, round_idx: int) -> torch.Generator:
    """The server's noise generator for one round: depends only on ``(seed, round_idx)``."""
    state = np.random.SeedSequence([int(seed), int(round_idx), 1010]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def dp_fedavg_aggregator(clip: float, noise_multiplier: float, seed: int,
                         num_clients: int | None = None) -> Aggregator:
    """DP-FedAvg as an :data:`~fedad_tutorial.federated.Aggregator`.

    Args:
        clip: ``C``, the largest L2 norm a client's update may have (larger ones are scaled down).
        noise_multiplier: ``sigma``; the noise added to the average has standard deviation
            ``sigma * C / n`` per coordinate (:func:`noise_std`). 0 gives clipping alone.
        seed: seeds the noise; each round draws from :func:`round_generator` ``(seed, round)``,
            so a run is reproducible whatever happened in earlier runs.
        num_clients: ``n``, the fixed denominator of the average (the expected number of clients
            per round, ``q * K``). ``None`` uses the number of updates received in the round,
            which is fixed under :func:`~fedad_tutorial.federated.run_federated`'s sampling.

    Returns:
        ``aggregate(global_state, states, weights, round) = global + sum_k clip(update_k) / n + noise``.
        Row counts (``weights``) are ignored: weighting by them would let a large client count for
        more than ``C``.
    """
    if not clip > 0:
        raise UserError(f"clip must be positive, got {clip}")
    if noise_multiplier < 0:
        raise UserError(f"noise_multiplier must be non-negative, got {noise_multiplier}")
    if num_clients is not None and num_clients < 1:
        raise UserError(f"num_clients must be at least 1, got {num_clients}")

    def dp_fedavg(global_state: StateDict, states: list[StateDict], weights: list[float],
                  round_idx: int) -> StateDict:
        if not states:
            raise UserError("aggregation needs at least one client update")
        n = num_clients if num_clients is not None else len(states)
        std = noise_std(clip, noise_multiplier, n)
        gen = round_generator(seed, round_idx)
        clipped = [clip_update(s, global_state, clip) for s in states]
        out = {}
        for key, start in global_state.items():
            total = sum(c[key].double() - start.double() for c in clipped)
            noise = torch.randn(start.shape, generator=gen, dtype=torch.float64) * std
            out[key] = (start.double() + total / n + noise).to(start.dtype)
        return out

    return dp_fedavg


@functools.lru_cache(maxsize=256)
def _rdp_one_round(noise_multiplier: float, sample_rate: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The accountant's Rényi orders and the RDP of one round at each (computed once per setting)."""
    from opacus.accountants import RDPAccountant  # imported here: opacus takes seconds to import
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = list(RDPAccountant.DEFAULT_ALPHAS)
    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=orders)
    return tuple(orders), tuple(float(v) for v in rdp)


def epsilon_curve(noise_multiplier: float, sample_rate: float, rounds: Sequence[int], delta: float) -> list[float]:
    """:func:`epsilon` after each number of rounds in ``rounds``, at the cost of one accounting.

    The Rényi-DP of ``r`` identical rounds is ``r`` times that of one round (composition), so
    the one-round RDP is computed once (cached per ``(noise_multiplier, sample_rate)``) and
    converted to ``epsilon`` for each ``r`` with Opacus's ``get_privacy_spent``: the same orders
    and formulas as ``opacus.accountants.RDPAccountant``, equal to it (``tests/test_privacy.py``).
    """
    if noise_multiplier < 0:
        raise UserError(f"noise_multiplier must be non-negative, got {noise_multiplier}")
    if not 0.0 < sample_rate <= 1.0:
        raise UserError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if any(int(r) < 1 for r in rounds):
        raise UserError(f"rounds must be at least 1, got {list(rounds)}")
    if not 0.0 < delta < 1.0:
        raise UserError(f"delta must be in (0, 1), got {delta}")
    if noise_multiplier == 0:
        return [math.inf] * len(rounds)
    from opacus.accountants.analysis.rdp import get_privacy_spent

    orders, rdp = _rdp_one_round(float(noise_multiplier), float(sample_rate))
    with warnings.catch_warnings():  # "optimal order is the smallest alpha": only for huge epsilons
        warnings.simplefilter("ignore", UserWarning)
        return [float(get_privacy_spent(orders=list(orders), rdp=[v * int(r) for v in rdp], delta=delta)[0])
                for r in rounds]


def epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The ``epsilon`` of DP-FedAvg's ``(epsilon, delta)`` client-level guarantee after ``rounds``.

    Opacus's Rényi-DP accounting (``opacus.accountants.RDPAccountant``: the subsampled Gaussian
    mechanism, one step per round, noise multiplier ``sigma``, sampling rate ``q`` = the client
    fraction, its default orders), via :func:`epsilon_curve`. ``inf`` without noise.
    """
    return epsilon_curve(noise_multiplier, sample_rate, [rounds], delta)[0]
