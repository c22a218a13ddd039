"""Client-level differential privacy for FedAvg (DP-FedAvg): one implementation for chapter 10,
``fedad simulate``/``run`` (``--dp-clip``, ``--dp-noise-multiplier``) and a Flower deployment.

DP-FedAvg (McMahan et al., 2018) makes each round's release differentially private with respect to
one whole client, in the server's aggregation step:

1. clip each client's update ``state - global`` to L2 norm at most ``C`` (:func:`clip_update`);
2. average the clipped updates with a fixed denominator ``n``, the number of clients sampled per
   round, not weighted by row counts (a large client would otherwise count for more than ``C``);
3. add Gaussian noise of standard deviation ``sigma * C / n`` to every coordinate (:func:`noise_std`),
   drawn from a generator seeded by ``(seed, round)`` only (:func:`round_generator`).

:func:`dp_fedavg_aggregator` is that rule as an :data:`~fedad_tutorial.federated.Aggregator`;
:func:`~fedad_tutorial.federated.federated_rounds` uses it whenever the configuration asks for it
(:func:`config_aggregator`), in one process and in the Flower ServerApp alike, so the same seed gives
the same numbers in chapter 10, ``fedad simulate`` and a deployment. In a deployment each client
also clips its own update before sending it (Flower's ``fixedclipping_mod`` in the ClientApp), so the
server only ever receives clipped updates; the server clips again, which changes nothing for a client
that clipped (beyond float rounding) and bounds one that did not.

:func:`epsilon` turns ``(sigma, q, rounds, delta)`` into the ``epsilon`` of the run's client-level
``(epsilon, delta)`` guarantee with Opacus's Rényi-DP accountant; :func:`privacy_summary` is what a
run folder and the command line report.

Which of Flower's (1.41) differential-privacy building blocks are used, and why:

- **clipping**: ``flwr.supercore.differential_privacy.compute_clip_model_update`` (where Flower 1.41
  keeps what older releases exported as ``flwr.common.differential_privacy``). The server's
  aggregator clips with it, and a deployed client clips with ``fixedclipping_mod``, which calls the
  same function: the same arithmetic on both sides;
- **the noise's scale**: ``compute_stdv``, the same ``sigma * C / n``;
- **not the noise itself**: ``add_gaussian_noise_inplace`` (and the strategy wrappers built on it)
  draws from NumPy's global, unseeded generator (``np.random.normal``), so a run could not be
  repeated, a resumed server would not draw the noise it would have drawn, and a Flower run could
  not equal its ``simulate`` run. The noise here comes from a PyTorch generator seeded by
  ``(seed, round)``;
- **not the strategy wrappers** (``DifferentialPrivacyClientSideFixedClipping`` and its
  server-side sibling): they wrap a Flower ``Strategy``, and our ServerApp runs the package's own
  round loop through a transport; their two jobs (tell the clients the clipping norm, clip and
  noise the aggregate) are the ClientApp's clipping mod and this aggregator;
- **not Flower's accountant**: Flower 1.41's ``RdpAccountant`` needs Google's ``dp-accounting``
  package and, with fixed clipping, only accounts without amplification by sampling; Opacus's RDP
  accountant (the course's since chapter 10) accounts for sampling a share ``q`` of the clients.

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

from fedad_tutorial.config import FederatedConfig
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import Aggregator, sample_clients

StateDict = dict[str, torch.Tensor]


def noise_std(clip: float, noise_multiplier: float, num_clients: int) -> float:
    """The standard deviation of the Gaussian noise DP-FedAvg adds to each averaged coordinate:
    ``noise_multiplier * clip / num_clients`` (Flower's ``compute_stdv``)."""
    from flwr.supercore.differential_privacy import compute_stdv  # imported here: flwr takes a moment to import

    return compute_stdv(noise_multiplier, clip, num_clients)


def round_generator(seed: int, round_idx: int) -> torch.Generator:
    """The server's noise generator for one round: depends only on ``(seed, round_idx)``."""
    state = np.random.SeedSequence([int(seed), int(round_idx), 1010]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def clip_update(state: StateDict, global_state: StateDict, clip: float) -> StateDict:
    """``global + delta * min(1, clip / ||delta||)`` with ``delta = state - global`` over all tensors
    together: the same weights if the update is small enough, else the update shrunk to norm ``clip``.

    Flower's ``compute_clip_model_update`` on the weights as NumPy arrays (the arithmetic of
    ``fixedclipping_mod``, in the weights' own dtype). An update of norm 0 is returned as it is
    (Flower's helper would divide by its norm)."""
    from flwr.supercore.differential_privacy import compute_clip_model_update

    new = [state[k].detach().cpu().numpy().copy() for k in global_state]
    old = [t.detach().cpu().numpy() for t in global_state.values()]
    if all(np.array_equal(a, b) for a, b in zip(new, old, strict=True)):
        return {k: state[k].clone() for k in global_state}
    compute_clip_model_update(new, old, clip)
    return {k: torch.from_numpy(np.asarray(a)).to(state[k].dtype) for k, a in zip(global_state, new, strict=True)}


def dp_fedavg_aggregator(clip: float, noise_multiplier: float, seed: int,
                         num_clients: int | None = None) -> Aggregator:
    """DP-FedAvg as an :data:`~fedad_tutorial.federated.Aggregator`.

    Args:
        clip: ``C``, the largest L2 norm a client's update may have (larger ones are scaled down).
        noise_multiplier: ``sigma``; the noise added to the average has standard deviation
            ``sigma * C / n`` per coordinate (:func:`noise_std`). 0 gives clipping alone.
        seed: seeds the noise; each round draws from :func:`round_generator` ``(seed, round)``,
            so a run is reproducible whatever happened in earlier runs (or before a restart).
        num_clients: ``n``, the fixed denominator of the average (the number of clients sampled per
            round). ``None`` uses the number of updates received in the round, which is that number
            unless a deployed client stopped answering.

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


def clients_per_round(config: FederatedConfig, num_clients: int) -> int:
    """``n``: how many of ``num_clients`` clients train in each round (``sample_clients``'s count)."""
    return len(sample_clients(num_clients, config.fraction, config.seed, 1))


def config_aggregator(config: FederatedConfig, num_clients: int) -> Aggregator:
    """The aggregator ``config`` asks for (``dp_clip > 0``) over a federation of ``num_clients``:
    :func:`dp_fedavg_aggregator` with ``config``'s clip, noise multiplier and seed, and the number of
    clients sampled per round as the fixed denominator."""
    if not config.private:
        raise UserError("the configuration asks for no DP-FedAvg (dp_clip is 0)")
    return dp_fedavg_aggregator(config.dp_clip, config.dp_noise_multiplier, config.seed,
                                num_clients=clients_per_round(config, num_clients))


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
    mechanism, one step per round, noise multiplier ``sigma``, sampling rate ``q`` = the share of
    clients sampled per round, its default orders), via :func:`epsilon_curve`. ``inf`` without noise.
    The accountant assumes each client joins a round independently with probability ``q`` (Poisson
    sampling); the rounds sample exactly ``q * K`` clients, the usual approximation.
    """
    return epsilon_curve(noise_multiplier, sample_rate, [rounds], delta)[0]


def privacy_summary(config: FederatedConfig, num_clients: int) -> dict | None:
    """What a run reports about its privacy (``summary.json``'s ``privacy``, TensorBoard's
    ``privacy/epsilon``, the command line's last line), ``None`` without DP-FedAvg.

    ``epsilon_per_round[r - 1]`` is the guarantee of the models released up to round ``r`` (``inf``
    without noise); ``epsilon`` is the final one. The sample rate is ``n / K``: ``n``
    (:func:`clients_per_round`) of the ``K = num_clients`` clients train each round."""
    if not config.private:
        return None
    n = clients_per_round(config, num_clients)
    rate = n / num_clients
    curve = epsilon_curve(config.dp_noise_multiplier, rate, range(1, config.rounds + 1), config.dp_delta)
    return {"mechanism": "DP-FedAvg, client-level (clip each update, unweighted mean, Gaussian noise)",
            "clip": config.dp_clip, "noise_multiplier": config.dp_noise_multiplier,
            "noise_std": noise_std(config.dp_clip, config.dp_noise_multiplier, n),
            "clients_per_round": n, "clients": num_clients, "sample_rate": rate, "rounds": config.rounds,
            "delta": config.dp_delta, "epsilon": curve[-1], "epsilon_per_round": curve,
            "accountant": "Opacus RDP (subsampled Gaussian, one step per round)"}


def describe(privacy: dict) -> str:
    """The command line's last line about a DP-FedAvg run (``privacy``: :func:`privacy_summary`'s, or
    ``summary.json``'s, where an infinite epsilon is ``null``)."""
    eps = privacy["epsilon"]
    setting = (f"clip {privacy['clip']:g}, noise multiplier {privacy['noise_multiplier']:g}, "
               f"{privacy['clients_per_round']} of {privacy['clients']} clients per round, {privacy['rounds']} rounds")
    if eps is None or math.isinf(eps):
        return f"Differential privacy: DP-FedAvg without noise ({setting}): no guarantee (epsilon infinite)"
    line = (f"Differential privacy: epsilon {eps:.3g} at delta {privacy['delta']:g}, client-level "
            f"(DP-FedAvg: {setting}; Opacus RDP accountant)")
    if privacy["delta"] * privacy["clients"] >= 1:  # a mechanism publishing one client's whole data meets it
        line += (f"; warning: delta is not below 1 / {privacy['clients']} clients, so this guarantee allows one "
                 f"client's contribution to be revealed outright (lower --dp-delta)")
    return line
